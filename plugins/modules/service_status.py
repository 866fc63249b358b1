#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) 2026, multimodel.orchestration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations


DOCUMENTATION = r"""
module: service_status

short_description: Read the state of the stack's services on a host, one row each

version_added: 0.1.0

description:
  - Reads, without changing anything, the state of what the collection runs on the target host, as one row per service
    (service, address, state, version, healthy), for P(multimodel.orchestration.status_table#filter) to print.
  - B(Containers) (O(containers=true)) are the Docker engine's containers with the label O(container_label), running or
    not, read from the engine's API on its socket. A container is healthy when it runs and its own health check (the
    service's health endpoint, as the container policy sets it) passes, or it has none.
  - B(Units) (O(units)) are systemd units. A service unit is healthy when it is active; a timer when it is active and
    the last run of the service it triggers succeeded (or it has not run yet). With a C(url), the service must also
    answer it with a 2xx status; the version is read from a Prometheus C(*_build_info) metric in the answer.
  - B(Model servers) (O(llama_endpoints)) are probed as M(multimodel.orchestration.model_health) probes them (C(/health),
    the served model), and report their llama.cpp build from C(/props).
  - With O(timeout), services that are not healthy yet (a container whose health check is still starting, a model
    still loading) are read again until they are, or until the timeout; the rows are those of the last reading.
  - The module fails only on bad input or an engine that answers with an error; an unhealthy service is reported in
    RV(services) and RV(healthy), for the play to decide.
  - Requires nothing but the Python standard library on the target, and C(systemctl) for O(units).

author:
  - multimodel.orchestration contributors (@multimodel)

extends_documentation_fragment:
  - multimodel.orchestration.read_only

options:
  containers:
    description:
      - Report the containers labelled O(container_label). Without a Docker engine on the host, none are reported.
    type: bool
    default: false
  container_label:
    description:
      - The label (C(KEY) or C(KEY=VALUE)) of the containers to report.
    type: str
    default: org.multimodel.managed-by=multimodel.orchestration
  docker_socket:
    description:
      - The Docker engine's API socket.
    type: path
    default: /var/run/docker.sock
  units:
    description:
      - systemd units to report (service or timer units).
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: The unit's full name, for example V(prometheus-node-exporter.service) or V(mmo-backup.timer).
        type: str
        required: true
      service:
        description: The name shown for it; the unit's name without its C(.service) suffix when not set.
        type: str
      address:
        description: Where it answers, as shown; V(-) when not set.
        type: str
      url:
        description: An HTTP(S) address it must answer with a 2xx status to be healthy (its health or metrics endpoint).
        type: str
  llama_endpoints:
    description:
      - llama.cpp servers to probe, as M(multimodel.orchestration.model_health) takes them (C(name), C(url), C(alias),
        C(api_key)); each is reported as the service C(llama-server@NAME).
    type: list
    elements: raw
    default: []
  api_key:
    description:
      - The model servers' API key, for endpoints that have none of their own.
    type: str
  validate_certs:
    description:
      - Verify TLS certificates of HTTPS addresses (unit C(url)s and model servers).
    type: bool
    default: true
  timeout:
    description:
      - Seconds to wait for every service to be healthy before reporting; V(0) reads each once.
    type: float
    default: 0

notes:
  - Reading another unit's state needs no rights; reading the Docker engine needs access to its socket (root, or the
    C(docker) group).
"""

EXAMPLES = r"""
- name: Read the state of this host's services
  multimodel.orchestration.service_status:
    containers: true
    units:
      - {name: prometheus-node-exporter.service, service: node_exporter, address: "10.0.0.5:9100",
         url: "http://127.0.0.1:9100/metrics"}
      - {name: mmo-backup.timer, service: backups}
    llama_endpoints:
      - {name: Q2_FAST_1, url: "http://127.0.0.1:8081", alias: q2_fast_1}
    api_key: "{{ llama_cpp_servers_api_key }}"
    timeout: 60
  register: status

- name: Print them
  ansible.builtin.debug:
    msg: "{{ status.services | multimodel.orchestration.status_table }}"
"""

