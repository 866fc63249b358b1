# Copyright (c) 2026, multimodel.orchestration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The alert rules the prometheus role ships (roles/prometheus/files/rules/*.yml).

Each rule file is checked by ``promtool check rules`` and tested by ``promtool test rules``
with the unit tests in rules_tests/ (the alert fires on the series it is about, with its
labels and annotations, and stays quiet before its ``for:`` and on the look-alikes).
promtool comes from the Debian package ``prometheus`` on the test machine.
"""

import glob
import os
import shutil
import subprocess

import pytest
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
RULES_DIR = os.path.join(ROOT, 'roles', 'prometheus', 'files', 'rules')
TESTS_DIR = os.path.join(HERE, 'rules_tests')
RULE_FILES = sorted(glob.glob(os.path.join(RULES_DIR, '*.yml')))
TEST_FILES = sorted(glob.glob(os.path.join(TESTS_DIR, '*_test.yml')))

# The alerts issue 12 asks for, by what they are about.
REQUIRED_ALERTS = {
    'LlamaServerDown': 'model server down',
    'LlamaTierDegraded': 'a tier degraded (one replica down)',
    'LlamaTierDown': 'a tier down',
    'LlamaRequestsDeferred': 'requests deferred on a model server',
    'BackendDown': 'backend down',
    'BackendReplicaDown': 'a backend replica down',
    'BackendHighErrorRatio': 'backend 5xx ratio high',
    'BackendHighLatencyP95': 'backend p95 latency high',
    'RedisDown': 'Redis down',
    'RedisMemoryNearMax': 'Redis memory near maxmemory',
    'CaddyUpstreamUnhealthy': 'Caddy upstream unhealthy',
    'HostDiskNearlyFull': 'disk nearly full',
    'BackupStale': 'backup stale',
    'BackupVerificationFailed': 'backup verification failed',
}


def _promtool():
    path = shutil.which('promtool')
    if path is None:
        pytest.fail('promtool is not installed: it comes with the Debian package prometheus '
                    '(apt-get install --no-install-recommends prometheus)')
    return path


def _run(*args):
    return subprocess.run([_promtool(), *args], capture_output=True, text=True, timeout=120, check=False)


def _load(path):
    with open(path, encoding='utf-8') as handle:
        return yaml.safe_load(handle)


def _alerts():
    """(file name, rule) of every alerting rule."""
    for path in RULE_FILES:
        for group in _load(path)['groups']:
            for rule in group['rules']:
                if 'alert' in rule:
                    yield os.path.basename(path), rule


def test_rule_files_are_there():
    assert [os.path.basename(p) for p in RULE_FILES] == [
        'backend.yml', 'backups.yml', 'caddy.yml', 'hosts.yml', 'model_servers.yml', 'redis.yml']


@pytest.mark.parametrize('path', RULE_FILES, ids=os.path.basename)
def test_promtool_checks_rule_file(path):
    result = _run('check', 'rules', path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert 'SUCCESS' in result.stdout


@pytest.mark.parametrize('path', TEST_FILES, ids=os.path.basename)
def test_promtool_unit_tests_pass(path):
    result = _run('test', 'rules', path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert 'SUCCESS' in result.stdout


def test_every_rule_file_has_its_unit_tests():
    for path in RULE_FILES:
        name = os.path.basename(path)
        test = os.path.join(TESTS_DIR, name.replace('.yml', '_test.yml'))
        assert os.path.exists(test), f'{name} has no promtool unit tests ({test})'
        assert _load(test)['rule_files'] == ['../../../../roles/prometheus/files/rules/' + name]


def test_every_alert_fires_in_a_unit_test():
    fired = set()
    for path in TEST_FILES:
        for test in _load(path)['tests']:
            for case in test.get('alert_rule_test', []):
                if case.get('exp_alerts'):
                    fired.add(case['alertname'])
    missing = sorted({rule['alert'] for dummy, rule in _alerts()} - fired)
    assert not missing, f'alerts never seen firing in rules_tests/: {missing}'


def test_required_alerts_are_shipped():
    names = [rule['alert'] for dummy, rule in _alerts()]
    assert len(names) == len(set(names)), f'an alert name is used twice: {names}'
    missing = {name: what for name, what in REQUIRED_ALERTS.items() if name not in names}
    assert not missing, f'missing alerts: {missing}'


@pytest.mark.parametrize('name,rule', [(r['alert'], r) for dummy, r in _alerts()], ids=lambda v: v if isinstance(v, str) else '')
def test_alert_has_severity_summary_and_runbook(name, rule):
    assert rule['labels']['severity'] in ('warning', 'critical'), name
    assert rule['labels'].get('component'), name
    annotations = rule['annotations']
    for key in ('summary', 'description', 'runbook'):
        assert annotations.get(key, '').strip(), f'{name} has no {key} annotation'
    # One line (a folded scalar), so that it reads whole in a notification.
    assert '\n' not in annotations['runbook'].strip(), name


def test_no_rule_builds_on_kv_cache_metrics():
    # Recent llama-server builds dropped them: an alert on them would never fire again.
    for name, rule in _alerts():
        assert 'kv_cache' not in rule['expr'], f'{name} uses a KV-cache metric: {rule["expr"]}'


def test_promtool_refuses_a_broken_rule(tmp_path):
    # The check the role relies on before a rule file replaces the live one does fail.
    broken = tmp_path / 'broken.yml'
    broken.write_text('groups:\n  - name: broken\n    rules:\n      - alert: Broken\n'
                      '        expr: sum by (tier (up)\n', encoding='utf-8')
    result = _run('check', 'rules', str(broken))
    assert result.returncode != 0
    assert 'broken.yml' in result.stdout + result.stderr
