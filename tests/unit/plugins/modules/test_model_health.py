# Copyright (c) 2026, multimodel.orchestration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit tests of the model_health module: main() with module args, against local servers."""


import pytest


from ansible_collections.multimodel.orchestration.plugins.modules import model_health
from support.modules import run_main

RESULT_KEYS = {'name', 'url', 'alias', 'healthy', 'status', 'reason', 'detail', 'models', 'latency_ms',
               'tokens_per_second', 'tokens_generated', 'slots_total', 'slots_busy', 'elapsed_s', 'attempts'}


def run_module_raw(capsys, args):
    """Run main() with args; return (exit code, parsed JSON, raw stdout)."""
    args = dict(args)
    args.setdefault('use_proxy', False)
    args.setdefault('interval', 0.1)
    return run_main(capsys, model_health.main, args)


def run_module(capsys, args):
    """Run main() with args; return (exit code, parsed JSON)."""
    code, result, dummy = run_module_raw(capsys, args)
    return code, result


def test_all_healthy(capsys, fake_llama_server):
    q3 = fake_llama_server(alias='q3')
    q4 = fake_llama_server(alias='q4')
    code, result = run_module(capsys, {'endpoints': [
        {'name': 'Q3_SYNTH', 'url': q3.url, 'alias': 'q3'},
        {'name': 'Q4_DEEP', 'url': q4.url + '/', 'alias': 'q4'},
    ]})
    assert code == 0
    assert result['changed'] is False
    assert 'failed' not in result
    assert result['msg'] == 'all 2 llama-server endpoints healthy'
    assert result['healthy'] == ['Q3_SYNTH', 'Q4_DEEP']
    assert result['unhealthy'] == []
    assert [set(r) for r in result['endpoints']] == [RESULT_KEYS, RESULT_KEYS]
    assert result['endpoints'][1]['url'] == q4.url
    assert result['endpoints'][0]['models'] == ['q3']


def test_failure_names_each_unhealthy_instance(capsys, fake_llama_server, refused_url):
    good = fake_llama_server(alias='q1')
    wrong = fake_llama_server(alias='other')
    loading = fake_llama_server(loading_s=60)
    code, result = run_module(capsys, {
        'endpoints': [
            {'name': 'Q1_FAST', 'url': good.url, 'alias': 'q1'},
            {'name': 'Q3_SYNTH', 'url': refused_url, 'alias': 'q3'},
            {'name': 'Q4_DEEP', 'url': wrong.url, 'alias': 'q4'},
            {'name': 'Q5_BIG', 'url': loading.url},
        ],
        'timeout': 1,
    })
    assert code == 1
    assert result['failed'] is True
    assert result['changed'] is False
    assert result['msg'].startswith(
        "3 of 4 llama-server endpoints unhealthy: "
        "Q3_SYNTH (%s): refused; "
        "Q4_DEEP (%s): wrong_model (expected 'q4', served ['other']); "
        "Q5_BIG (%s): loading (still loading after " % (refused_url, wrong.url, loading.url))
    assert result['healthy'] == ['Q1_FAST']
    assert result['unhealthy'] == ['Q3_SYNTH', 'Q4_DEEP', 'Q5_BIG']
    reasons = {r['name']: (r['status'], r['reason']) for r in result['endpoints']}
    assert reasons == {'Q1_FAST': ('ok', None), 'Q3_SYNTH': ('unreachable', 'refused'),
                       'Q4_DEEP': ('error', 'wrong_model'), 'Q5_BIG': ('loading', 'loading')}


def test_fail_on_unhealthy_false(capsys, refused_url):
    code, result = run_module(capsys, {
        'endpoints': [{'name': 'DOWN', 'url': refused_url}], 'timeout': 0.3, 'fail_on_unhealthy': False})
    assert code == 0
    assert 'failed' not in result
    assert result['unhealthy'] == ['DOWN']
    assert result['msg'] == '1 of 1 llama-server endpoints unhealthy: DOWN (%s): refused' % refused_url