RETURN = r"""
services:
  description: One row per service, in the order containers (by name), units, model servers.
  returned: always
  type: list
  elements: dict
  contains:
    service:
      description: The service's name (a container's name, a unit's O(units[].service), C(llama-server@NAME)).
      type: str
      sample: mmo-redis
    kind:
      description: V(container), V(unit), V(timer) or V(model).
      type: str
      sample: container
    address:
      description: Where it answers (published ports, or the network and port it listens on inside it), V(-) for none.
      type: str
      sample: "mmo-internal mmo-redis:6379/tcp"
    state:
      description: Its state in words, for example V(healthy), V(running), V(starting), V(exited (1)), V(active (running)),
        V(failed), V(waiting, last run ok), V(ok), V(loading) or V(unreachable).
      type: str
      sample: healthy
    version:
      description: Its version (a container's image version label or tag, the llama.cpp build, a C(*_build_info) version),
        V(-) when unknown.
      type: str
      sample: 7.4.2-alpine
    healthy:
      description: Whether it counts as healthy.
      type: bool
      sample: true
    detail:
      description: Why it is not healthy (or what else is worth knowing), or null.
      type: str
      sample: null
healthy:
  description: Whether every service is healthy.
  returned: always
  type: bool
  sample: true
"""

import re
import time
from urllib.error import HTTPError, URLError

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.urls import open_url
from ansible_collections.multimodel.orchestration.plugins.module_utils import docker_api
from ansible_collections.multimodel.orchestration.plugins.module_utils import llama_server

# "Up 3 minutes (healthy)", "Up 5 seconds (health: starting)", "Exited (1) 2 hours ago".
_HEALTH_RE = re.compile(r'\((healthy|unhealthy|health: starting)\)')
_EXIT_RE = re.compile(r'^Exited \((-?\d+)\)')
# A Prometheus build-info sample: foo_build_info{...,version="1.9.1",...} 1
_BUILD_INFO_RE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*_build_info\{[^}]*\bversion="([^"]*)"', re.MULTILINE)
_UNIT_RE = re.compile(r'^[A-Za-z0-9:_.\\@-]+\.(service|timer|socket|target|mount|path)$')
# How often services that are not healthy yet are read again (seconds).
_INTERVAL = 2.0
# The unit properties read; a timer's service adds Result and its last start.
_UNIT_PROPERTIES = ('Id', 'LoadState', 'ActiveState', 'SubState', 'Result', 'Triggers')


def _row(service, kind, address, state, version, healthy, detail=None):
    return {'service': service, 'kind': kind, 'address': address or '-', 'state': state,
            'version': version or '-', 'healthy': bool(healthy), 'detail': detail}


def container_version(entry):
    """The image's version label, else its tag, else None."""
    labels = entry.get('Labels') or {}
    version = labels.get('org.opencontainers.image.version')
    if version:
        return version
    image = entry.get('Image') or ''
    name = image.rsplit('/', 1)[-1]
    if '@' in name:
        return name.split('@', 1)[1][:19]
    if ':' in name:
        return name.split(':', 1)[1]
    return None


def container_address(entry):
    """Published ports as ADDRESS:PORT/PROTO, else NETWORK NAME:PORT/PROTO for the ports it
    listens on inside its network, else its networks; None when it has none of them."""
    ports = entry.get('Ports') or []
    published = []
    for port in ports:
        if not port.get('PublicPort'):
            continue
        address = port.get('IP') or '0.0.0.0'
        if address == '::' and any((other.get('IP') or '0.0.0.0') == '0.0.0.0' and other.get('PublicPort') == port['PublicPort']
                                   for other in ports):
            continue  # the IPv6 twin of a binding on every address
        shown = '%s:%s/%s' % ('[%s]' % address if ':' in address else address, port['PublicPort'], port.get('Type', 'tcp'))
        if shown not in published:
            published.append(shown)
    if published:
        return ', '.join(sorted(published))
    name = ((entry.get('Names') or ['?'])[0]).lstrip('/')
    inside = sorted({'%s:%s/%s' % (name, port['PrivatePort'], port.get('Type', 'tcp')) for port in ports if port.get('PrivatePort')})
    networks = sorted(((entry.get('NetworkSettings') or {}).get('Networks') or {}).keys())
    if not inside:
        return ', '.join(networks) or None
    return ('%s %s' % (networks[0], ', '.join(inside))) if networks else ', '.join(inside)


