#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) 2026, multimodel.orchestration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations


DOCUMENTATION = r"""
module: host_port_check

short_description: Check that the host ports a container will publish are free or already its own

version_added: 0.1.0

description:
  - For each published port of a container (C([ADDRESS:]HOST_PORT:CONTAINER_PORT[/PROTO]), as Docker takes them), looks for
    what holds that host port now, and fails naming it when it is not the container itself.
  - Looks in two places, because Docker publishes a port with a C(docker-proxy) listener, with firewall rules, or both.
    The Docker engine's running containers and their port bindings (read from the engine's API on its socket, when there
    is an engine), and the host's listening TCP sockets and bound UDP sockets (read from C(/proc/net)), each with the
    process that holds it.
  - A port bound by the container itself (O(container), or one of O(owners)) is fine, and so is the C(docker-proxy)
    listener of any container the engine reports, since that container is named instead.
  - Works without a Docker engine (a fresh host) by checking the host's sockets alone.
  - The module only reads; it never changes anything on the target, so RV(ignore:changed) is always V(false).
  - Requires nothing but the Python standard library on the target, and Linux.

author:
  - multimodel.orchestration contributors (@multimodel)

extends_documentation_fragment:
  - multimodel.orchestration.read_only

options:
  ports:
    description:
      - The container's published ports, C([ADDRESS:]HOST_PORT:CONTAINER_PORT[/PROTO]), with an IPv6 ADDRESS in
        brackets, a port range as C(FIRST-LAST), and PROTO one of V(tcp) (the default), V(udp) or V(sctp).
      - Without ADDRESS the port is published on every address of the host.
    type: list
    elements: str
    required: true
  container:
    description:
      - Name of the container the ports are for; ports it holds already are fine.
    type: str
    required: true
  owners:
    description:
      - Other container names that count as the container itself (for example the previous container a roll-out set aside).
    type: list
    elements: str
    default: []
  variable:
    description:
      - The variable the user sets to choose the ports, named in the failure message.
    type: str
    default: published ports
  docker_socket:
    description:
      - The Docker engine's API socket. When it does not exist, or nothing answers on it, only the host's sockets are
        checked.
    type: path
    default: /var/run/docker.sock
  proc:
    description:
      - Where the proc filesystem is mounted.
    type: path
    default: /proc

notes:
  - SCTP ports are checked against the engine's containers only (C(/proc/net) lists TCP and UDP).
  - Seeing which process holds a socket needs the rights to read other processes' file descriptors (root); without
    them the message says a socket holds the port without naming its process.
"""

EXAMPLES = r"""
- name: Check that the Redis host port is free or held by Redis itself
  multimodel.orchestration.host_port_check:
    container: mmo-redis
    owners: [mmo-redis-previous]
    ports: ["127.0.0.1:16379:6379"]
    variable: redis_host_port

- name: Check the ports of a web server, and read who holds each
  multimodel.orchestration.host_port_check:
    container: mmo-caddy
    ports: ["80:8080", "443:8443", "443:8443/udp"]
  register: caddy_ports
  failed_when: false
"""

RETURN = r"""
bindings:
  description: One entry per host port checked (a range gives one per port), in the order of O(ports).
  returned: always
  type: list
  elements: dict
  contains:
    spec:
      description: The O(ports) item it comes from.
      type: str
      sample: "127.0.0.1:16379:6379"
    address:
      description: The host address, V(0.0.0.0) for every address.
      type: str
      sample: "127.0.0.1"
    port:
      description: The host port.
      type: int
      sample: 16379
    proto:
      description: V(tcp), V(udp) or V(sctp).
      type: str
      sample: tcp
    owned:
      description: The container itself (or one of O(owners)) holds this port now.
      type: bool
      sample: false
    holders:
      description: What else holds the port, each in words; empty when the port is free or the container's own.
      type: list
      elements: str
      sample: ["container mmo-caddy (publishes 0.0.0.0:443/tcp)"]
engine:
  description: Whether the Docker engine answered, so that its containers were checked too.
  returned: always
  type: bool
  sample: true
"""

import ipaddress
import os
import re
import socket

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.multimodel.orchestration.plugins.module_utils import docker_api

SPEC_RE = re.compile(
    r'^(?:(?P<address>\d{1,3}(?:\.\d{1,3}){3}|\[[0-9A-Fa-f:.]+\]):)?'
    r'(?P<host>\d+(?:-\d+)?):(?P<container>\d+(?:-\d+)?)(?:/(?P<proto>tcp|udp|sctp))?$')

