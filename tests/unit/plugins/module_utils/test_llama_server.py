# Copyright (c) 2026, multimodel.orchestration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit tests of the llama-server probing logic against real local HTTP servers."""

import json
import time

import pytest

from ansible_collections.multimodel.orchestration.plugins.module_utils.llama_server import (
    ProbeOptions,
    failure_summary,
    normalize_endpoints,
    probe_endpoint,
    probe_endpoints,
)
from support.servers import BlackHole, RecordingProxy, started


@pytest.fixture
def black_hole():
    """Factory: black_hole() -> a BlackHole (connections taken, never answered)."""
    with started(BlackHole) as start:
        yield start


@pytest.fixture
def recording_proxy(monkeypatch):
    """A RecordingProxy set as http_proxy and https_proxy (no no_proxy) for the test."""
    with started(RecordingProxy) as start:
        proxy = start()
        for name in ('no_proxy', 'NO_PROXY', 'all_proxy', 'ALL_PROXY', 'HTTP_PROXY', 'HTTPS_PROXY'):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv('http_proxy', proxy.url)
        monkeypatch.setenv('https_proxy', proxy.url)
        yield proxy


def options(**kwargs):
    # Short intervals keep the retry tests fast; never go through a proxy to 127.0.0.1.
    kwargs.setdefault('interval', 0.05)
    kwargs.setdefault('request_timeout', 2)
    kwargs.setdefault('use_proxy', False)
    return ProbeOptions(**kwargs)


def endpoint(url, alias=None, name='llm', api_key=None):
    return normalize_endpoints([{'name': name, 'url': url, 'alias': alias, 'api_key': api_key}])[0]


# --- input validation -------------------------------------------------------------------

def test_normalize_defaults_name_and_strips_trailing_slash():
    result = normalize_endpoints([{'url': 'http://127.0.0.1:8080/'}])
    assert result == [{'name': 'http://127.0.0.1:8080/', 'url': 'http://127.0.0.1:8080',
                       'alias': None, 'api_key': None}]


def test_normalize_keeps_path_prefix():
    assert normalize_endpoints([{'url': 'https://proxy/llm/q4/'}])[0]['url'] == 'https://proxy/llm/q4'


@pytest.mark.parametrize('entries, message', [
    ([], 'at least one'),
    ([{'url': 'ftp://127.0.0.1:8080'}], "'ftp://127.0.0.1:8080' must use http:// or https://, not 'ftp'"),
    ([{'url': '127.0.0.1:8080'}], 'must use http:// or https://'),
    ([{'url': 'http://:8080'}], "'http://:8080' has no host"),
    ([{'url': 'http://h:99999'}], "'http://h:99999' is not valid"),
    ([{'url': 'http://h:8080/?x=1'}], 'must not have a query'),
    ([{'name': 'a'}], 'endpoints[1] has no url'),
    (['http://h:8080'], 'must be a dict'),
    ([{'name': 'A', 'url': 'http://h:1'}, {'name': 'B', 'url': 'http://h:2'}, {'name': 'A', 'url': 'http://h:3'}],
     "duplicate endpoint name 'A' (endpoints[1] and endpoints[3])"),
    ([{'url': 'http://h:1'}, {'url': 'http://h:1'}], "duplicate endpoint name 'http://h:1'"),
])
def test_normalize_rejects_bad_input(entries, message):
    with pytest.raises(ValueError) as info:
        normalize_endpoints(entries)
    assert message in str(info.value)


# --- single endpoint ----------------------------------------------------------------------

def test_healthy_endpoint(fake_llama_server):
    server = fake_llama_server(alias='tiny')
    result = probe_endpoint(endpoint(server.url, alias='tiny'), options(), timeout=5)
    assert result['healthy'] is True
    assert result['status'] == 'ok'
    assert result['reason'] is None
    assert result['models'] == ['tiny']
    assert result['attempts'] == 1
    assert result['latency_ms'] is None and result['slots_total'] is None
    assert server.paths() == ['/health', '/v1/models']


