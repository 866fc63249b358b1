# Copyright (c) 2026, multimodel.orchestration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""POST /api/query: routing, round-robin, failover, errors and the Redis answer cache."""

import dataclasses
import json
import socket

import pytest

from multimodel_backend import llama

CACHE_KEYS = 'mmo:v2:query:*'


class Unreachable:
    """A loopback port whose listen queue is full: connecting times out (a host that drops
    packets), which is a connect timeout, not a refused connection nor a read timeout."""

    def __init__(self):
        self.listener = socket.socket()
        self.listener.bind(('127.0.0.1', 0))
        self.listener.listen(0)
        self.url = 'http://127.0.0.1:%d' % self.listener.getsockname()[1]
        self.fillers = []
        for dummy in range(3):  # backlog 0 takes one; the SYNs of the others are dropped
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(self.listener.getsockname())
            self.fillers.append(filler)

    def close(self):
        for sock in [self.listener] + self.fillers:
            sock.close()


@pytest.fixture
def unreachable():
    server = Unreachable()
    yield server
    server.close()


def stored(redis_db, wait_until, count=1):
    """The cache keys once count of them are written (the cache writes in the background)."""
    wait_until(lambda: len(redis_db.client.keys(CACHE_KEYS)) >= count, what=f'{count} cache entries')
    return redis_db.client.keys(CACHE_KEYS)


def test_answer_shape_and_upstream_request(stack):
    reply = stack.backend.query('What is the capital of France', mode='simple', max_tokens=32)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body['answer'] == 'Q2_FAST_1 says: Hello from Q2_FAST_1.'
    assert body['tier'] == 'simple' and body['instance'] == 'Q2_FAST_1'
    assert body['cached'] is False and body['sources'] == []
    assert isinstance(body['latency_ms'], int) and body['latency_ms'] >= 0
    # What llama-server got: an OpenAI chat request for the tier's alias, not streamed.
    call = stack.fast1.chats()[0]
    request, headers = call.json, call.headers
    assert request['model'] == 'q2-fast' and request['max_tokens'] == 32 and request['stream'] is False
    assert request['messages'][0]['role'] == 'system'
    assert request['messages'][-1] == {'role': 'user', 'content': 'What is the capital of France'}
    assert 'Authorization' not in headers  # no MMO_LLAMA_API_KEY, no header


@pytest.mark.parametrize('mode, query, tier, server', [
    ('simple', 'Compare the architecture trade-offs in depth', 'simple', 'fast1'),
    ('moderate', 'hi', 'moderate', 'synth'),
    ('complex', 'hi', 'complex', 'deep'),
    ('auto', 'What time is it in Paris', 'simple', 'fast1'),
    ('auto', 'Explain how a hash map works', 'moderate', 'synth'),
    ('auto', 'Compare B-trees and LSM trees for write-heavy workloads', 'complex', 'deep'),
])
def test_routes_by_mode_and_heuristic(stack, mode, query, tier, server):
    body = stack.backend.query(query, mode=mode).json()
    assert body['tier'] == tier
    assert len(getattr(stack, server).chats()) == 1


def test_default_mode_is_auto_and_default_max_tokens_from_settings(servers, backend, tiers):
    fast = servers.llama('Q2_FAST_1')
    running = backend(tiers([fast.url], [servers.refused()], [servers.refused()]), max_tokens=77)
    body = running.query('ping').json()
    assert body['tier'] == 'simple'
    assert fast.chats()[0].json['max_tokens'] == 77


def test_round_robin_over_the_tier(stack):
    instances = [stack.backend.query(f'question {n}', mode='simple').json()['instance'] for n in range(4)]
    assert instances == ['Q2_FAST_1', 'Q2_FAST_2', 'Q2_FAST_1', 'Q2_FAST_2']
    assert len(stack.fast1.chats()) == 2 and len(stack.fast2.chats()) == 2