# /proc/net state column: a TCP socket that listens, a UDP socket that is bound (unconnected).
LISTENING = {'tcp': '0A', 'udp': '07'}


class SpecError(ValueError):
    """A published port that is not [ADDRESS:]HOST_PORT:CONTAINER_PORT[/PROTO]."""


def _port_range(text, spec):
    first, dummy, last = text.partition('-')
    first, last = int(first), int(last or first)
    if not 1 <= first <= last <= 65535:
        raise SpecError("'%s': port %s is not a port or range within 1-65535" % (spec, text))
    return list(range(first, last + 1))


def parse_spec(spec):
    """[(address, port, proto), ...] for one published port; address '' is every address."""
    match = SPEC_RE.match(spec.strip())
    if not match:
        raise SpecError("'%s' is not [ADDRESS:]HOST_PORT:CONTAINER_PORT[/tcp|udp|sctp]" % spec)
    address = (match.group('address') or '').strip('[]')
    if address:
        try:
            address = normal_address(address)
        except ValueError:
            raise SpecError("'%s': %s is not an IP address" % (spec, address)) from None
    host_ports = _port_range(match.group('host'), spec)
    container_ports = _port_range(match.group('container'), spec)
    if len(container_ports) not in (1, len(host_ports)):
        raise SpecError("'%s': the host and container port ranges differ in length" % spec)
    return [(address, port, match.group('proto') or 'tcp') for port in host_ports]


def normal_address(text):
    """An address as one string per address: IPv4-mapped IPv6 as IPv4, '' for none."""
    if text in ('', None):
        return ''
    address = ipaddress.ip_address(text)
    if address.version == 6 and address.ipv4_mapped:
        address = address.ipv4_mapped
    return str(address)


def overlaps(first, second):
    """Whether two bind addresses take the same port: equal, or one of them a wildcard that
    covers the other ('' and :: every address, as Linux binds :: dual-stack by default;
    0.0.0.0 every IPv4 address)."""
    if first in ('', '::') or second in ('', '::'):
        return True
    if first == second:
        return True
    for wildcard, other in ((first, second), (second, first)):
        if wildcard == '0.0.0.0' and ipaddress.ip_address(other).version == 4:
            return True
    return False


def _proc_net_address(text, family):
    """'0100007F:1F90' (or the IPv6 form) from /proc/net/* as (address, port)."""
    hex_address, hex_port = text.split(':')
    raw = bytes.fromhex(hex_address)
    # Each 32-bit word is in host byte order (little-endian on the hosts this runs on).
    raw = b''.join(raw[index:index + 4][::-1] for index in range(0, len(raw), 4))
    address = socket.inet_ntop(family, raw)
    return normal_address(address), int(hex_port, 16)


def host_sockets(proc):
    """The host's listening TCP and bound UDP sockets: [{address, port, proto, inode}]."""
    found = []
    for proto, family_name, family in (('tcp', 'tcp', socket.AF_INET), ('tcp', 'tcp6', socket.AF_INET6),
                                       ('udp', 'udp', socket.AF_INET), ('udp', 'udp6', socket.AF_INET6)):
        try:
            with open(os.path.join(proc, 'net', family_name)) as table:
                lines = table.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != LISTENING[proto]:
                continue
            address, port = _proc_net_address(fields[1], family)
            found.append({'address': address, 'port': port, 'proto': proto, 'inode': fields[9]})
    return found


def socket_owners(proc, inodes):
    """{inode: {pid, name, cmdline}} for the processes that hold these socket inodes."""
    wanted = {'socket:[%s]' % inode: inode for inode in inodes}
    owners = {}
    if not wanted:
        return owners
    for pid in os.listdir(proc):
        if not pid.isdigit():
            continue
        fd_dir = os.path.join(proc, pid, 'fd')
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(os.path.join(fd_dir, fd))
            except OSError:
                continue
            if target in wanted and wanted[target] not in owners:
                owners[wanted[target]] = _process(proc, pid)
    return owners


def _process(proc, pid):
    info = {'pid': int(pid), 'name': '?', 'cmdline': ''}
    try:
        with open(os.path.join(proc, pid, 'comm')) as comm:
            info['name'] = comm.read().strip()
        with open(os.path.join(proc, pid, 'cmdline'), 'rb') as cmdline:
            info['cmdline'] = cmdline.read().replace(b'\0', b' ').decode('utf-8', 'replace').strip()
    except OSError:
        pass
    return info