def test_loading_then_healthy(fake_llama_server):
    server = fake_llama_server(loading_requests=3)
    result = probe_endpoint(endpoint(server.url, alias='tiny'), options(interval=0.1), timeout=10)
    assert result['healthy'] is True
    assert result['attempts'] == 4
    # Three 503s, each followed by a 0.1 s pause.
    assert result['elapsed_s'] >= 0.3
    # While loading only /health is asked.
    assert server.paths() == ['/health'] * 4 + ['/v1/models']


def test_still_loading_at_deadline(fake_llama_server):
    server = fake_llama_server(loading_s=60)
    result = probe_endpoint(endpoint(server.url), options(interval=0.1), timeout=0.6)
    assert result['healthy'] is False
    assert result['reason'] == 'loading'
    assert result['status'] == 'loading'
    assert result['detail'].startswith('still loading after ')
    assert 'Loading model' in result['detail']
    assert result['attempts'] >= 3
    assert 0.6 <= result['elapsed_s'] < 2.5


def test_refused(refused_url):
    result = probe_endpoint(endpoint(refused_url), options(interval=0.1), timeout=0.5)
    assert result['reason'] == 'refused'
    assert result['status'] == 'unreachable'
    assert result['detail'] is None
    # Refused is retried: the server may still be starting.
    assert result['attempts'] >= 2
    assert failure_summary(result) == 'llm (%s): refused' % refused_url


def test_unauthorized_fails_fast(fake_llama_server):
    server = fake_llama_server(api_key='s3cret')
    result = probe_endpoint(endpoint(server.url), options(api_key='wrong'), timeout=30)
    assert result['reason'] == 'unauthorized'
    assert result['attempts'] == 1
    assert result['elapsed_s'] < 5
    assert 'Invalid API Key' in result['detail']


def test_api_key_sent_as_bearer(fake_llama_server):
    server = fake_llama_server(api_key='s3cret')
    result = probe_endpoint(endpoint(server.url), options(api_key='s3cret', generate=True, check_slots=True),
                            timeout=5)
    assert result['healthy'] is True
    assert {r.authorization for r in server.requests} == {'Bearer s3cret'}
    # The key is sent, never reported.
    assert 's3cret' not in repr(result)


def test_endpoint_api_key_overrides_global(fake_llama_server):
    server = fake_llama_server(api_key='per-endpoint')
    result = probe_endpoint(endpoint(server.url, api_key='per-endpoint'), options(api_key='global'), timeout=5)
    assert result['healthy'] is True


def test_missing_api_key(fake_llama_server):
    server = fake_llama_server(api_key='s3cret')
    result = probe_endpoint(endpoint(server.url), options(), timeout=5)
    assert result['reason'] == 'unauthorized'
    # /health is open with --api-key, so the 401 came from /v1/models.
    assert result['detail'].startswith('/v1/models')
    assert server.requests[0].authorization is None


def test_wrong_model(fake_llama_server):
    server = fake_llama_server(alias='other')
    result = probe_endpoint(endpoint(server.url, alias='q4', name='Q4_DEEP'), options(), timeout=30)
    assert result['reason'] == 'wrong_model'
    assert result['status'] == 'error'
    assert result['models'] == ['other']
    assert result['attempts'] == 1
    assert failure_summary(result) == "Q4_DEEP (%s): wrong_model (expected 'q4', served ['other'])" % server.url


def test_second_alias_is_served(fake_llama_server):
    # llama-server --alias q4,q4-deep lists id "q4" with aliases ["q4", "q4-deep"].
    server = fake_llama_server(alias='q4', aliases=['q4', 'q4-deep'])
    result = probe_endpoint(endpoint(server.url, alias='q4-deep'), options(), timeout=5)
    assert result['healthy'] is True
    assert result['models'] == ['q4', 'q4-deep']


def test_any_model_accepted_without_alias(fake_llama_server):
    server = fake_llama_server(alias='/models/tiny.gguf')
    result = probe_endpoint(endpoint(server.url), options(), timeout=5)
    assert result['healthy'] and result['models'] == ['/models/tiny.gguf']


def test_slow_response_times_out(fake_llama_server):
    server = fake_llama_server(delay=1.5)
    result = probe_endpoint(endpoint(server.url), options(request_timeout=0.3), timeout=0.8)
    assert result['reason'] == 'timeout'
    assert result['status'] == 'unreachable'
    assert 'GET /health' in result['detail']
    assert result['elapsed_s'] < 1.5


