# Copyright (c) 2026, multimodel.orchestration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""playbooks/preflight.yml checks what playbooks/site.yml runs: every role of every site play, on
that play's hosts, with the same hand-over variables; and site.yml starts with preflight and
ends with health."""

import os
import re

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
PREFIX = 'multimodel.orchestration.'


def load(name):
    with open(os.path.join(ROOT, 'playbooks', name), encoding='utf-8') as f:
        return yaml.safe_load(f)


def site_roles():
    """{group: [role, ...]} of site.yml's plays ('all' for node_exporter's)."""
    roles = {}
    for play in load('site.yml'):
        if 'roles' in play:
            roles.setdefault(play['hosts'], []).extend(r['role'].replace(PREFIX, '') for r in play['roles'])
    return roles


def test_site_starts_with_preflight_and_ends_with_health():
    plays = load('site.yml')
    assert plays[0]['ansible.builtin.import_playbook'] == 'preflight.yml'
    assert plays[-1]['ansible.builtin.import_playbook'] == 'health.yml'


def test_preflight_checks_every_role_of_site_on_its_hosts():
    [play] = load('preflight.yml')
    groups = dict(play['vars']['_preflight_groups'])
    assert "+ ['node_exporter']" in play['vars']['_preflight_roles']  # on every host
    groups['all'] = ['node_exporter']
    assert groups == site_roles()
    imported = [re.sub('^' + re.escape(PREFIX), '', task['block'][0]['ansible.builtin.import_role']['name'])
                for task in play['tasks'] if 'block' in task]
    assert sorted(imported) == sorted(role for roles in groups.values() for role in roles)
    for task in play['tasks']:
        if 'block' in task:
            role = task['block'][0]['ansible.builtin.import_role']['name'].replace(PREFIX, '')
            assert task['block'][0]['ansible.builtin.import_role']['tasks_from'] == 'preflight'
            assert task['when'] == f"'{role}' in _preflight_roles"
            assert task['rescue'][0]['vars'] == {'_preflight_role': role}


def test_preflight_reads_the_hand_over_variables_site_gives():
    [play] = load('preflight.yml')
    site_files = sorted(name for p in load('site.yml') for name in p.get('vars_files', []))
    assert sorted(play['vars_files']) == site_files
