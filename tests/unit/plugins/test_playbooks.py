# Copyright (c) 2026, multimodel.orchestration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""playbooks/preflight.yml checks what playbooks/site.yml runs: every role of every site play, on
that play's hosts, with the same hand-over variables; and site.yml starts with preflight and
ends with health."""

import json
import os
import subprocess
import sys

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
PREFIX = 'multimodel.orchestration.'


def load(name):
    with open(os.path.join(ROOT, 'playbooks', name), encoding='utf-8') as f:
        return yaml.safe_load(f)


def site_roles():
    """{role: {group, tag}} as site.yml's plays run them."""
    roles = {}
    for play in load('site.yml'):
        for role in play.get('roles', []):
            roles[role['role'].replace(PREFIX, '')] = {'group': play['hosts'], 'tag': play['tags'][0]}
    return roles


def test_site_starts_with_preflight_and_ends_with_health():
    plays = load('site.yml')
    assert plays[0]['ansible.builtin.import_playbook'] == 'preflight.yml'
    assert plays[-1]['ansible.builtin.import_playbook'] == 'health.yml'


def test_preflight_checks_every_role_of_site_on_its_hosts():
    [play] = load('preflight.yml')
    assert play['vars']['_preflight_site'] == site_roles()
    for task in play['tasks']:
        if 'block' in task:
            role = task['block'][0]['ansible.builtin.import_role']['name'].replace(PREFIX, '')
            assert task['block'][0]['ansible.builtin.import_role']['tasks_from'] == 'preflight'
            assert task['when'] == f"'{role}' in _preflight_roles_checked"
            assert task['rescue'][0]['vars'] == {'_preflight_role': role}
    imported = [task['block'][0]['ansible.builtin.import_role']['name'].replace(PREFIX, '')
                for task in play['tasks'] if 'block' in task]
    assert sorted(imported) == sorted(site_roles())


@pytest.mark.parametrize('tags, host, expected', [
    (None, 'app1', ['redis', 'searxng', 'backend', 'caddy', 'node_exporter', 'redis_exporter', 'alertmanager',
                    'prometheus', 'grafana', 'backups']),
    (None, 'gpu1', ['docker', 'llama_cpp_servers', 'node_exporter']),
    ('app', 'app1', ['redis', 'searxng', 'backend', 'caddy']),
    ('app', 'gpu1', []),
    ('caddy_configure,models', 'app1', ['caddy']),
    ('caddy_configure,models', 'gpu1', ['llama_cpp_servers']),
    ('monitoring', 'gpu1', ['node_exporter']),
])
def test_preflight_checks_what_the_tags_run(tmp_path, tags, host, expected):
    """The roles preflight.yml checks on a host, evaluated by a real ansible-playbook run."""
    [play] = load('preflight.yml')
    inventory = {'all': {'children': {
        'docker_hosts': {'hosts': {'gpu1': None}}, 'llama_servers': {'hosts': {'gpu1': None}},
        'app_servers': {'hosts': {'app1': None}}, 'monitoring_servers': {'hosts': {'app1': None}},
        'backup_servers': {'hosts': {'app1': None}}}}}
    (tmp_path / 'inventory.yml').write_text(yaml.safe_dump(inventory))
    (tmp_path / 'play.yml').write_text(yaml.safe_dump([{
        'hosts': 'all', 'gather_facts': False, 'connection': 'local', 'tags': ['always'],
        'vars': {name: value for name, value in play['vars'].items() if name != '_preflight_problems_all'},
        'tasks': [{'ansible.builtin.copy': {'dest': '{{ out }}/{{ inventory_hostname }}',
                                            'content': '{{ _preflight_roles | to_json }}'},
                   'delegate_to': 'localhost'}]}]))
    command = [os.path.join(os.path.dirname(sys.executable), 'ansible-playbook'), '-i', str(tmp_path / 'inventory.yml'),
               str(tmp_path / 'play.yml'), '-e', f'out={tmp_path}'] + (['--tags', tags] if tags else [])
    env = {k: v for k, v in os.environ.items() if not k.startswith('ANSIBLE_STRATEGY')}
    run = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    assert sorted(json.loads((tmp_path / host).read_text())) == sorted(expected)


def test_preflight_reads_the_hand_over_variables_site_gives():
    [play] = load('preflight.yml')
    site_files = sorted({name for p in load('site.yml') for name in p.get('vars_files', [])})
    assert sorted(play['vars_files']) == site_files
