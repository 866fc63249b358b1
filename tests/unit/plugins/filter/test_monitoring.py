# Copyright (c) 2026, multimodel.orchestration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit tests of the monitoring filters: Prometheus' targets from the inventory."""

import os

import pytest
import yaml

from ansible.errors import AnsibleFilterError

from ansible_collections.multimodel.orchestration.plugins.filter import monitoring

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))

INSTANCES = [{'name': 'Q2_FAST_1', 'port': 8080, 'alias': 'q2-fast', 'complexity': 'simple'},
             {'name': 'Q2_FAST_2', 'port': 8081, 'alias': 'q2-fast', 'complexity': 'simple'},
             {'name': 'Q4_DEEP', 'port': 8083, 'complexity': 'complex'}]


def single_host(**extra):
    """inventories/local's layout: everything on one host, model servers on 0.0.0.0."""
    host = {'llama_cpp_servers_instances': INSTANCES, 'llama_cpp_servers_bind_address': '0.0.0.0',
            'backend_replicas': 2}
    host.update(extra)
    groups = {'all': ['app'], 'llama_servers': ['app'], 'app_servers': ['app'], 'monitoring_servers': ['app']}
    return groups, {'app': host}


def jobs(result):
    return {job['job_name']: job for job in result['scrape_configs']}


def targets(job):
    return [(group['targets'][0], group['labels']) for group in job['static_configs']]


def test_single_host_every_target_with_labels():
    groups, hostvars = single_host()
    result = monitoring.prometheus_targets(groups, hostvars, 'app', {
        'llama_credentials_file': '/etc/prometheus/secrets/llama_api_key', 'redis_exporter': 'redis-exporter:9121',
        'alertmanagers': ['alertmanager:9093']})
    found = jobs(result)
    assert list(found) == ['llama', 'backend', 'caddy', 'redis', 'node', 'prometheus', 'alertmanager']
    assert targets(found['llama']) == [
        ('host.docker.internal:8080', {'tier': 'simple', 'alias': 'q2-fast', 'instance': 'Q2_FAST_1', 'host': 'app'}),
        ('host.docker.internal:8081', {'tier': 'simple', 'alias': 'q2-fast', 'instance': 'Q2_FAST_2', 'host': 'app'}),
        ('host.docker.internal:8083', {'tier': 'complex', 'alias': 'q4_deep', 'instance': 'Q4_DEEP', 'host': 'app'})]
    assert found['llama']['authorization'] == {'type': 'Bearer', 'credentials_file': '/etc/prometheus/secrets/llama_api_key'}
    assert targets(found['backend']) == [('mmo-backend-1:8000', {'instance': 'mmo-backend-1', 'host': 'app'}),
                                         ('mmo-backend-2:8000', {'instance': 'mmo-backend-2', 'host': 'app'})]
    assert targets(found['caddy']) == [('mmo-caddy:9180', {'instance': 'mmo-caddy', 'host': 'app'})]
    assert targets(found['redis']) == [('redis-exporter:9121', {'instance': 'redis', 'host': 'app'})]
    # node_exporter on the gateway's address by default: reached through host.docker.internal.
    assert targets(found['node']) == [('host.docker.internal:9100', {'instance': 'app', 'host': 'app'})]
    assert targets(found['prometheus']) == [('localhost:9090', {'instance': 'mmo-prometheus', 'host': 'app'})]
    assert targets(found['alertmanager']) == [('alertmanager:9093', {'instance': 'alertmanager', 'host': 'app'})]
    assert result['skipped'] == []


def test_no_key_no_authorization_and_optional_jobs_left_out():
    groups, hostvars = single_host()
    found = jobs(monitoring.prometheus_targets(groups, hostvars, 'app'))
    assert 'authorization' not in found['llama']
    assert 'redis' not in found and 'alertmanager' not in found


def test_adding_an_instance_and_a_host_adds_their_targets():
    groups, hostvars = single_host()
    hostvars['app']['llama_cpp_servers_instances'] = INSTANCES + [{'name': 'Q3', 'port': 8090}]
    groups['all'].append('gpu1')
    groups['llama_servers'].append('gpu1')
    hostvars['gpu1'] = {'ansible_host': '10.0.0.7', 'llama_cpp_servers_bind_address': '0.0.0.0',
                        'llama_cpp_servers_instances': [{'name': 'BIG', 'port': 9000}],
                        'node_exporter_listen_host': '10.0.0.7'}
    result = monitoring.prometheus_targets(groups, hostvars, 'app')
    found = jobs(result)
    assert ('host.docker.internal:8090', {'tier': '', 'alias': 'q3', 'instance': 'Q3', 'host': 'app'}) \
        in targets(found['llama'])
    assert ('10.0.0.7:9000', {'tier': '', 'alias': 'big', 'instance': 'BIG', 'host': 'gpu1'}) \
        in targets(found['llama'])
    assert ('10.0.0.7:9100', {'instance': 'gpu1', 'host': 'gpu1'}) in targets(found['node'])
    assert result['skipped'] == []