def engine_containers(docker_socket, timeout=10):
    """The engine's running containers as [{name, bindings: [(address, port, proto)]}], or
    None when there is no engine to ask."""
    found = docker_api.containers(docker_socket, timeout=timeout)
    if found is None:
        return None
    containers = []
    for entry in found:
        names = [name.lstrip('/') for name in entry.get('Names') or []]
        bindings = [(normal_address(port.get('IP')), int(port['PublicPort']), port.get('Type', 'tcp'))
                    for port in entry.get('Ports') or [] if port.get('PublicPort')]
        containers.append({'name': names[0] if names else entry.get('Id', '?')[:12], 'bindings': bindings})
    return containers


def _shown(address):
    if address in ('', None):
        return '0.0.0.0'
    return '[%s]' % address if ':' in address else address


def check(ports, container, owners, containers, sockets, processes):
    """One result per host port: {spec, address, port, proto, owned, holders}."""
    own_names = {container} | set(owners)
    results = []
    for spec in ports:
        for address, port, proto in parse_spec(spec):
            owned, holders = False, []
            claimed = []
            for other in containers or []:
                published = []
                for bound_address, bound_port, bound_proto in other['bindings']:
                    if bound_port != port or bound_proto != proto:
                        continue
                    claimed.append(bound_address)
                    if overlaps(address, bound_address):
                        published.append('%s:%s/%s' % (_shown(bound_address), port, proto))
                if published and other['name'] in own_names:
                    owned = True
                elif published:
                    holders.append('container %s (publishes %s)' % (other['name'], ', '.join(published)))
            for held in sockets:
                if held['port'] != port or held['proto'] != proto or not overlaps(address, held['address']):
                    continue
                process = processes.get(held['inode'])
                where = '%s:%s/%s' % (_shown(held['address']), port, proto)
                if process and process['name'] == 'docker-proxy':
                    # The listener of a published port: named by its container above.
                    if any(overlaps(held['address'], bound) for bound in claimed):
                        continue
                    holder = 'docker-proxy (pid %s) listening on %s for no running container' % (process['pid'], where)
                elif process:
                    holder = 'process %s (pid %s: %s) listening on %s' % (
                        process['name'], process['pid'], process['cmdline'][:120], where)
                else:
                    holder = 'a socket listening on %s (its process is not visible)' % where
                if holder not in holders:
                    holders.append(holder)
            results.append({'spec': spec, 'address': _shown(address), 'port': port, 'proto': proto,
                            'owned': owned, 'holders': holders})
    return results


def main():
    module = AnsibleModule(
        argument_spec=dict(
            ports=dict(type='list', elements='str', required=True),
            container=dict(type='str', required=True),
            owners=dict(type='list', elements='str', default=[]),
            variable=dict(type='str', default='published ports'),
            docker_socket=dict(type='path', default='/var/run/docker.sock'),
            proc=dict(type='path', default='/proc'),
        ),
        supports_check_mode=True,
    )
    params = module.params
    try:
        for spec in params['ports']:
            parse_spec(spec)
    except SpecError as error:
        module.fail_json(msg='container %s: %s: %s' % (params['container'], params['variable'], error),
                         bindings=[], engine=False)
    try:
        containers = engine_containers(params['docker_socket'])
    except docker_api.EngineError as error:
        module.fail_json(msg='container %s: cannot list the Docker engine\'s containers: %s' % (params['container'], error),
                         bindings=[], engine=False)
    sockets = host_sockets(params['proc'])
    processes = socket_owners(params['proc'], {held['inode'] for held in sockets})
    results = check(params['ports'], params['container'], params['owners'], containers, sockets, processes)
    taken = [result for result in results if result['holders']]
    if taken:
        module.fail_json(
            msg='container %s: %s; set %s to a free port, or stop what holds it.' % (
                params['container'],
                '; '.join("host port %s/%s on %s (from '%s') is held by %s" % (
                    result['port'], result['proto'], result['address'], result['spec'], ', '.join(result['holders']))
                    for result in taken),
                params['variable']),
            bindings=results, engine=containers is not None)
    module.exit_json(changed=False, bindings=results, engine=containers is not None)


if __name__ == '__main__':
    main()
