# Copyright (c) 2026, multimodel.orchestration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit tests of the host_port_check module: main() with module args, against real sockets of
this host (and a process named docker-proxy), and a Docker API served on a unix socket."""

import os
import re
import socket
import subprocess
import sys
import time

import pytest


from ansible_collections.multimodel.orchestration.plugins.modules import host_port_check
from support.modules import run_main
from support.fake_docker import FakeDockerEngine


def run_module(capsys, args):
    """Run main() with args; return (exit code, parsed JSON)."""
    return run_main(capsys, host_port_check.main, args)[:2]


def free_port(address='127.0.0.1', kind=socket.SOCK_STREAM):
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind((address, 0))
        return probe.getsockname()[1]


@pytest.fixture
def listener():
    """listener(address, port, kind) binds (and for TCP listens) a socket in this process."""
    opened = []

    def listen(address='127.0.0.1', port=0, kind=socket.SOCK_STREAM, family=socket.AF_INET):
        sock = socket.socket(family, kind)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        if kind == socket.SOCK_STREAM:
            sock.listen()
        opened.append(sock)
        return sock.getsockname()[1]

    yield listen
    for sock in opened:
        sock.close()


@pytest.fixture
def engine(tmp_path):
    """A Docker API on a unix socket (support/fake_docker.py): set engine.containers (the
    engine's own JSON shape) and engine.status."""
    server = FakeDockerEngine(str(tmp_path / 'docker.sock'))
    yield server
    server.close()


def container(name, *bindings):
    """An entry of the engine's GET /containers/json, publishing (address, port[, proto])."""
    return {'Id': name * 4, 'Names': ['/' + name], 'State': 'running', 'Ports': [
        {'IP': binding[0], 'PrivatePort': 80, 'PublicPort': binding[1], 'Type': (binding + ('tcp',))[2]}
        for binding in bindings] + [{'PrivatePort': 9999, 'Type': 'tcp'}]}


@pytest.fixture
def docker_proxy(tmp_path):
    """docker_proxy(port) starts a real process named docker-proxy listening on 127.0.0.1:port."""
    started = []
    link = tmp_path / 'docker-proxy'
    os.symlink(sys.executable, link)

    def start(port):
        code = ('import socket, sys, time\n'
                's = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n'
                's.bind(("127.0.0.1", %d)); s.listen(); print("ready", flush=True); time.sleep(60)\n' % port)
        process = subprocess.Popen([str(link), '-c', code], stdout=subprocess.PIPE, text=True)
        started.append(process)
        assert process.stdout.readline().strip() == 'ready'
        return process

    yield start
    for process in started:
        process.kill()
        process.wait()


def test_parse_spec():
    parse = host_port_check.parse_spec
    assert parse('8080:80') == [('', 8080, 'tcp')]
    assert parse('127.0.0.1:16379:6379') == [('127.0.0.1', 16379, 'tcp')]
    assert parse('[::1]:443:8443/udp') == [('::1', 443, 'udp')]
    assert parse('0.0.0.0:8000-8002:9000-9002') == [('0.0.0.0', 8000, 'tcp'), ('0.0.0.0', 8001, 'tcp'),
                                                    ('0.0.0.0', 8002, 'tcp')]
    assert parse('9000-9001:80') == [('', 9000, 'tcp'), ('', 9001, 'tcp')]
    for bad, why in (('80', 'is not [ADDRESS:]HOST_PORT'), ('localhost:80:80', 'is not [ADDRESS:]HOST_PORT'),
                     ('127.0.0.1::80', 'is not [ADDRESS:]HOST_PORT'), ('0:80', 'within 1-65535'),
                     ('70000:80', 'within 1-65535'), ('90-80:80', 'within 1-65535'),
                     ('999.1.1.1:80:80', 'is not an IP address'), ('80-82:80-81', 'ranges differ')):
        with pytest.raises(host_port_check.SpecError, match=re.escape(why)):
            parse(bad)


def test_overlaps():
    overlaps = host_port_check.overlaps
    assert overlaps('', '127.0.0.1') and overlaps('::1', '')
    assert overlaps('::', '127.0.0.1') and overlaps('10.0.0.1', '::')
    assert overlaps('0.0.0.0', '127.0.0.1') and overlaps('127.0.0.1', '0.0.0.0')
    assert not overlaps('0.0.0.0', '::1')
    assert overlaps('127.0.0.1', '127.0.0.1')
    assert not overlaps('127.0.0.1', '127.0.0.2')


def test_free_port_without_engine(capsys, tmp_path):
    port = free_port()
    code, result = run_module(capsys, {'container': 'svc', 'ports': ['127.0.0.1:%d:80' % port],
                                       'docker_socket': str(tmp_path / 'none.sock')})
    assert code == 0, result
    assert result['changed'] is False and result['engine'] is False
    assert result['bindings'] == [{'spec': '127.0.0.1:%d:80' % port, 'address': '127.0.0.1', 'port': port,
                                   'proto': 'tcp', 'owned': False, 'holders': []}]


def test_port_held_by_a_host_process(capsys, tmp_path, listener):
    port = listener('127.0.0.1')
    code, result = run_module(capsys, {'container': 'mmo-redis', 'ports': ['%d:6379' % port],
                                       'variable': 'redis_host_port', 'docker_socket': str(tmp_path / 'none.sock')})
    assert code == 1
    assert result['msg'].startswith(
        "container mmo-redis: host port %d/tcp on 0.0.0.0 (from '%d:6379') is held by process " % (port, port))
    assert '(pid %d: ' % os.getpid() in result['msg']
    assert 'listening on 127.0.0.1:%d/tcp' % port in result['msg']
    assert result['msg'].endswith('set redis_host_port to a free port, or stop what holds it.')


def test_other_address_does_not_count(capsys, tmp_path, listener):
    port = listener('127.0.0.2')
    code, result = run_module(capsys, {'container': 'svc', 'ports': ['127.0.0.1:%d:80' % port],
                                       'docker_socket': str(tmp_path / 'none.sock')})
    assert code == 0, result['msg']


def test_udp_port_held(capsys, tmp_path, listener):
    port = listener('127.0.0.1', kind=socket.SOCK_DGRAM)
    args = {'container': 'svc', 'docker_socket': str(tmp_path / 'none.sock')}
    code, result = run_module(capsys, dict(args, ports=['127.0.0.1:%d:53/udp' % port]))
    assert code == 1
    assert 'listening on 127.0.0.1:%d/udp' % port in result['msg']
    # The same port number over TCP is another port.
    code, result = run_module(capsys, dict(args, ports=['127.0.0.1:%d:53' % port]))
    assert code == 0, result['msg']


def test_ipv6_wildcard_holds_ipv4(capsys, tmp_path, listener):
    if not socket.has_ipv6:
        pytest.skip('no IPv6 on this host')
    try:
        port = listener('::', family=socket.AF_INET6)
    except OSError as error:
        pytest.skip('cannot listen on [::]: %s' % error)
    code, result = run_module(capsys, {'container': 'svc', 'ports': ['127.0.0.1:%d:80' % port],
                                       'docker_socket': str(tmp_path / 'none.sock')})
    assert code == 1
    assert 'listening on [::]:%d/tcp' % port in result['msg']


def test_port_published_by_another_container(capsys, engine):
    port = free_port()
    engine.containers = [container('mmo-caddy', ('0.0.0.0', port), ('::', port)), container('mmo-redis')]
    code, result = run_module(capsys, {'container': 'mmo-redis', 'ports': ['127.0.0.1:%d:6379' % port],
                                       'variable': 'redis_host_port', 'docker_socket': engine.path})
    assert code == 1
    assert result['engine'] is True
    assert result['msg'] == (
        "container mmo-redis: host port %d/tcp on 127.0.0.1 (from '127.0.0.1:%d:6379') is held by container "
        "mmo-caddy (publishes 0.0.0.0:%d/tcp, [::]:%d/tcp); "
        "set redis_host_port to a free port, or stop what holds it." % (port, port, port, port))


def test_port_of_the_container_itself_with_its_docker_proxy(capsys, engine, docker_proxy):
    port = free_port()
    docker_proxy(port)
    engine.containers = [container('mmo-redis-previous', ('127.0.0.1', port))]
    args = {'container': 'mmo-redis', 'ports': ['127.0.0.1:%d:6379' % port], 'docker_socket': engine.path}
    code, result = run_module(capsys, dict(args, owners=['mmo-redis-previous']))
    assert code == 0, result['msg']
    assert result['bindings'][0]['owned'] is True and result['bindings'][0]['holders'] == []
    # Without the owner, the container that publishes it is named, not its docker-proxy.
    code, result = run_module(capsys, args)
    assert code == 1
    assert 'is held by container mmo-redis-previous (publishes 127.0.0.1:%d/tcp);' % port in result['msg']
    assert 'docker-proxy' not in result['msg']


def test_docker_proxy_for_no_container(capsys, engine, docker_proxy):
    port = free_port()
    proxy = docker_proxy(port)
    code, result = run_module(capsys, {'container': 'svc', 'ports': ['%d:80' % port], 'docker_socket': engine.path})
    assert code == 1
    assert ('is held by docker-proxy (pid %d) listening on 127.0.0.1:%d/tcp for no running container'
            % (proxy.pid, port)) in result['msg']


def test_bad_spec_names_the_variable(capsys, tmp_path):
    code, result = run_module(capsys, {'container': 'svc', 'ports': ['8080'], 'variable': 'caddy_http_port',
                                       'docker_socket': str(tmp_path / 'none.sock')})
    assert code == 1
    assert result['msg'] == "container svc: caddy_http_port: '8080' is not [ADDRESS:]HOST_PORT:CONTAINER_PORT[/tcp|udp|sctp]"


def test_engine_error_is_reported(capsys, engine):
    engine.status = 500
    code, result = run_module(capsys, {'container': 'svc', 'ports': ['%d:80' % free_port()],
                                       'docker_socket': engine.path})
    assert code == 1
    assert "cannot list the Docker engine's containers: the Docker engine answered 500" in result['msg']


def test_engine_socket_nobody_answers(capsys, tmp_path):
    path = str(tmp_path / 'dead.sock')
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(path)
    dead.close()
    started = time.monotonic()
    code, result = run_module(capsys, {'container': 'svc', 'ports': ['%d:80' % free_port()], 'docker_socket': path})
    assert code == 0, result['msg']
    assert result['engine'] is False
    assert time.monotonic() - started < 5
