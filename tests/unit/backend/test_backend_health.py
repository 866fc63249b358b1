# Copyright (c) 2026, multimodel.orchestration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""GET /health, /health/ready and /metrics."""

import re


def test_liveness_touches_no_dependency(servers, backend, tiers):
    dead = servers.refused()
    running = backend(tiers([dead], [dead], [dead]), redis_url='redis://:pw@127.0.0.1:1/0')
    reply = running.http.get('/health')
    assert reply.status_code == 200 and reply.json() == {'status': 'ok'}


def test_ready_when_redis_and_one_instance_per_level_answer(servers, backend, tiers):
    ok = servers.llama('ok')
    loading = servers.llama('loading', state='loading')
    running = backend(tiers([loading.url, ok.url], [ok.url], [ok.url]))
    reply = running.http.get('/health/ready')
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body['status'] == 'ready' and body['down'] == [] and body['redis'] == 'ok'
    assert body['tiers']['simple'] == {'Q2_FAST_1': 'HTTP 503: Loading model', 'Q2_FAST_2': 'ok'}
    assert [r.path for r in ok.requests] == ['/health'] * 3  # the health probe, not a completion


def test_not_ready_names_the_level_that_is_down(servers, backend, tiers):
    ok = servers.llama('ok')
    loading = servers.llama('loading', state='loading')
    running = backend(tiers([ok.url], [loading.url], [servers.refused(), loading.url]))
    reply = running.http.get('/health/ready')
    assert reply.status_code == 503
    body = reply.json()
    assert body['status'] == 'unavailable'
    assert body['down'] == ['tier moderate', 'tier complex']
    assert body['tiers']['complex']['Q4_DEEP_1'].startswith('connection failed')
    assert body['tiers']['complex']['Q4_DEEP_2'] == 'HTTP 503: Loading model'


def test_not_ready_when_redis_is_down_or_the_password_is_wrong(servers, backend, tiers, redis_db):
    ok = servers.llama('ok')
    urls = tiers([ok.url], [ok.url], [ok.url])
    dead_port = int(servers.refused().rsplit(':', 1)[1])
    for url, error in ((f'redis://:{redis_db.password}@127.0.0.1:{dead_port}/0', 'ConnectionError'),
                       (f'redis://:not-the-password@127.0.0.1:{redis_db.port}/0', 'AuthenticationError')):
        reply = backend(urls, redis_url=url).http.get('/health/ready')
        assert reply.status_code == 503
        body = reply.json()
        assert body['down'] == ['redis'] and body['redis'].startswith(error)
        assert 'not-the-password' not in reply.text and redis_db.password not in reply.text


def test_readiness_sends_the_api_key(servers, backend, tiers):
    keyed = servers.llama('keyed', api_key='k')
    running = backend(tiers([keyed.url], [keyed.url], [keyed.url]), llama_api_key='k')
    assert running.http.get('/health/ready').status_code == 200
    assert all(r.authorization == 'Bearer k' for r in keyed.requests)


def test_metrics(stack):
    stack.backend.query('hello', mode='simple')
    stack.backend.query('hello', mode='simple')
    stack.backend.http.post('/api/query', json={})
    stack.backend.http.get('/health')
    stack.backend.http.get('/no/such/page')
    reply = stack.backend.http.get('/metrics')
    assert reply.status_code == 200
    assert reply.headers['content-type'].startswith('text/plain')
    text = reply.text
    for line in ('mmo_http_requests_total{endpoint="/api/query",method="POST",status="200"} 2.0',
                 'mmo_http_requests_total{endpoint="/api/query",method="POST",status="400"} 1.0',
                 'mmo_http_requests_total{endpoint="/health",method="GET",status="200"} 1.0',
                 'mmo_http_requests_total{endpoint="unmatched",method="GET",status="404"} 1.0',
                 'mmo_query_latency_seconds_count{cached="false",tier="simple"} 1.0',
                 'mmo_query_latency_seconds_count{cached="true",tier="simple"} 1.0',
                 'mmo_cache_hits_total 1.0',
                 'mmo_cache_misses_total 1.0'):
        assert line in text, line
    assert re.search(r'mmo_query_latency_seconds_bucket\{cached="false",le="5.0",tier="simple"\} 1.0', text)
    for name in ('mmo_upstream_errors', 'mmo_upstream_failovers', 'mmo_ws_queries', 'mmo_cache_errors'):
        assert f'# TYPE {name}_total counter' in text