def test_unreachable_targets_are_skipped_with_the_reason():
    groups, hostvars = single_host(llama_cpp_servers_bind_address='127.0.0.1')
    groups['all'].append('web2')
    groups['app_servers'].append('web2')
    hostvars['web2'] = {}
    result = monitoring.prometheus_targets(groups, hostvars, 'app')
    found = jobs(result)
    assert 'llama' not in found
    assert [(s['job'], s['host']) for s in result['skipped']] == [
        ('llama', 'app'), ('llama', 'app'), ('llama', 'app'), ('backend, caddy, redis', 'web2'), ('node', 'web2')]
    assert 'loopback' in result['skipped'][0]['why']
    assert 'caddy_metrics_publish_address on web2' in result['skipped'][3]['why']
    assert 'node_exporter_listen_host' in result['skipped'][-1]['why']
    # web2's node_exporter on its own Docker gateway: only its containers reach it.
    assert 'Docker gateway of web2' in result['skipped'][-1]['why']


def test_an_app_host_elsewhere_is_scraped_through_its_caddy_metrics_port():
    """Prometheus on mon1, the app tier on app1 with Caddy's metrics port published: Caddy's own
    metrics, each backend replica's and redis_exporter's, all at that one address, each at its
    path; the Redis job is app1's, not the Prometheus host's."""
    groups = {'all': ['app1', 'mon1'], 'llama_servers': [], 'app_servers': ['app1'], 'monitoring_servers': ['mon1']}
    hostvars = {'app1': {'caddy_metrics_publish_address': '10.0.10.20', 'backend_replicas': 2}, 'mon1': {}}
    found = jobs(monitoring.prometheus_targets(groups, hostvars, 'mon1', {'redis_exporter': 'redis-exporter:9121'}))
    assert targets(found['backend']) == [
        ('10.0.10.20:9180', {'__metrics_path__': '/mmo-backend-1/metrics', 'instance': 'mmo-backend-1', 'host': 'app1'}),
        ('10.0.10.20:9180', {'__metrics_path__': '/mmo-backend-2/metrics', 'instance': 'mmo-backend-2', 'host': 'app1'})]
    assert targets(found['caddy']) == [('10.0.10.20:9180', {'instance': 'mmo-caddy', 'host': 'app1'})]
    assert targets(found['redis']) == [
        ('10.0.10.20:9180', {'__metrics_path__': '/redis-exporter/metrics', 'instance': 'redis', 'host': 'app1'})]
    # Published on every address: reached at the host's ansible_host; IPv6 in brackets.
    hostvars['app1'].update(caddy_metrics_publish_address='0.0.0.0', ansible_host='app1.internal', caddy_metrics_port=9200)
    assert targets(jobs(monitoring.prometheus_targets(groups, hostvars, 'mon1'))['caddy'])[0][0] == 'app1.internal:9200'
    hostvars['app1']['caddy_metrics_publish_address'] = '[fd00::20]'
    assert targets(jobs(monitoring.prometheus_targets(groups, hostvars, 'mon1'))['caddy'])[0][0] == '[fd00::20]:9200'


def test_node_exporter_listen():
    assert monitoring.node_exporter_listen({}) == '172.17.0.1:9100'
    assert monitoring.node_exporter_listen({'ansible_facts': {'docker0': {'ipv4': {'address': '172.18.0.1'}}}}) \
        == '172.18.0.1:9100'
    assert monitoring.node_exporter_listen({'node_exporter_listen_host': '::', 'node_exporter_port': 9200}) == '[::]:9200'
    with pytest.raises(AnsibleFilterError):
        monitoring.node_exporter_listen('app')


def test_groups_must_be_lists():
    with pytest.raises(AnsibleFilterError):
        monitoring.prometheus_targets({'llama_servers': 'app'}, {}, 'app')


def test_role_defaults_agree_with_the_roles():
    """ROLE_DEFAULTS repeats the backend and caddy roles' defaults; the node_exporter role's port too."""
    found = {}
    for role in ('backend', 'caddy', 'node_exporter'):
        with open(os.path.join(ROOT, 'roles', role, 'defaults', 'main.yml'), encoding='utf-8') as source:
            found.update(yaml.safe_load(source))
    for key, value in monitoring.ROLE_DEFAULTS.items():
        assert found[key] == value, key
    assert found['node_exporter_port'] == monitoring.NODE_EXPORTER_PORT
    assert found['node_exporter_listen_host'] == ''


def test_rules_for_max_lowers_longer_durations_only():
    rules = {'groups': [{'name': 'g', 'rules': [
        {'alert': 'A', 'expr': 'up == 0', 'for': '15m', 'annotations': {'summary': '{{ $labels.instance }}'}},
        {'alert': 'B', 'expr': 'up == 0', 'for': '2s'},
        {'record': 'r', 'expr': 'sum(up)'}]}]}
    lowered = monitoring.rules_for_max(rules, '5s')
    assert [rule.get('for') for rule in lowered['groups'][0]['rules']] == ['5s', '2s', None]
    assert lowered['groups'][0]['rules'][0]['annotations'] == {'summary': '{{ $labels.instance }}'}
    assert rules['groups'][0]['rules'][0]['for'] == '15m'
    assert monitoring.rules_for_max(rules, '') is rules


def test_durations():
    assert monitoring.duration_ms('1h30m') == 5400000
    assert monitoring.duration_ms('250ms') == 250
    for bad in ('', '5 m', '1x'):
        with pytest.raises(AnsibleFilterError):
            monitoring.duration_ms(bad)