def test_http_404_is_permanent(fake_llama_server):
    server = fake_llama_server(override={'/v1/models': (404, {'error': {'code': 404, 'message': 'File Not Found'}})})
    result = probe_endpoint(endpoint(server.url), options(), timeout=30)
    assert result['reason'] == 'http_404'
    assert result['detail'] == '/v1/models: File Not Found'
    assert result['attempts'] == 1


def test_redirect_not_followed(fake_llama_server):
    # Following it would hand the API key to whatever the Location names.
    elsewhere = fake_llama_server()
    server = fake_llama_server(override={'/health': (302, {}, {'Location': elsewhere.url + '/health'})})
    result = probe_endpoint(endpoint(server.url), options(api_key='k'), timeout=30)
    assert (result['reason'], result['attempts']) == ('http_302', 1)
    assert server.paths() == ['/health']
    assert elsewhere.requests == []


@pytest.mark.parametrize('override, reason, detail', [
    ({'/v1/models': (429, {'error': {'message': 'busy'}})}, 'http_429', '/v1/models: busy'),
    ({'/health': (500, b'internal error')}, 'http_500', '/health: internal error'),
], ids=['http_429', 'http_500'])
def test_http_429_and_5xx_are_retried(fake_llama_server, override, reason, detail):
    server = fake_llama_server(override=override)
    result = probe_endpoint(endpoint(server.url), options(interval=0.1), timeout=0.5)
    assert result['reason'] == reason
    assert result['detail'] == detail
    assert result['attempts'] >= 2


def test_non_json_body_is_bad_response(fake_llama_server):
    server = fake_llama_server(override={'/health': (200, b'<html>ok</html>')})
    result = probe_endpoint(endpoint(server.url), options(interval=0.2), timeout=1)
    assert result['reason'] == 'bad_response'
    assert 'not JSON' in result['detail']


def test_models_without_data_list_is_bad_response(fake_llama_server):
    server = fake_llama_server(override={'/v1/models': (200, {'object': 'list'})})
    result = probe_endpoint(endpoint(server.url), options(interval=0.2), timeout=1)
    assert result['reason'] == 'bad_response'


def test_not_http_is_bad_response(raw_server):
    server = raw_server(b'SSH-2.0-OpenSSH_9.2\r\n')
    result = probe_endpoint(endpoint(server.url), options(interval=0.2), timeout=1)
    assert result['reason'] == 'bad_response'
    assert 'BadStatusLine' in result['detail']


def test_dropped_connection(raw_server):
    server = raw_server(b'')
    result = probe_endpoint(endpoint(server.url), options(interval=0.2), timeout=1)
    assert result['reason'] == 'connection_error'
    assert result['status'] == 'unreachable'


def test_https_self_signed_without_validation(fake_llama_server, self_signed_cert):
    server = fake_llama_server(tls=self_signed_cert)
    result = probe_endpoint(endpoint(server.url), options(validate_certs=False), timeout=5)
    assert result['healthy'] is True


def test_https_untrusted_certificate_fails_fast(fake_llama_server, self_signed_cert):
    server = fake_llama_server(tls=self_signed_cert)
    result = probe_endpoint(endpoint(server.url), options(), timeout=30)
    assert (result['reason'], result['attempts']) == ('connection_error', 1)
    assert 'CERTIFICATE_VERIFY_FAILED' in result['detail']


# --- generation and slots -----------------------------------------------------------------

def test_generation_uses_server_timings(fake_llama_server):
    server = fake_llama_server(alias='tiny')
    result = probe_endpoint(endpoint(server.url, alias='tiny'), options(generate=True, max_tokens=4, prompt='Hi'),
                            timeout=5)
    assert result['healthy'] is True
    assert result['tokens_generated'] == 4
    assert result['tokens_per_second'] == 800.0
    assert result['latency_ms'] > 0
    request = server.requests[-1]
    assert (request.method, request.path) == ('POST', '/v1/completions')
    sent = json.loads(request.body.decode('utf-8'))
    assert sent['prompt'] == 'Hi' and sent['max_tokens'] == 4 and sent['model'] == 'tiny'
    assert sent['ignore_eos'] is True and sent['stream'] is False


