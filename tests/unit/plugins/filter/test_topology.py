# Copyright (c) 2026, multimodel.orchestration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit tests of the topology filters, and of the rules they share with the roles."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import yaml

from ansible.errors import AnsibleFilterError

from ansible_collections.multimodel.orchestration.plugins.filter import topology

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))

DEFAULTS = {'parallel': 2, 'flash_attn': 'auto', 'extra_args': []}


def test_instance_resolves_over_defaults_bind_and_lowercase_alias():
    [resolved] = topology.llama_instances([{'name': 'Q2_FAST_1', 'port': 8080, 'parallel': 4}], DEFAULTS, '10.0.0.5')
    assert resolved == {'name': 'Q2_FAST_1', 'port': 8080, 'parallel': 4, 'flash_attn': 'auto', 'extra_args': [],
                        'bind_address': '10.0.0.5', 'alias': 'q2_fast_1', 'url': 'http://10.0.0.5:8080'}


def test_instance_keys_win_over_alias_and_bind_defaults():
    [resolved] = topology.llama_instances(
        [{'name': 'Q4', 'port': 9000, 'alias': 'deep', 'bind_address': '::1'}], DEFAULTS, '0.0.0.0')
    assert (resolved['alias'], resolved['bind_address'], resolved['url']) == ('deep', '::1', 'http://[::1]:9000')


@pytest.mark.parametrize('bind, url', [
    ('0.0.0.0', 'http://127.0.0.1:8080'),
    ('::', 'http://[::1]:8080'),
    ('', 'http://127.0.0.1:8080'),
    ('172.17.0.1', 'http://172.17.0.1:8080'),
])
def test_wildcard_binds_are_probed_on_loopback(bind, url):
    [resolved] = topology.llama_instances([{'name': 'a', 'port': 8080, 'bind_address': bind}])
    assert resolved['url'] == url


def test_defaults_are_not_mutated_and_instances_keep_their_order():
    defaults = dict(DEFAULTS)
    resolved = topology.llama_instances([{'name': 'b', 'port': 2}, {'name': 'a', 'port': 1}], defaults)
    assert [i['name'] for i in resolved] == ['b', 'a']
    assert defaults == DEFAULTS


def test_no_instances_resolve_to_none():
    assert topology.llama_instances(None) == []
    assert topology.llama_instances([]) == []


@pytest.mark.parametrize('instances, message', [
    ({'name': 'a'}, 'must be a list, got dict'),
    ('a', 'must be a list, got str'),
    ([{'port': 1}], r"llama_cpp_servers_instances\[0\] must be a mapping with a name"),
    (['Q2'], r"llama_cpp_servers_instances\[0\] must be a mapping with a name, got 'Q2'"),
])
def test_bad_instance_lists_are_named(instances, message):
    with pytest.raises(AnsibleFilterError, match=message):
        topology.llama_instances(instances)


def test_endpoints_keep_what_model_health_takes():
    resolved = topology.llama_instances([{'name': 'A', 'port': 1, 'complexity': 'simple'}], DEFAULTS)
    assert topology.llama_endpoints(resolved) == [{'name': 'A', 'alias': 'a', 'url': 'http://127.0.0.1:1'}]


HOSTVARS = {
    'gpu1': {'ansible_host': '192.0.2.10', 'llama_cpp_servers_bind_address': '0.0.0.0',
             'llama_cpp_servers_instances': [{'name': 'Q2_FAST_1', 'port': 8080, 'complexity': 'simple'},
                                             {'name': 'Q3', 'port': 8082, 'complexity': 'moderate',
                                              'bind_address': '192.0.2.11', 'alias': 'synth'}]},
    'gpu2': {'llama_cpp_servers_bind_address': '::',
             'llama_cpp_servers_instances': [{'name': 'Q4_DEEP', 'port': 8083, 'complexity': 'complex'}]},
    'app1': {'llama_cpp_servers_instances': [{'name': 'local', 'port': 8090, 'complexity': 'simple',
                                              'bind_address': '172.17.0.1'}]},
    'bare': {},
}


def test_backend_tiers_reach_each_instance_as_the_backend_host_sees_it():
    tiers = topology.backend_tiers(['gpu1', 'gpu2', 'app1', 'bare'], HOSTVARS, 'app1')
    assert tiers == [
        {'name': 'Q2_FAST_1', 'url': 'http://192.0.2.10:8080', 'complexity': 'simple', 'alias': 'q2_fast_1',
         'bind': '0.0.0.0', 'host': 'gpu1'},
        {'name': 'Q3', 'url': 'http://192.0.2.11:8082', 'complexity': 'moderate', 'alias': 'synth',
         'bind': '192.0.2.11', 'host': 'gpu1'},
        # no ansible_host: the inventory name
        {'name': 'Q4_DEEP', 'url': 'http://gpu2:8083', 'complexity': 'complex', 'alias': 'q4_deep',
         'bind': '::', 'host': 'gpu2'},
        # on the backend's own host: through the Docker host gateway
        {'name': 'local', 'url': 'http://host.docker.internal:8090', 'complexity': 'simple', 'alias': 'local',
         'bind': '172.17.0.1', 'host': 'app1'},
    ]