def container_row(entry):
    """The row of one entry of the engine's GET /containers/json."""
    name = ((entry.get('Names') or [entry.get('Id', '?')[:12]])[0]).lstrip('/')
    state = entry.get('State') or 'unknown'
    status = entry.get('Status') or ''
    health = _HEALTH_RE.search(status)
    health = health.group(1) if health else None
    detail = None
    if state == 'running' and health == 'health: starting':
        shown, healthy = 'starting', False
        detail = 'its health check has not passed yet'
    elif state == 'running' and health:
        shown, healthy = health, health == 'healthy'
        if not healthy:
            detail = 'its health check fails (docker inspect %s shows the last checks)' % name
    elif state == 'running':
        shown, healthy = 'running', True
    else:
        exited = _EXIT_RE.match(status)
        shown = '%s (%s)' % (state, exited.group(1)) if exited else state
        healthy = False
        detail = status or None
    return _row(name, 'container', container_address(entry), shown, container_version(entry), healthy, detail)


def read_containers(docker_socket, label):
    """Rows of the labelled containers, by name; [] without an engine."""
    found = docker_api.containers(docker_socket, labels=[label], all_states=True)
    return sorted((container_row(entry) for entry in found or []), key=lambda row: row['service'])


def parse_show(text):
    """`systemctl show` output (KEY=VALUE lines) as a dict."""
    values = {}
    for line in text.splitlines():
        key, sep, value = line.partition('=')
        if sep:
            values[key] = value
    return values


def build_version(text):
    """The version of the first *_build_info sample in a Prometheus exposition, or None."""
    found = _BUILD_INFO_RE.search(text or '')
    return found.group(1) if found and found.group(1) else None


def unit_row(unit, shown, service_result=None, answer=None):
    """The row of one unit from its `systemctl show` values (and, for a timer, those of the
    service it triggers; with a url, the answer: (ok, detail, version))."""
    service = unit.get('service') or re.sub(r'\.service$', '', unit['name'])
    timer = unit['name'].endswith('.timer')
    kind = 'timer' if timer else 'unit'
    version = None
    if shown.get('LoadState') != 'loaded':
        state, healthy = 'not installed' if shown.get('LoadState') == 'not-found' else shown.get('LoadState', 'unknown'), False
        detail = 'systemd has no unit %s' % unit['name']
        return _row(service, kind, unit.get('address'), state, version, healthy, detail)
    active, sub = shown.get('ActiveState', 'unknown'), shown.get('SubState', '')
    detail = None
    if timer:
        result = (service_result or {}).get('Result', 'success')
        last = 'last run ok' if result == 'success' else 'last run %s' % result
        if not (service_result or {}).get('ExecMainStartTimestamp'):
            last = 'not run yet'
        state = '%s, %s' % (sub or active, last)
        healthy = active == 'active' and result == 'success'
        if active != 'active':
            detail = 'the timer is %s: nothing is scheduled' % active
        elif result != 'success':
            detail = 'the last run of %s ended with %s (journalctl -u %s)' % (
                shown.get('Triggers') or 'its service', result, shown.get('Triggers') or unit['name'])
    else:
        state = '%s (%s)' % (active, sub) if sub else active
        healthy = active == 'active'
        if not healthy:
            detail = 'the unit is %s (journalctl -u %s)' % (active, unit['name'])
    if answer is not None and healthy:
        ok, answer_detail, version = answer
        if not ok:
            healthy, state, detail = False, 'not answering', answer_detail
    return _row(service, kind, unit.get('address'), state, version, healthy, detail)


def fetch(url, validate_certs, timeout=5.0):
    """GET url: (ok, detail, version) where ok means a 2xx answer."""
    try:
        response = open_url(url, method='GET', timeout=timeout, validate_certs=validate_certs, follow_redirects='none',
                            use_proxy=False, http_agent='multimodel.orchestration-service_status')
        try:
            body = response.read(4 * 1024 * 1024).decode('utf-8', 'replace')
        finally:
            response.close()
        return True, None, build_version(body)
    except HTTPError as error:
        return False, '%s answered HTTP %s' % (url, error.code), None
    except (URLError, OSError) as error:
        return False, '%s: %s' % (url, getattr(error, 'reason', error)), None