def test_generation_without_timings_uses_latency(fake_llama_server):
    server = fake_llama_server(timings=False, delay=0.05)
    result = probe_endpoint(endpoint(server.url), options(generate=True, max_tokens=8), timeout=5)
    assert result['tokens_generated'] == 8
    # 8 tokens in at least 50 ms: at most 160 tokens/s.
    assert 0 < result['tokens_per_second'] <= 160
    assert result['latency_ms'] >= 50


def test_generation_bad_response(fake_llama_server):
    server = fake_llama_server(override={'/v1/completions': (200, {'choices': []})})
    result = probe_endpoint(endpoint(server.url), options(generate=True, interval=0.2), timeout=1)
    assert result['reason'] == 'bad_response'
    assert 'choices' in result['detail']
    # What was learnt before the failure is kept.
    assert result['models'] == ['tiny']


def test_slots_saturation(fake_llama_server):
    slots = [{'id': i, 'n_ctx': 512, 'is_processing': i < 3} for i in range(4)]
    server = fake_llama_server(slots=slots)
    result = probe_endpoint(endpoint(server.url), options(check_slots=True), timeout=5)
    assert (result['slots_total'], result['slots_busy']) == (4, 3)


def test_slots_old_state_format(fake_llama_server):
    server = fake_llama_server(slots=[{'id': 0, 'state': 1}, {'id': 1, 'state': 0}])
    result = probe_endpoint(endpoint(server.url), options(check_slots=True), timeout=5)
    assert (result['slots_total'], result['slots_busy']) == (2, 1)


def test_slots_disabled_is_not_a_failure(fake_llama_server):
    server = fake_llama_server()
    server.slots = None
    result = probe_endpoint(endpoint(server.url), options(check_slots=True), timeout=5)
    assert result['healthy'] is True
    assert result['slots_total'] is None
    assert result['detail'].startswith('/slots not available (HTTP 501)')


# --- many endpoints -----------------------------------------------------------------------

def test_endpoints_probed_concurrently(fake_llama_server):
    # Each request takes 0.5 s, so each endpoint needs ~1 s (/health + /v1/models).
    servers = [fake_llama_server(delay=0.5) for dummy in range(4)]
    endpoints = normalize_endpoints([{'name': 'e%d' % i, 'url': s.url} for i, s in enumerate(servers)])
    results = probe_endpoints(endpoints, options(), timeout=10)
    assert [r['name'] for r in results] == ['e0', 'e1', 'e2', 'e3']
    assert all(r['healthy'] for r in results)
    # Overlap: every endpoint's first request started before any endpoint's last one ended,
    # so all four were being probed at the same time.
    first_starts = [min(r.start for r in s.requests) for s in servers]
    last_ends = [max(r.end for r in s.requests) for s in servers]
    assert max(first_starts) < min(last_ends)
    # Sequential probing would take >= 4 s.
    assert max(last_ends) - min(first_starts) < 3


def test_mixed_results_keep_order(fake_llama_server, refused_url):
    good = fake_llama_server(alias='q3')
    wrong = fake_llama_server(alias='other')
    endpoints = normalize_endpoints([
        {'name': 'Q3_SYNTH', 'url': good.url, 'alias': 'q3'},
        {'name': 'DOWN', 'url': refused_url},
        {'name': 'Q4_DEEP', 'url': wrong.url, 'alias': 'q4'},
    ])
    results = probe_endpoints(endpoints, options(interval=0.1), timeout=0.5)
    assert [(r['name'], r['healthy'], r['reason']) for r in results] == [
        ('Q3_SYNTH', True, None), ('DOWN', False, 'refused'), ('Q4_DEEP', False, 'wrong_model')]


def test_no_endpoints():
    assert probe_endpoints([], options(), timeout=1) == []


