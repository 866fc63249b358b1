# Copyright (c) 2026, multimodel.orchestration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit tests of the service_status module: main() with module args against a Docker API on a
unix socket and fake llama-servers, and the row logic against systemctl's own output shapes
(systemd units are read for real in the app_tier Molecule scenario)."""

import json
import threading
import time

import pytest


from ansible_collections.multimodel.orchestration.plugins.modules import service_status
from support.modules import run_main
from support.fake_docker import FakeDockerEngine
from support.servers import QuietHandler, started, HTTPServer

LABEL = {'org.multimodel.managed-by': 'multimodel.orchestration'}


def run_module(capsys, args):
    """Run main() with args; return (exit code, parsed JSON)."""
    return run_main(capsys, service_status.main, args)[:2]


@pytest.fixture
def engine(tmp_path):
    server = FakeDockerEngine(str(tmp_path / 'docker.sock'))
    yield server
    server.close()


def entry(name, state='running', status='Up 2 minutes (healthy)', image='redis:7.4.2-alpine', labels=None, ports=None,
          networks=('mmo-internal',)):
    """An entry of the engine's GET /containers/json."""
    return {'Id': name * 3, 'Names': ['/' + name], 'Image': image, 'State': state, 'Status': status,
            'Labels': dict(LABEL, **(labels or {})) if labels is not False else {},
            'Ports': ports if ports is not None else [{'PrivatePort': 6379, 'Type': 'tcp'}],
            'NetworkSettings': {'Networks': {network: {} for network in networks}}}


def by_service(result):
    return {row['service']: row for row in result['services']}


def test_containers_are_read_with_their_health(capsys, engine):
    engine.containers = [
        entry('mmo-redis'),
        entry('mmo-caddy', image='caddy:2.11.4-alpine', ports=[
            {'IP': '0.0.0.0', 'PrivatePort': 8443, 'PublicPort': 443, 'Type': 'tcp'},
            {'IP': '::', 'PrivatePort': 8443, 'PublicPort': 443, 'Type': 'tcp'},
            {'IP': '0.0.0.0', 'PrivatePort': 8443, 'PublicPort': 443, 'Type': 'udp'}]),
        entry('mmo-backend-1', image='mmo-backend:3f2a', status='Up 4 seconds (health: starting)',
              labels={'org.opencontainers.image.version': '1.4.0'}),
        entry('mmo-grafana', status='Up 1 hour (unhealthy)', image='registry.local:5000/grafana/grafana-oss:11.6.1'),
        entry('mmo-searxng', state='exited', status='Exited (137) 3 minutes ago', image='mmo-searxng@sha256:' + 'a' * 64),
        entry('mmo-plain', status='Up 3 hours', ports=[]),
        entry('mmo-alone', status='Up 3 hours', ports=[], networks=()),
        entry('someone-elses', labels=False),
    ]
    code, result = run_module(capsys, {'containers': True, 'docker_socket': engine.path})
    assert code == 0 and result['changed'] is False
    rows = by_service(result)
    assert [row['service'] for row in result['services']] == sorted(rows)  # by name
    assert 'someone-elses' not in rows  # not the collection's
    assert rows['mmo-redis'] == {'service': 'mmo-redis', 'kind': 'container', 'address': 'mmo-internal mmo-redis:6379/tcp',
                                 'state': 'healthy', 'version': '7.4.2-alpine', 'healthy': True, 'detail': None}
    assert rows['mmo-caddy']['address'] == '0.0.0.0:443/tcp, 0.0.0.0:443/udp'
    assert rows['mmo-backend-1']['state'] == 'starting' and rows['mmo-backend-1']['healthy'] is False
    assert rows['mmo-backend-1']['version'] == '1.4.0'  # the image's version label wins over its tag
    assert rows['mmo-grafana']['state'] == 'unhealthy' and 'docker inspect mmo-grafana' in rows['mmo-grafana']['detail']
    assert rows['mmo-grafana']['version'] == '11.6.1'  # a registry's port is not a tag
    assert rows['mmo-searxng']['state'] == 'exited (137)' and rows['mmo-searxng']['healthy'] is False
    assert rows['mmo-searxng']['version'] == 'sha256:aaaaaaaaaaaa'
    assert rows['mmo-alone']['address'] == '-'
    assert rows['mmo-plain'] == {'service': 'mmo-plain', 'kind': 'container', 'address': 'mmo-internal', 'state': 'running',
                                 'version': '7.4.2-alpine', 'healthy': True, 'detail': None}
    assert result['healthy'] is False
    # Stopped containers are asked for too, and only the collection's.
    assert all('all=1' in path and 'filters=' in path for path in engine.requests)