def _own_host_url(bind, **host_vars):
    hostvars = {'app': dict(host_vars, llama_cpp_servers_instances=[{'name': 'x', 'port': 8090,
                                                                     'bind_address': bind}])}
    return topology.backend_tiers(['app'], hostvars, 'app')[0]['url']


@pytest.mark.parametrize('bind', ['0.0.0.0', '::', '172.17.0.1'])
def test_a_server_on_the_backends_host_listening_on_the_gateway_is_reached_through_it(bind):
    assert _own_host_url(bind) == 'http://host.docker.internal:8090'


@pytest.mark.parametrize('bind, url', [
    # The host's private address: host.docker.internal (172.17.0.1) finds nothing listening there.
    ('192.0.2.20', 'http://192.0.2.20:8090'),
    ('fd00::20', 'http://[fd00::20]:8090'),
])
def test_a_server_on_the_backends_host_bound_elsewhere_is_reached_at_its_address(bind, url):
    assert _own_host_url(bind) == url


DOCKER0 = {'ansible_facts': {'docker0': {'ipv4': {'address': '172.18.0.1', 'netmask': '255.255.0.0'}}}}


@pytest.mark.parametrize('host_vars, gateway', [
    ({}, '172.17.0.1'),
    (DOCKER0, '172.18.0.1'),
    ({'ansible_docker0': {'ipv4': {'address': '172.19.0.1'}}}, '172.19.0.1'),
    ({'docker_daemon_options_extra': {'bip': '10.99.0.1/24'}}, '10.99.0.1'),
    (dict(DOCKER0, docker_daemon_options={'host-gateway-ip': '10.0.0.7'}), '10.0.0.7'),
    (dict(DOCKER0, docker_daemon_options_extra={'host-gateway-ip': '10.0.0.8'}), '10.0.0.8'),
])
def test_the_gateway_is_what_host_gateway_stands_for_on_that_host(host_vars, gateway):
    assert topology.docker_gateway(host_vars) == gateway
    assert _own_host_url(gateway, **host_vars) == 'http://host.docker.internal:8090'
    # Docker's default bridge address is no gateway once the host says otherwise.
    if gateway != '172.17.0.1':
        assert _own_host_url('172.17.0.1', **host_vars) == 'http://172.17.0.1:8090'


def test_backend_tiers_use_the_role_default_bind_and_keep_a_missing_complexity_empty():
    hostvars = {'gpu': {'llama_cpp_servers_instances': [{'name': 'x', 'port': 1}]}}
    [tier] = topology.backend_tiers(['gpu'], hostvars, 'app')
    assert (tier['bind'], tier['url'], tier['complexity']) == ('127.0.0.1', 'http://127.0.0.1:1', '')


def test_backend_tiers_apply_the_model_hosts_instance_defaults():
    hostvars = {'gpu': {'llama_cpp_servers_instance_defaults': {'complexity': 'simple'},
                        'llama_cpp_servers_instances': [{'name': 'x', 'port': 1}]}}
    assert topology.backend_tiers(['gpu'], hostvars, 'app')[0]['complexity'] == 'simple'


def test_tier_contract_keeps_the_reference_backends_keys():
    tiers = topology.backend_tiers(['gpu1'], HOSTVARS, 'app1')
    assert topology.tier_contract(tiers)[0] == {'name': 'Q2_FAST_1', 'url': 'http://192.0.2.10:8080',
                                                'complexity': 'simple', 'alias': 'q2_fast_1'}
    assert topology.tier_contract([{'name': 'n', 'url': 'u', 'complexity': 'c'}]) == [
        {'name': 'n', 'url': 'u', 'complexity': 'c'}]


@pytest.mark.parametrize('old, new, keys', [
    ({}, {}, []),
    (None, {'a': 1}, ['a']),
    ({'a': 1, 'b': [1]}, {'a': 1, 'b': [1, 2]}, ['b']),
    ({'debug': True, 'data-root': '/d'}, {'data-root': '/e', 'labels': []}, ['data-root', 'debug', 'labels']),
    ({'a': None}, {}, []),  # an absent key and a null one are the same to dockerd
])
def test_changed_keys(old, new, keys):
    assert topology.changed_keys(old, new) == keys


def test_changed_keys_names_a_non_mapping():
    with pytest.raises(AnsibleFilterError, match=r"the new value must be a mapping, got \['a'\]"):
        topology.changed_keys({}, ['a'])


def test_the_default_bind_address_is_the_llama_roles_default():
    with open(os.path.join(ROOT, 'roles', 'llama_cpp_servers', 'defaults', 'main.yml'), encoding='utf-8') as f:
        defaults = yaml.safe_load(f)
    assert defaults['llama_cpp_servers_bind_address'] == topology.DEFAULT_BIND_ADDRESS