def test_check_mode_probes_the_same(capsys, fake_llama_server):
    server = fake_llama_server(alias='tiny')
    code, result = run_module(capsys, {
        'endpoints': [{'name': 'tiny', 'url': server.url, 'alias': 'tiny'}],
        'generate': True, 'check_slots': True, '_ansible_check_mode': True})
    assert code == 0
    assert result['changed'] is False
    assert result['healthy'] == ['tiny']
    # Check mode does the real probing: it only reads.
    assert server.paths() == ['/health', '/v1/models', '/v1/completions', '/slots']
    assert result['endpoints'][0]['tokens_generated'] == 8


def test_generation_and_slots_reported(capsys, fake_llama_server):
    server = fake_llama_server(slots=[{'id': 0, 'is_processing': True}, {'id': 1, 'is_processing': False}])
    code, result = run_module(capsys, {
        'endpoints': [{'url': server.url}], 'generate': True, 'max_tokens': 3, 'prompt': 'Ping',
        'check_slots': True})
    assert code == 0
    ep = result['endpoints'][0]
    assert ep['name'] == server.url
    assert (ep['tokens_generated'], ep['tokens_per_second']) == (3, 800.0)
    assert ep['latency_ms'] > 0
    assert (ep['slots_total'], ep['slots_busy']) == (2, 1)


KEY = 'sk-very-secret-0123456789'


def test_api_key_sent_but_never_output(capsys, fake_llama_server):
    server = fake_llama_server(api_key=KEY)
    code, result, out = run_module_raw(capsys, {
        'endpoints': [{'name': 'secured', 'url': server.url}], 'api_key': KEY,
        'generate': True, 'check_slots': True})
    assert code == 0, result['msg']
    assert {r.authorization for r in server.requests} == {'Bearer ' + KEY}
    assert KEY not in out


def test_per_endpoint_api_key_never_output(capsys, fake_llama_server):
    server = fake_llama_server(api_key=KEY)
    other = fake_llama_server(api_key='other-key')
    code, result, out = run_module_raw(capsys, {
        'endpoints': [{'name': 'a', 'url': server.url, 'api_key': KEY}, {'name': 'b', 'url': other.url}],
        'api_key': 'other-key'})
    assert code == 0, result['msg']
    assert KEY not in out and 'other-key' not in out


def test_wrong_api_key_fails_without_leaking(capsys, fake_llama_server):
    server = fake_llama_server(api_key='right-key')
    code, result, out = run_module_raw(capsys, {
        'endpoints': [{'name': 'secured', 'url': server.url}], 'api_key': KEY, 'timeout': 30})
    assert code == 1
    assert result['msg'] == ('1 of 1 llama-server endpoints unhealthy: secured (%s): unauthorized '
                             '(/v1/models: Invalid API Key)' % server.url)
    assert result['endpoints'][0]['attempts'] == 1
    assert KEY not in out


@pytest.mark.parametrize('args, message', [
    ({'endpoints': [{'url': 'ftp://127.0.0.1:8080'}]},
     "endpoints[1] url 'ftp://127.0.0.1:8080' must use http:// or https://, not 'ftp'"),
    ({'endpoints': [{'name': 'X', 'url': 'http://127.0.0.1:1'}, {'name': 'X', 'url': 'http://127.0.0.1:2'}]},
     "duplicate endpoint name 'X' (endpoints[1] and endpoints[2])"),
    ({'endpoints': [{'url': 'http://127.0.0.1:1'}], 'timeout': 0}, 'timeout must be greater than 0, got 0.0'),
    ({'endpoints': [{'url': 'http://127.0.0.1:1'}], 'request_timeout': -1},
     'request_timeout must be greater than 0, got -1.0'),
    ({'endpoints': [{'url': 'http://127.0.0.1:1'}], 'interval': -1}, 'interval must not be negative, got -1.0'),
    ({'endpoints': [{'url': 'http://127.0.0.1:1'}], 'max_tokens': 0}, 'max_tokens must be at least 1, got 0'),
    ({'endpoints': []}, 'endpoints must list at least one llama-server endpoint'),
    ({'endpoints': [{'name': 'nourl'}]}, 'missing required arguments: url'),
])
def test_invalid_input(capsys, args, message):
    code, result = run_module(capsys, args)
    assert code == 1
    assert result['failed'] is True
    assert message in result['msg']