def test_a_starting_container_is_waited_for(capsys, engine):
    engine.containers = [entry('mmo-backend-1', status='Up 1 second (health: starting)')]

    def becomes_healthy():
        time.sleep(1.0)
        engine.containers = [entry('mmo-backend-1')]

    threading.Thread(target=becomes_healthy, daemon=True).start()
    code, result = run_module(capsys, {'containers': True, 'docker_socket': engine.path, 'timeout': 20})
    assert code == 0 and result['healthy'] is True
    assert by_service(result)['mmo-backend-1']['state'] == 'healthy'
    assert len(engine.requests) >= 2


def test_an_unhealthy_container_is_reported_once_the_timeout_is_spent(capsys, engine):
    engine.containers = [entry('mmo-grafana', status='Up 1 hour (unhealthy)')]
    started_at = time.monotonic()
    code, result = run_module(capsys, {'containers': True, 'docker_socket': engine.path, 'timeout': 3})
    assert code == 0 and result['healthy'] is False
    assert time.monotonic() - started_at < 10


def test_no_engine_means_no_containers(capsys, tmp_path):
    code, result = run_module(capsys, {'containers': True, 'docker_socket': str(tmp_path / 'none.sock')})
    assert code == 0
    assert result['services'] == [] and result['healthy'] is True


def test_an_engine_error_fails_and_says_so(capsys, engine):
    engine.status = 500
    code, result = run_module(capsys, {'containers': True, 'docker_socket': engine.path})
    assert code == 1
    assert "cannot list the Docker engine's containers" in result['msg'] and '500' in result['msg']


def test_model_servers_are_probed_with_their_build(capsys, fake_llama_server, refused_url):
    good = fake_llama_server(alias='q2_fast_1', api_key='sekrit', build_info='b7123-abcdef0')
    code, result = run_module(capsys, {'llama_endpoints': [
        {'name': 'Q2_FAST_1', 'url': good.url, 'alias': 'q2_fast_1'},
        {'name': 'Q4_DEEP', 'url': refused_url, 'alias': 'q4_deep'},
    ], 'api_key': 'sekrit'})
    assert code == 0
    rows = by_service(result)
    assert rows['llama-server@Q2_FAST_1'] == {
        'service': 'llama-server@Q2_FAST_1', 'kind': 'model', 'address': good.url, 'state': 'ok',
        'version': 'b7123-abcdef0', 'healthy': True, 'detail': None}
    assert rows['llama-server@Q4_DEEP']['state'] == 'unreachable'
    assert rows['llama-server@Q4_DEEP']['detail'].startswith('refused')
    assert result['healthy'] is False
    assert 'sekrit' not in json.dumps(result)
    assert '/props' in good.paths()


def test_a_loading_model_is_waited_for(capsys, fake_llama_server):
    loading = fake_llama_server(alias='q3', loading_s=1.0)
    code, result = run_module(capsys, {'llama_endpoints': [{'name': 'Q3_SYNTH', 'url': loading.url, 'alias': 'q3'}],
                                       'timeout': 20})
    assert code == 0 and result['healthy'] is True


def test_a_server_without_a_build_still_counts_as_healthy(capsys, fake_llama_server):
    old = fake_llama_server(alias='q3', override={'/props': (404, {'error': 'not found'})})
    code, result = run_module(capsys, {'llama_endpoints': [{'name': 'Q3', 'url': old.url, 'alias': 'q3'}]})
    assert code == 0
    row = result['services'][0]
    assert row['healthy'] is True and row['version'] == '-'


@pytest.mark.parametrize('args, message', [
    ({'units': [{'name': 'not a unit'}]}, "'not a unit' is not a systemd unit name"),
    ({'units': [{'name': 'a.service', 'url': 'ftp://x/'}]}, "url 'ftp://x/' is not an http:// or https:// address"),
    ({'timeout': -1}, 'timeout must be 0 or more seconds, got -1'),
    ({'llama_endpoints': [{'name': 'Q', 'url': 'tcp://h:1'}]}, "llama_endpoints: endpoints[1] url 'tcp://h:1' must use"),
])
def test_bad_input_names_the_bad_value(capsys, args, message):
    code, result = run_module(capsys, args)
    assert code == 1
    assert message in result['msg']


# systemctl show --property=Id,LoadState,ActiveState,SubState,Result,Triggers, as systemd 252 prints it.
ACTIVE = {'Id': 'prometheus-node-exporter.service', 'LoadState': 'loaded', 'ActiveState': 'active',
          'SubState': 'running', 'Result': 'success', 'Triggers': ''}
NODE = {'name': 'prometheus-node-exporter.service', 'service': 'node_exporter', 'address': '172.17.0.1:9100'}
TIMER = {'name': 'mmo-backup.timer', 'service': 'backups'}
TIMER_SHOWN = {'Id': 'mmo-backup.timer', 'LoadState': 'loaded', 'ActiveState': 'active', 'SubState': 'waiting',
               'Result': 'success', 'Triggers': 'mmo-backup.service'}


