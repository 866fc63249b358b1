# Copyright (c) 2026, multimodel.orchestration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The values playbooks/site.yml's App tier play hands from one tier to another, evaluated by a
real ansible-playbook against real inventories (the play's vars files, with the roles left out)."""

import os
import subprocess
import sys

import yaml

from ansible_collections.multimodel.orchestration.plugins.filter import topology

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def app_tier_vars():
    """The App tier play's hand-over variables (its vars_files, which preflight.yml reads too)."""
    with open(os.path.join(ROOT, 'playbooks', 'site.yml'), encoding='utf-8') as f:
        [play] = [p for p in yaml.safe_load(f) if p.get('name') == 'App tier']
    handed = {}
    for name in play['vars_files']:
        with open(os.path.join(ROOT, 'playbooks', name), encoding='utf-8') as f:
            handed.update(yaml.safe_load(f))
    return handed


def handed_over(tmp_path, inventory, variable, play_vars=None):
    """{app host: the value site.yml's App tier play gives variable there}."""
    (tmp_path / 'inventory.yml').write_text(yaml.safe_dump(inventory))
    (tmp_path / 'play.yml').write_text(yaml.safe_dump([{
        'hosts': 'app_servers', 'gather_facts': False, 'connection': 'local',
        'vars': dict(app_tier_vars(), **(play_vars or {})),
        'tasks': [{'ansible.builtin.copy': {'dest': '{{ out }}/{{ inventory_hostname }}',
                                            'content': '{{ %s }}' % variable},
                   'delegate_to': 'localhost'}]}]))
    env = {k: v for k, v in os.environ.items() if not k.startswith('ANSIBLE_STRATEGY')}
    env['ANSIBLE_COLLECTIONS_PATH'] = topology.__file__.rsplit(os.sep + 'ansible_collections' + os.sep, 1)[0]
    run = subprocess.run([os.path.join(os.path.dirname(sys.executable), 'ansible-playbook'),
                          '-i', str(tmp_path / 'inventory.yml'), str(tmp_path / 'play.yml'),
                          '-e', f'out={tmp_path}'], env=env, capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    hosts = inventory['all']['children']['app_servers']['hosts']
    return {host: (tmp_path / host).read_text() for host in hosts}


def test_the_backend_gets_the_model_servers_api_key(tmp_path):
    """One fleet per app host (its backend_llama_servers_group, the backend role's variable);
    no app host is a model host, so none sees the model hosts' group_vars."""
    inventory = {'all': {'vars': {'llama_cpp_servers_api_key': 'k-all'}, 'children': {
        # The key in the model hosts' group_vars.
        'models_a': {'hosts': {'gpu1': None, 'gpu2': None}, 'vars': {'llama_cpp_servers_api_key': 'k-models'}},
        # The example inventory's layout: the key in group_vars/all.
        'models_b': {'hosts': {'gpu3': None}},
        # No key.
        'models_c': {'hosts': {'gpu4': {'llama_cpp_servers_api_key': ''}}},
        'app_servers': {'hosts': {
            'app1': {'backend_llama_servers_group': 'models_a'},
            'app2': {'backend_llama_servers_group': 'models_b'},
            # An inventory value of the backend's own variable wins.
            'app3': {'backend_llama_servers_group': 'models_a', 'backend_llama_api_key': 'k-own'},
            'app4': {'backend_llama_servers_group': 'models_c'},
            'app5': {'backend_llama_servers_group': 'no_such_group'},
        }}}}}
    assert handed_over(tmp_path, inventory, 'backend_llama_api_key') == {
        'app1': 'k-models', 'app2': 'k-all', 'app3': 'k-own', 'app4': '', 'app5': ''}


def test_the_quick_start_hands_its_generated_key_to_the_backend(tmp_path):
    """inventories/local: one sandbox host in every group, its key read from the harness'
    secrets directory (a stand-in here)."""
    (tmp_path / 'secrets').mkdir()
    (tmp_path / 'secrets' / 'llama_api_key').write_text('generated-key\n')
    with open(os.path.join(ROOT, 'inventories', 'local', 'group_vars', 'llama_servers.yml'), encoding='utf-8') as f:
        llama_vars = yaml.safe_load(f)
    inventory = {'all': {'vars': {'sandbox_artifacts': str(tmp_path)}, 'children': {
        'llama_servers': {'hosts': {'mmo-sandbox': None}, 'vars': llama_vars},
        'app_servers': {'hosts': {'mmo-sandbox': None}}}}}
    assert llama_vars['llama_cpp_servers_bind_address'] == '0.0.0.0'
    handed = handed_over(tmp_path, inventory, 'backend_llama_api_key',
                         {'backend_llama_servers_group': 'llama_servers'})  # the backend role's default
    assert handed == {'mmo-sandbox': 'generated-key'}