def test_one_deadline_for_every_endpoint_past_the_worker_pool(black_hole):
    # 40 hung servers, more than one pool of threads: every endpoint is judged against the
    # one deadline set when the probe started, so the probe takes about `timeout`, not a
    # fresh `timeout` for each endpoint that waited for a thread.
    hole = black_hole()
    endpoints = normalize_endpoints([{'name': 'e%d' % i, 'url': hole.url} for i in range(40)])
    started_at = time.monotonic()
    results = probe_endpoints(endpoints, options(request_timeout=0.4, interval=0.1), timeout=1.5)
    elapsed = time.monotonic() - started_at
    assert [r['reason'] for r in results] == ['timeout'] * 40
    # The last request may still take its minimum 0.5 s past the deadline.
    assert elapsed < 1.5 + 0.9, 'the probe took %.2f s for a timeout of 1.5 s' % elapsed
    assert max(r['elapsed_s'] for r in results) < 1.5 + 0.9


def test_endpoints_past_the_first_32_are_still_probed(black_hole, fake_llama_server):
    hole = black_hole()
    good = fake_llama_server(alias='q2')
    entries = [{'name': 'hung%d' % i, 'url': hole.url} for i in range(36)]
    entries += [{'name': 'ok%d' % i, 'url': good.url, 'alias': 'q2'} for i in range(4)]
    results = probe_endpoints(normalize_endpoints(entries), options(request_timeout=0.4), timeout=1)
    assert [r['name'] for r in results if r['healthy']] == ['ok0', 'ok1', 'ok2', 'ok3']


def test_an_endpoint_past_the_deadline_gets_one_attempt(fake_llama_server):
    server = fake_llama_server(loading_s=60)
    result = probe_endpoint(endpoint(server.url), options(interval=0.1), timeout=5,
                            deadline=time.monotonic() - 1)
    assert (result['reason'], result['attempts']) == ('loading', 1)
    assert result['elapsed_s'] < 1


# --- proxies: the bearer key never goes to a proxy that could read it ----------------------

def test_loopback_is_never_proxied(fake_llama_server, recording_proxy):
    server = fake_llama_server(api_key='s3cret')
    result = probe_endpoint(endpoint(server.url), options(api_key='s3cret', use_proxy=True), timeout=5)
    assert result['healthy'] is True
    assert recording_proxy.requests == []
    assert {r.authorization for r in server.requests} == {'Bearer s3cret'}


@pytest.mark.parametrize('url', ['http://localhost:%d', 'http://[::1]:%d', 'http://127.0.0.2:%d'])
def test_every_loopback_name_is_never_proxied(recording_proxy, url):
    result = probe_endpoint(endpoint(url % 9), options(api_key='s3cret', use_proxy=True), timeout=0.3)
    assert result['status'] == 'unreachable'
    assert recording_proxy.requests == []


def test_plain_http_with_a_key_is_never_proxied(recording_proxy):
    # A proxy of a plain http request reads every header: the key would be handed to it.
    result = probe_endpoint(endpoint('http://192.0.2.1:8080'),
                            options(api_key='s3cret', use_proxy=True, request_timeout=0.3), timeout=0.3)
    assert result['status'] == 'unreachable'
    assert recording_proxy.requests == []


def test_plain_http_without_a_key_follows_the_proxy(recording_proxy):
    result = probe_endpoint(endpoint('http://192.0.2.1:8080'), options(use_proxy=True), timeout=0.3)
    assert result['reason'] == 'http_502'
    assert recording_proxy.requests[0] == ('GET http://192.0.2.1:8080/health HTTP/1.1', None)


def test_https_with_a_key_goes_through_the_proxy_only_as_a_tunnel(recording_proxy):
    result = probe_endpoint(endpoint('https://192.0.2.1:8443'), options(api_key='s3cret', use_proxy=True),
                            timeout=0.3)
    assert result['healthy'] is False
    # CONNECT only: the key would travel inside TLS, end to end.
    assert recording_proxy.requests[0] == ('CONNECT 192.0.2.1:8443 HTTP/1.0', None)
    assert all('s3cret' not in repr(request) for request in recording_proxy.requests)


def test_use_proxy_false_never_proxies(recording_proxy):
    result = probe_endpoint(endpoint('http://192.0.2.1:8080'), options(request_timeout=0.3), timeout=0.3)
    assert result['status'] == 'unreachable'
    assert recording_proxy.requests == []