class Systemd:
    """`systemctl show` through the module's run_command."""

    def __init__(self, module):
        self.module = module
        self.systemctl = None

    def show(self, name, properties=_UNIT_PROPERTIES):
        if self.systemctl is None:
            self.systemctl = self.module.get_bin_path('systemctl', required=True)
        code, out, err = self.module.run_command(
            [self.systemctl, 'show', '--no-pager', '--property=' + ','.join(properties), '--', name])
        if code != 0:
            self.module.fail_json(msg='systemctl show %s failed (%s): %s' % (name, code, (err or out).strip()))
        return parse_show(out)


def read_unit(systemd, unit, validate_certs):
    shown = systemd.show(unit['name'])
    service_result = None
    if unit['name'].endswith('.timer') and shown.get('LoadState') == 'loaded' and shown.get('Triggers'):
        service_result = systemd.show(shown['Triggers'].split()[0], ('Result', 'ExecMainStartTimestamp'))
    answer = fetch(unit['url'], validate_certs) if unit.get('url') else None
    return unit_row(unit, shown, service_result, answer)


def model_row(result):
    """The row of one model_health result (with its build)."""
    healthy = bool(result.get('healthy'))
    detail = None
    if not healthy:
        detail = '%s%s' % (result.get('reason') or 'error', ' (%s)' % result['detail'] if result.get('detail') else '')
    return _row('llama-server@%s' % result['name'], 'model', result.get('url'), result.get('status') or 'error',
                result.get('build'), healthy, detail)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            containers=dict(type='bool', default=False),
            container_label=dict(type='str', default='org.multimodel.managed-by=multimodel.orchestration'),
            docker_socket=dict(type='path', default=docker_api.DEFAULT_SOCKET),
            units=dict(type='list', elements='dict', default=[], options=dict(
                name=dict(type='str', required=True),
                service=dict(type='str'),
                address=dict(type='str'),
                url=dict(type='str'),
            )),
            llama_endpoints=dict(type='list', elements='raw', default=[]),
            api_key=dict(type='str', no_log=True),
            validate_certs=dict(type='bool', default=True),
            timeout=dict(type='float', default=0),
        ),
        supports_check_mode=True,
    )
    params = module.params
    if params['timeout'] < 0:
        module.fail_json(msg='timeout must be 0 or more seconds, got %s' % params['timeout'])
    for unit in params['units']:
        if not _UNIT_RE.match(unit['name']):
            module.fail_json(msg="units: %r is not a systemd unit name (e.g. 'foo.service', 'foo.timer')" % unit['name'])
        if unit.get('url') and not re.match(r'^https?://', unit['url']):
            module.fail_json(msg='units: %s: url %r is not an http:// or https:// address' % (unit['name'], unit['url']))
    try:
        endpoints = llama_server.normalize_endpoints(params['llama_endpoints']) if params['llama_endpoints'] else []
    except ValueError as error:
        module.fail_json(msg='llama_endpoints: %s' % error)

    deadline = time.monotonic() + params['timeout']
    # The model servers first: the probe itself retries until they serve or the deadline.
    options = llama_server.ProbeOptions(api_key=params['api_key'], request_timeout=10, interval=1.0,
                                        validate_certs=params['validate_certs'], read_build=True)
    models = [model_row(result) for result in llama_server.probe_endpoints(endpoints, options, params['timeout'])]

    systemd = Systemd(module)
    while True:
        try:
            rows = read_containers(params['docker_socket'], params['container_label']) if params['containers'] else []
        except docker_api.EngineError as error:
            module.fail_json(msg='cannot list the Docker engine\'s containers: %s' % error)
        rows += [read_unit(systemd, unit, params['validate_certs']) for unit in params['units']]
        if all(row['healthy'] for row in rows) or time.monotonic() + _INTERVAL > deadline:
            break
        time.sleep(_INTERVAL)
    rows += models
    module.exit_json(changed=False, services=rows, healthy=all(row['healthy'] for row in rows))


if __name__ == '__main__':
    main()