@pytest.mark.parametrize('failure', ['refused', 'connect timeout', 'loading', 'error'])
def test_failover_to_the_next_instance(servers, backend, tiers, unreachable, monkeypatch, failure):
    # Only where the query cannot have started: no connection, or a 5xx before any answer.
    monkeypatch.setattr(llama, 'CONNECT_TIMEOUT', 0.5)
    if failure == 'refused':
        first_url = servers.refused()
    elif failure == 'connect timeout':
        first_url = unreachable.url
    else:
        first_url = servers.llama('Q2_FAST_1', state=failure).url
    second = servers.llama('Q2_FAST_2')
    running = backend(tiers([first_url, second.url], [second.url], [second.url]), request_timeout=10.0)
    reply = running.query('hello', mode='simple')
    assert reply.status_code == 200, reply.text
    assert reply.json()['instance'] == 'Q2_FAST_2'
    metrics = running.http.get('/metrics').text
    assert 'mmo_upstream_failovers_total{instance="Q2_FAST_1",tier="simple"} 1.0' in metrics
    kind = {'refused': 'connect', 'connect timeout': 'connect', 'loading': 'http_5xx', 'error': 'http_5xx'}[failure]
    assert f'mmo_upstream_errors_total{{instance="Q2_FAST_1",kind="{kind}"}} 1.0' in metrics


def test_a_read_timeout_is_504_and_not_failed_over(servers, backend, tiers):
    # The generation may be running there: replaying it would run it on every replica.
    slow = servers.llama('Q2_FAST_1', delay=3.0)
    second = servers.llama('Q2_FAST_2')
    running = backend(tiers([slow.url, second.url], [second.url], [second.url]), request_timeout=1.0)
    reply = running.query('hello', mode='simple')
    assert reply.status_code == 504, reply.text
    assert 'Q2_FAST_1' in reply.json()['detail']
    assert len(slow.chats()) == 1 and second.chats() == []
    metrics = running.http.get('/metrics').text
    assert 'mmo_upstream_errors_total{instance="Q2_FAST_1",kind="timeout"} 1.0' in metrics
    assert 'mmo_upstream_failovers_total{' not in metrics


def test_one_deadline_covers_every_attempt(servers, backend, tiers):
    # Each instance takes 0.6 s to fail with a 5xx (failed over); the query's 1 s is spent
    # during the second attempt: 504, and the third instance is never asked.
    failing = [servers.llama(f'Q2_FAST_{n}', state='error', delay=0.6) for n in (1, 2, 3)]
    running = backend(tiers([s.url for s in failing], [failing[0].url], [failing[0].url]), request_timeout=1.0)
    reply = running.query('hello', mode='simple')
    assert reply.status_code == 504, reply.text
    assert [len(s.chats()) for s in failing] == [1, 1, 0]


def test_an_answer_that_is_not_a_chat_completion_is_502_not_replayed(servers, backend, tiers):
    garbage = servers.llama('Q2_FAST_1', override={'/v1/chat/completions': (200, {'choices': [{'message': 7}]})})
    second = servers.llama('Q2_FAST_2')
    running = backend(tiers([garbage.url, second.url], [second.url], [second.url]))
    reply = running.query('hello', mode='simple')
    assert reply.status_code == 502, reply.text
    assert 'answer is not a chat completion' in reply.json()['detail']
    assert second.chats() == []


def test_503_names_the_tier_and_every_instance_tried(servers, backend, tiers):
    loading = servers.llama('Q4_DEEP_2', state='loading')
    ok = servers.llama('ok')
    running = backend(tiers([ok.url], [ok.url], [servers.refused(), loading.url]))
    reply = running.query('hello', mode='complex')
    assert reply.status_code == 503
    body = reply.json()
    assert body['tier'] == 'complex' and sorted(body['tried']) == ['Q4_DEEP_1', 'Q4_DEEP_2']
    assert "tier 'complex'" in body['detail']
    assert 'Q4_DEEP_1 (connection failed' in body['detail']
    assert 'Q4_DEEP_2 (HTTP 503: Loading model)' in body['detail']


def test_api_key_is_sent_and_a_401_is_not_failed_over(servers, backend, tiers):
    first = servers.llama('Q2_FAST_1', api_key='right-key')
    second = servers.llama('Q2_FAST_2', api_key='right-key')
    running = backend(tiers([first.url, second.url], [first.url], [first.url]), llama_api_key='right-key')
    assert running.query('hello', mode='simple').status_code == 200
    assert first.chats()[0].authorization == 'Bearer right-key'

    wrong = backend(tiers([first.url, second.url], [first.url], [first.url]), llama_api_key='wrong-key')
    reply = wrong.query('another question', mode='simple')  # not the cached one
    assert reply.status_code == 502
    assert 'HTTP 401: Invalid API Key' in reply.json()['detail']
    assert len(second.chats()) == 0  # the same key would fail on every instance


