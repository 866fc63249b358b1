# Copyright (c) 2026, multimodel.orchestration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit tests of the status_table filter."""

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.multimodel.orchestration.plugins.filter.status import preflight_table, status_table


def row(host, service, state='healthy', healthy=True, address='-', version='-', detail=None):
    return {'host': host, 'service': service, 'kind': 'container', 'address': address, 'state': state,
            'version': version, 'healthy': healthy, 'detail': detail}


def test_a_healthy_stack():
    lines = status_table([
        row('gpu-2', 'llama-server@Q4_DEEP', 'ok', address='http://10.0.0.2:8083', version='b6000-1a2b3c4'),
        row('app-1', 'mmo-redis', address='mmo-internal mmo-redis:6379/tcp', version='7.4.2-alpine'),
        row('app-1', 'mmo-caddy', address='0.0.0.0:443/tcp', version=None),
    ])
    assert lines == [
        '    HOST   SERVICE               ADDRESS                          STATE    VERSION',
        'ok  app-1  mmo-caddy             0.0.0.0:443/tcp                  healthy  -',
        'ok  app-1  mmo-redis             mmo-internal mmo-redis:6379/tcp  healthy  7.4.2-alpine',
        'ok  gpu-2  llama-server@Q4_DEEP  http://10.0.0.2:8083             ok       b6000-1a2b3c4',
        '3 of 3 services healthy',
    ]


def test_failures_are_marked_and_explained():
    lines = status_table([row('app-1', 'mmo-grafana', 'unhealthy', False, detail='its health check fails'),
                          row('app-1', 'mmo-redis')], ['gpu-1'])
    assert lines[1].startswith('FAIL  app-1  mmo-grafana')
    assert lines[3].startswith('FAIL  gpu-1  (host)') and 'unreachable' in lines[3]
    assert lines[-3:] == ['FAIL app-1 mmo-grafana: its health check fails',
                          'FAIL gpu-1 (host): Ansible could not read its services (unreachable, or a task failed above)',
                          '1 of 3 services healthy']


@pytest.mark.parametrize('rows, message', [
    ('text', 'expects a list of dicts'),
    ([{'service': 'x'}], 'every row needs host and service'),
])
def test_bad_input(rows, message):
    with pytest.raises(AnsibleFilterError, match=message):
        status_table(rows)


def test_preflight_problems_in_one_table():
    lines = preflight_table([
        {'host': 'gpu-2', 'role': 'llama_cpp_servers', 'check': 'Check instance ports are unique',
         'problem': 'Q2_FAST_2 and Q3_SYNTH\nboth use port 8081'},
        {'host': 'app-1', 'role': 'redis', 'check': 'Check that a Redis password is set', 'problem': 'Set redis_password.'},
    ])
    assert lines == [
        'HOST   ROLE               CHECK                               PROBLEM',
        'app-1  redis              Check that a Redis password is set  Set redis_password.',
        'gpu-2  llama_cpp_servers  Check instance ports are unique     Q2_FAST_2 and Q3_SYNTH both use port 8081',
        '2 problem(s) on 2 host(s)',
    ]


def test_preflight_table_needs_the_fields():
    with pytest.raises(AnsibleFilterError, match='preflight_table: every row needs host and role and problem'):
        preflight_table([{'host': 'a', 'problem': 'x'}])