def test_parse_show():
    assert service_status.parse_show('Id=a.service\nLoadState=loaded\nDescription=x = y\n\n') == {
        'Id': 'a.service', 'LoadState': 'loaded', 'Description': 'x = y'}


@pytest.mark.parametrize('unit, shown, service_result, answer, expected', [
    (NODE, ACTIVE, None, None, ('node_exporter', 'unit', 'active (running)', True)),
    (NODE, ACTIVE, None, (True, None, '1.5.0'), ('node_exporter', 'unit', 'active (running)', True)),
    (NODE, ACTIVE, None, (False, 'http://127.0.0.1:9100/metrics answered HTTP 500', None),
     ('node_exporter', 'unit', 'not answering', False)),
    (NODE, dict(ACTIVE, ActiveState='failed', SubState='failed', Result='exit-code'), None, None,
     ('node_exporter', 'unit', 'failed (failed)', False)),
    ({'name': 'docker.service'}, {'Id': 'docker.service', 'LoadState': 'not-found', 'ActiveState': 'inactive'}, None,
     None, ('docker', 'unit', 'not installed', False)),
    (TIMER, TIMER_SHOWN, {'Result': 'success', 'ExecMainStartTimestamp': 'Thu 2026-12-03 03:00:00 UTC'}, None,
     ('backups', 'timer', 'waiting, last run ok', True)),
    (TIMER, TIMER_SHOWN, {'Result': 'success', 'ExecMainStartTimestamp': ''}, None,
     ('backups', 'timer', 'waiting, not run yet', True)),
    (TIMER, TIMER_SHOWN, {'Result': 'exit-code', 'ExecMainStartTimestamp': 'Thu 2026-12-03 03:00:00 UTC'}, None,
     ('backups', 'timer', 'waiting, last run exit-code', False)),
    (TIMER, dict(TIMER_SHOWN, ActiveState='inactive', SubState='dead'), {'Result': 'success'}, None,
     ('backups', 'timer', 'dead, not run yet', False)),
])
def test_unit_rows(unit, shown, service_result, answer, expected):
    row = service_status.unit_row(unit, shown, service_result, answer)
    assert (row['service'], row['kind'], row['state'], row['healthy']) == expected
    assert row['address'] == unit.get('address', '-')
    assert (row['detail'] is None) == row['healthy']
    if answer and answer[0]:
        assert row['version'] == answer[2]


def test_the_failed_backup_says_where_to_look():
    row = service_status.unit_row(TIMER, TIMER_SHOWN, {'Result': 'exit-code', 'ExecMainStartTimestamp': 'x'})
    assert row['detail'] == 'the last run of mmo-backup.service ended with exit-code (journalctl -u mmo-backup.service)'


def test_read_unit_asks_for_the_timers_service():
    asked = []

    class Systemd:
        def show(self, name, properties=service_status._UNIT_PROPERTIES):
            asked.append((name, tuple(properties)))
            return TIMER_SHOWN if name == 'mmo-backup.timer' else {'Result': 'success', 'ExecMainStartTimestamp': 'x'}

    row = service_status.read_unit(Systemd(), TIMER, True)
    assert row['state'] == 'waiting, last run ok'
    assert asked == [('mmo-backup.timer', service_status._UNIT_PROPERTIES),
                     ('mmo-backup.service', ('Result', 'ExecMainStartTimestamp'))]


METRICS = ('# HELP node_exporter_build_info A metric with a constant 1 value.\n# TYPE node_exporter_build_info gauge\n'
           'node_exporter_build_info{branch="debian/sid",goarch="amd64",goos="linux",goversion="go1.19.8",'
           'revision="1.5.0-1+b6",tags="netgo osusergo static_build",version="1.5.0"} 1\n')


@pytest.fixture
def metrics_server():
    """A real HTTP server answering /metrics with METRICS and anything else with 500."""
    class Handler(QuietHandler):
        def do_GET(self):  # noqa: N802 (http.server naming)
            body = METRICS.encode() if self.path == '/metrics' else b'broken'
            self.send_response(200 if self.path == '/metrics' else 500)
            self.send_header('Content-Type', 'text/plain; version=0.0.4')
            self.send_header('Content-Length', str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    with started(HTTPServer) as start:
        yield start(Handler)


def test_fetch_reads_the_build_version(metrics_server, refused_url):
    assert service_status.fetch(metrics_server.url + '/metrics', True) == (True, None, '1.5.0')
    ok, detail, version = service_status.fetch(metrics_server.url + '/other', True)
    assert (ok, version) == (False, None) and detail.endswith('answered HTTP 500')
    ok, detail, version = service_status.fetch(refused_url + '/metrics', True)
    assert ok is False and 'refused' in detail.lower()


def test_build_version():
    assert service_status.build_version(METRICS) == '1.5.0'
    assert service_status.build_version('up 1\n') is None
    assert service_status.build_version('x_build_info{version=""} 1\n') is None