@pytest.mark.parametrize('payload, message', [
    ({}, 'query: Field required'),
    ({'query': '   '}, 'query: String should have at least 1 character'),
    ({'query': 'x' * 8001}, 'query: String should have at most 8000 characters'),
    ({'query': 'hi', 'mode': 'fast'}, "mode: Input should be 'auto', 'simple', 'moderate' or 'complex'"),
    ({'query': 'hi', 'max_tokens': 0}, 'max_tokens: Input should be greater than or equal to 1'),
    ({'query': 'hi', 'max_tokens': '12'}, 'max_tokens: Input should be a valid integer'),
    ({'query': 'hi', 'use_retrieval': 'yes'}, 'use_retrieval: Input should be a valid boolean'),
    ({'query': 'hi', 'temperature': 2}, 'temperature: Extra inputs are not permitted'),
    ({'query': 42}, 'query: Input should be a valid string'),
    ({'query': 'hi', 'use_web': True}, 'use_web needs MMO_SEARXNG_URL to be set'),
])
def test_bad_input_is_400(stack, payload, message):
    reply = stack.backend.http.post('/api/query', json=payload)
    assert reply.status_code == 400, reply.text
    assert message in reply.json()['detail']
    assert not stack.fast1.chats() and not stack.synth.chats()


def test_malformed_json_is_400(stack):
    reply = stack.backend.http.post('/api/query', content=b'{"query": ', headers={'Content-Type': 'application/json'})
    assert reply.status_code == 400


def test_second_identical_query_is_a_cache_hit_with_ttl(stack, redis_db, wait_until):
    first = stack.backend.query('What is Redis', mode='simple', max_tokens=16).json()
    keys = stored(redis_db, wait_until)
    second = stack.backend.query('What is Redis', mode='simple', max_tokens=16).json()
    assert first['cached'] is False and second['cached'] is True
    assert second['answer'] == first['answer'] and second['instance'] == first['instance'] == 'Q2_FAST_1'
    assert second['usage'] == first['usage'] == {'completion_tokens': 4, 'prompt_tokens': 20, 'total_tokens': 24}
    assert len(stack.fast1.chats()) + len(stack.fast2.chats()) == 1
    assert len(keys) == 1
    assert 3590 <= redis_db.client.ttl(keys[0]) <= 3600  # MMO_CACHE_TTL default
    assert json.loads(redis_db.client.get(keys[0]))['answer'] == first['answer']
    metrics = stack.backend.http.get('/metrics').text
    assert 'mmo_cache_hits_total 1.0' in metrics and 'mmo_cache_misses_total 1.0' in metrics


def test_cache_key_covers_tier_max_tokens_and_retrieval(stack, redis_db, wait_until):
    for number, fields in enumerate(({'mode': 'simple'}, {'mode': 'moderate'}, {'mode': 'simple', 'max_tokens': 9},
                                     {'mode': 'simple', 'use_retrieval': True}), 1):
        assert stack.backend.query('same words', **fields).json()['cached'] is False
        stored(redis_db, wait_until, number)
    assert len(redis_db.client.keys(CACHE_KEYS)) == 4


def test_cache_key_covers_the_model_behind_the_tier(servers, backend, tiers, redis_db, wait_until):
    # A model swap (another GGUF file behind the same instance names and alias) is another answer.
    fast = servers.llama('Q2_FAST_1')
    instances = tiers([fast.url], [fast.url], [fast.url])

    def with_model(sha):
        return tuple(dataclasses.replace(i, model=sha) for i in instances)

    old = backend(with_model('a' * 64))
    assert old.query('hello', mode='simple').json()['cached'] is False
    stored(redis_db, wait_until)
    assert backend(with_model('a' * 64)).query('hello', mode='simple').json()['cached'] is True
    swapped = backend(with_model('b' * 64))
    assert swapped.query('hello', mode='simple').json()['cached'] is False
    assert len(fast.chats()) == 2