def test_filters_run_in_a_real_play_with_hostvars(tmp_path):
    """The filters as a playbook calls them: by FQCN, with a real inventory's hostvars."""
    (tmp_path / 'inventory.yml').write_text(yaml.safe_dump({'all': {'children': {
        'llama_servers': {'hosts': {'gpu1': HOSTVARS['gpu1'], 'gpu2': HOSTVARS['gpu2']}},
        'app_servers': {'hosts': {'app1': {}}}}}}))
    (tmp_path / 'play.yml').write_text(textwrap.dedent("""\
        - hosts: app_servers
          gather_facts: false
          connection: local
          tasks:
            - ansible.builtin.copy:
                dest: "{{ out }}"
                content: >-
                  {{ {'tiers': groups['llama_servers'] | multimodel.orchestration.backend_tiers(hostvars, inventory_hostname)
                               | multimodel.orchestration.tier_contract,
                      'endpoints': hostvars['gpu1'].llama_cpp_servers_instances
                                   | multimodel.orchestration.llama_instances({}, '0.0.0.0')
                                   | multimodel.orchestration.llama_endpoints} | to_json }}
              delegate_to: localhost
        """))
    out = tmp_path / 'out.json'
    env = {k: v for k, v in os.environ.items() if not k.startswith('ANSIBLE_STRATEGY')}
    # The directory this test imported the collection from (conftest links the checkout there).
    env['ANSIBLE_COLLECTIONS_PATH'] = topology.__file__.rsplit(os.sep + 'ansible_collections' + os.sep, 1)[0]
    run = subprocess.run([os.path.join(os.path.dirname(sys.executable), 'ansible-playbook'),
                          '-i', str(tmp_path / 'inventory.yml'), str(tmp_path / 'play.yml'), '-e', f'out={out}'],
                         env=env, capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    result = json.loads(out.read_text())
    assert [t['url'] for t in result['tiers']] == ['http://192.0.2.10:8080', 'http://192.0.2.11:8082',
                                                   'http://gpu2:8083']
    assert result['endpoints'] == [{'name': 'Q2_FAST_1', 'alias': 'q2_fast_1', 'url': 'http://127.0.0.1:8080'},
                                   {'name': 'Q3', 'alias': 'synth', 'url': 'http://192.0.2.11:8082'}]


def test_backend_tiers_name_the_model_by_its_sha256_else_its_name():
    hostvars = {'gpu': {'llama_cpp_servers_instances': [{'name': 'A', 'port': 1, 'complexity': 'simple', 'model': 'q2'},
                                                        {'name': 'B', 'port': 2, 'complexity': 'simple', 'model': 'q9'},
                                                        {'name': 'C', 'port': 3, 'complexity': 'simple'}],
                        'llama_cpp_servers_models': {'q2': {'src': '/m/q2.gguf', 'sha256': 'AB' * 32}}}}
    tiers = topology.backend_tiers(['gpu'], hostvars, 'app')
    assert [t.get('model') for t in tiers] == ['ab' * 32, 'q9', None]
    # The backend's cache keys on it: it is part of the MMO_TIERS_JSON contract.
    assert topology.tier_contract(tiers)[0]['model'] == 'ab' * 32


@pytest.mark.parametrize('addresses, port, origins', [
    (['localhost'], 443, ['https://localhost']),
    (['localhost'], 8443, ['https://localhost:8443']),
    (['llm.example.com', 'llm.example.com:9443'], 443, ['https://llm.example.com', 'https://llm.example.com:9443']),
    (['http://intra.example:8080/', 'https://a.example'], 8443, ['http://intra.example:8080', 'https://a.example:8443']),
    ([':443', '*.example.com', ''], 443, []),  # any host: the backend's same-origin check covers it
    (['localhost', 'https://localhost'], 443, ['https://localhost']),
])
def test_site_origins_are_what_a_browser_sends_as_origin(addresses, port, origins):
    assert topology.site_origins(addresses, port) == origins


def test_model_paths_name_each_file_by_its_sha256():
    sha = 'AB' * 32
    assert topology.model_paths({'q2': {'sha256': sha, 'src': '/x'}}, '/var/lib/llama-server/models/') == {
        'q2': '/var/lib/llama-server/models/q2-' + 'ab' * 6 + '.gguf'}
    # dict2items' form gives the same.
    assert topology.model_paths([{'key': 'q2', 'value': {'sha256': sha}}], '/m') == {'q2': '/m/q2-abababababab.gguf'}


@pytest.mark.parametrize('models', [{'q2': {'sha256': ''}}, {'q2': {'sha256': 'abc'}}, {'q2': 'file.gguf'}])
def test_model_paths_name_a_model_without_a_good_sha256(models):
    with pytest.raises(AnsibleFilterError, match="model 'q2' needs a sha256"):
        topology.model_paths(models, '/m')
