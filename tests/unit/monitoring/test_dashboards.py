# Copyright (c) 2026, multimodel.orchestration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The grafana role's provisioning files and dashboards, checked for their structure.

No Grafana server runs here: what Grafana reads is checked instead (the provisioning YAML the
templates render, every dashboard's JSON), every panel query is parsed by promtool, and
molecule/app_tier/tests/test_monitoring_dashboards.py runs each query against the real
Prometheus of the stack.
"""

import glob
import json
import os
import re
import shutil
import subprocess

import jinja2
import pytest
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
ROLE = os.path.join(ROOT, 'roles', 'grafana')
DASHBOARDS = sorted(glob.glob(os.path.join(ROLE, 'files', 'dashboards', '*.json')))
DATASOURCE_UID = 'mmo-prometheus'
PANEL_TYPES = {'timeseries', 'stat', 'gauge', 'table', 'bargauge', 'text', 'row'}
# A vector selector: metric name and its matchers. Every selector in a panel carries its
# matchers, so this finds them all (tests/unit and the molecule test rely on it).
SELECTOR = re.compile(r'([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}')
# What each dashboard must show (issue 12), as metric names its queries use.
REQUIRED_METRICS = {
    'model_tiers.json': ['up', 'llamacpp:prompt_tokens_total', 'llamacpp:tokens_predicted_total',
                         'llamacpp:requests_processing', 'llamacpp:requests_deferred',
                         'llamacpp:tokens_predicted_seconds_total', 'mmo_query_latency_seconds_bucket'],
    'backend.json': ['mmo_http_requests_total', 'mmo_query_latency_seconds_bucket', 'mmo_cache_hits_total',
                     'mmo_cache_misses_total', 'up'],
    'redis.json': ['redis_up', 'redis_memory_used_bytes', 'redis_memory_max_bytes'],
    'hosts.json': ['node_cpu_seconds_total', 'node_memory_MemAvailable_bytes', 'node_filesystem_avail_bytes'],
    'backups.json': ['mmo_backup_last_success_timestamp_seconds', 'mmo_backup_last_verified_timestamp_seconds',
                     'mmo_backup_verify_ok', 'mmo_backup_last_run_ok', 'mmo_backup_duration_seconds',
                     'mmo_backup_size_bytes'],
}


def _load(path):
    with open(path, encoding='utf-8') as handle:
        return json.load(handle)


def _targets(dashboard):
    for panel in dashboard['panels']:
        for target in panel.get('targets', []):
            yield panel, target


def _render(template, **variables):
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.filters['to_json'] = json.dumps
    env.filters['bool'] = bool
    env.tests['match'] = lambda value, pattern: re.match(pattern, value) is not None
    with open(os.path.join(ROLE, 'templates', template), encoding='utf-8') as handle:
        return env.from_string(handle.read()).render(ansible_managed='Ansible managed', **variables)


def test_the_role_ships_the_five_dashboards():
    names = sorted(os.path.basename(p) for p in DASHBOARDS)
    assert names == sorted(REQUIRED_METRICS)
    shipped = yaml.safe_load(open(os.path.join(ROLE, 'vars', 'main.yml'), encoding='utf-8'))['_grafana_dashboards']
    assert sorted(shipped) == names, 'vars/main.yml _grafana_dashboards must list every file of files/dashboards'


@pytest.mark.parametrize('path', DASHBOARDS, ids=os.path.basename)
def test_dashboard_file_is_stable(path):
    # Canonical JSON (sorted keys, two spaces), no database id and no version: the file is what
    # Grafana shows, and the role's copy rewrites it only when its bytes change.
    with open(path, encoding='utf-8') as handle:
        text = handle.read()
    dashboard = json.loads(text)
    assert text == json.dumps(dashboard, indent=2, sort_keys=True) + '\n'
    assert 'id' not in dashboard and 'version' not in dashboard
    assert dashboard['editable'] is False


def test_dashboard_uids_and_titles_are_unique():
    dashboards = [_load(p) for p in DASHBOARDS]
    uids = [d['uid'] for d in dashboards]
    titles = [d['title'] for d in dashboards]
    assert len(set(uids)) == len(uids) and len(set(titles)) == len(titles)
    for uid in uids:
        # Grafana's limit is 40 characters; the prefix keeps them apart from an operator's own.
        assert re.match(r'^mmo-[a-z0-9-]{1,36}$', uid), uid


@pytest.mark.parametrize('path', DASHBOARDS, ids=os.path.basename)
def test_dashboard_panels(path):
    dashboard = _load(path)
    assert dashboard['panels'], 'a dashboard without panels'
    ids = [panel['id'] for panel in dashboard['panels']]
    assert len(set(ids)) == len(ids), f'panel ids repeat: {ids}'
    for panel in dashboard['panels']:
        assert panel['type'] in PANEL_TYPES, panel['type']
        assert panel['title'].strip() and panel['description'].strip(), panel
        grid = panel['gridPos']
        assert grid['w'] > 0 and grid['h'] > 0 and grid['x'] + grid['w'] <= 24, panel['title']
        assert panel['datasource'] == {'type': 'prometheus', 'uid': DATASOURCE_UID}, panel['title']
        refs = [t['refId'] for t in panel['targets']]
        assert refs and len(set(refs)) == len(refs), panel['title']
    # No two panels overlap on the grid.
    cells = set()
    for panel in dashboard['panels']:
        grid = panel['gridPos']
        mine = {(x, y) for x in range(grid['x'], grid['x'] + grid['w']) for y in range(grid['y'], grid['y'] + grid['h'])}
        assert not cells & mine, f'{panel["title"]} overlaps another panel'
        cells |= mine


@pytest.mark.parametrize('path', DASHBOARDS, ids=os.path.basename)
def test_every_query_names_its_job(path):
    for panel, target in _targets(_load(path)):
        assert target['datasource'] == {'type': 'prometheus', 'uid': DATASOURCE_UID}, panel['title']
        selectors = SELECTOR.findall(target['expr'])
        assert selectors, f'{panel["title"]}: no selector with matchers in {target["expr"]}'
        for name, matchers in selectors:
            assert re.search(r'\bjob="[a-z_]+"', matchers), f'{panel["title"]}: {name}{{{matchers}}} has no job'


@pytest.mark.parametrize('path', DASHBOARDS, ids=os.path.basename)
def test_dashboard_shows_what_the_issue_asks(path):
    used = {name for dummy, target in _targets(_load(path)) for name, dummy in SELECTOR.findall(target['expr'])}
    missing = [m for m in REQUIRED_METRICS[os.path.basename(path)] if m not in used]
    assert not missing, f'{os.path.basename(path)} does not show {missing}'


def test_backend_dashboard_has_the_three_quantiles_per_tier():
    exprs = [t['expr'] for dummy, t in _targets(_load(os.path.join(ROLE, 'files', 'dashboards', 'backend.json')))]
    for quantile in ('0.5', '0.95', '0.99'):
        assert any(e.startswith(f'histogram_quantile({quantile}, sum by (tier, le)') for e in exprs), quantile


def test_no_query_builds_on_kv_cache_metrics():
    for path in DASHBOARDS:
        for dummy, target in _targets(_load(path)):
            assert 'kv_cache' not in target['expr']


def test_promtool_parses_every_query(tmp_path):
    # Each query as a recording rule: promtool check rules parses it as Prometheus would.
    promtool = shutil.which('promtool')
    if promtool is None:
        pytest.fail('promtool is not installed: it comes with the Debian package prometheus')
    rules = []
    for path in DASHBOARDS:
        for panel, target in _targets(_load(path)):
            expr = target['expr'].replace('$__rate_interval', '1m').replace('$__interval', '15s')
            assert '$' not in expr, f'{panel["title"]}: unknown Grafana variable in {expr}'
            rules.append({'record': f'mmo:check:{len(rules)}', 'expr': expr})
    rule_file = tmp_path / 'queries.yml'
    rule_file.write_text(yaml.safe_dump({'groups': [{'name': 'queries', 'rules': rules}]}), encoding='utf-8')
    result = subprocess.run([promtool, 'check', 'rules', str(rule_file)], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f'SUCCESS: {len(rules)} rules found' in result.stdout


def test_datasource_provisioning():
    rendered = yaml.safe_load(_render('datasources.yml.j2', grafana_prometheus_url='http://prometheus:9090',
                                      grafana_prometheus_scrape_interval='15s'))
    assert rendered['apiVersion'] == 1
    [source] = rendered['datasources']
    assert source['uid'] == DATASOURCE_UID and source['type'] == 'prometheus'
    assert source['url'] == 'http://prometheus:9090' and source['access'] == 'proxy'
    assert source['isDefault'] is True and source['editable'] is False


def test_dashboard_provider_provisioning():
    rendered = yaml.safe_load(_render('dashboards.yml.j2', _grafana_config_mount='/etc/mmo-grafana'))
    [provider] = rendered['providers']
    assert provider['type'] == 'file'
    assert provider['options']['path'] == '/etc/mmo-grafana/dashboards'
    # The files are the dashboards: the UI can neither save over them nor delete them.
    assert provider['allowUiUpdates'] is False and provider['disableDeletion'] is True


@pytest.mark.parametrize('root_url,sub_path', [('', False), ('https://ops.example.org/grafana/', True)])
def test_grafana_ini(root_url, sub_path):
    rendered = _render('grafana.ini.j2', _grafana_config_mount='/etc/mmo-grafana', grafana_root_url=root_url,
                       grafana_serve_from_sub_path=sub_path, grafana_admin_user='admin')
    sections, section = {}, None
    for line in rendered.splitlines():
        line = line.strip()
        if not line or line.startswith(';') or line.startswith('#'):
            continue
        if line.startswith('['):
            section = sections.setdefault(line.strip('[]'), {})
            continue
        key, value = (part.strip() for part in line.split('=', 1))
        section[key] = value
    assert sections['auth.anonymous']['enabled'] == 'false'
    assert sections['users']['allow_sign_up'] == 'false'
    # The password comes from the root-only file, never from the configuration text.
    assert sections['security']['admin_password'] == '$__file{/etc/mmo-grafana/admin_password}'
    assert sections['paths']['provisioning'] == '/etc/mmo-grafana/provisioning'
    assert sections['server']['serve_from_sub_path'] == str(sub_path).lower()
    assert sections['security']['cookie_secure'] == str(bool(root_url)).lower()
    if root_url:
        assert sections['server']['root_url'] == root_url