def test_custom_ttl_and_ttl_zero_disables_the_cache(servers, backend, tiers, redis_db, wait_until):
    fast = servers.llama('Q2_FAST_1')
    urls = tiers([fast.url], [fast.url], [fast.url])
    backend(urls, cache_ttl=42).query('hello', mode='simple')
    assert 30 <= redis_db.client.ttl(stored(redis_db, wait_until)[0]) <= 42
    redis_db.client.flushall()
    uncached = backend(urls, cache_ttl=0)
    assert [uncached.query('hello', mode='simple').json()['cached'] for n in range(2)] == [False, False]
    assert redis_db.client.keys('*') == []


def test_answers_while_redis_is_down(servers, backend, tiers):
    fast = servers.llama('Q2_FAST_1')
    dead_redis = 'redis://:secret@127.0.0.1:%d/0' % int(servers.refused().rsplit(':', 1)[1])
    running = backend(tiers([fast.url], [fast.url], [fast.url]), redis_url=dead_redis)
    reply = running.query('hello', mode='simple')
    assert reply.status_code == 200 and reply.json()['cached'] is False
    metrics = running.http.get('/metrics').text
    # The read failed; the breaker then skips the write instead of failing it again.
    assert 'mmo_cache_errors_total 1.0' in metrics and 'mmo_cache_skipped_total 1.0' in metrics


def test_cors_origins(servers, backend, tiers):
    fast = servers.llama('Q2_FAST_1')
    running = backend(tiers([fast.url], [fast.url], [fast.url]), cors_origins=('https://chat.example',))
    preflight = {'Access-Control-Request-Method': 'POST', 'Access-Control-Request-Headers': 'content-type'}
    allowed = running.http.options('/api/query', headers=dict(preflight, Origin='https://chat.example'))
    assert allowed.status_code == 200 and allowed.headers['access-control-allow-origin'] == 'https://chat.example'
    other = running.http.options('/api/query', headers=dict(preflight, Origin='https://evil.example'))
    assert 'access-control-allow-origin' not in other.headers
    reply = running.query('hi', mode='simple')  # same-origin requests carry no Origin: unaffected
    assert reply.status_code == 200 and 'access-control-allow-origin' not in reply.headers


def test_a_query_waits_for_a_tier_that_is_restarting(servers, backend, tiers):
    # The tier's one instance answers 503 Loading model to its first 3 requests (a restart):
    # with MMO_TIER_WAIT the query tries the tier again until it answers.
    restarting = servers.llama('Q3_SYNTH_1', loading_requests=3)
    ok = servers.llama('ok')
    running = backend(tiers([ok.url], [restarting.url], [ok.url]), tier_wait=5.0)
    reply = running.query('hello', mode='moderate')
    assert reply.status_code == 200, reply.text
    assert reply.json()['instance'] == 'Q3_SYNTH_1'
    assert len(restarting.chats()) == 4  # three 503s, then the answer
    metrics = running.http.get('/metrics').text
    assert 'mmo_upstream_errors_total{instance="Q3_SYNTH_1",kind="http_5xx"} 3.0' in metrics


def test_the_tier_wait_ends_in_a_503_naming_each_instance_once(servers, backend, tiers):
    loading = servers.llama('Q4_DEEP_2', state='loading')
    ok = servers.llama('ok')
    running = backend(tiers([ok.url], [ok.url], [servers.refused(), loading.url]), tier_wait=1.2)
    reply = running.query('hello', mode='complex')
    assert reply.status_code == 503, reply.text
    body = reply.json()
    assert body['tried'] == ['Q4_DEEP_1', 'Q4_DEEP_2'] or body['tried'] == ['Q4_DEEP_2', 'Q4_DEEP_1']
    assert body['detail'].count('Q4_DEEP_2 (HTTP 503: Loading model)') == 1
    metrics = running.http.get('/metrics').text
    tries = float(metrics.split('mmo_upstream_errors_total{instance="Q4_DEEP_2",kind="http_5xx"} ')[1].split()[0])
    assert tries >= 2, metrics  # tried again within the wait


def test_no_tier_wait_by_default_in_the_app(servers, backend, tiers):
    restarting = servers.llama('Q3_SYNTH_1', loading_requests=1)
    ok = servers.llama('ok')
    running = backend(tiers([ok.url], [restarting.url], [ok.url]))
    assert running.query('hello', mode='moderate').status_code == 503
