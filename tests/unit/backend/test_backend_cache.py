# Copyright (c) 2026, multimodel.orchestration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The Redis answer cache (cache.py) against a real redis-server, reached directly or through
a switchable TCP proxy that can hang (black hole) or drop connections.

Before: redis-py retried each failed call (with backoff) on top of 5 s socket timeouts and
there was no breaker, so every query with Redis refusing or hung paid for it again; a
malformed entry (JSON but not an object) broke the query; keys did not name the model.
"""

import asyncio
import re

from multimodel_backend.cache import AnswerCache
from multimodel_backend.config import Settings
from multimodel_backend.metrics import Metrics

HANG_GUARD = 30  # seconds: a call that never returns fails the test instead of hanging it


class Clock:
    """time.monotonic for the breaker, moved by the test."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def make_cache(url, clock=None, **settings):
    options = dict(instances=(), redis_url=url, redis_timeout=0.2, breaker_seconds=5.0)
    options.update(settings)
    metrics = Metrics()
    return AnswerCache(Settings(**options), metrics, **({'clock': clock} if clock else {})), metrics


def value(metrics, name):
    return metrics.registry.get_sample_value(name) or 0.0


def run(coroutine):
    async def guarded():
        return await asyncio.wait_for(coroutine, HANG_GUARD)
    return asyncio.run(guarded())


def test_keys_are_versioned_and_cover_the_material():
    material = ['simple', ['sha256:aaa', 'sha256:bbb'], None, 'hello', 256, 0.7, None, False]
    key = AnswerCache.key('answer', material)
    assert re.fullmatch(r'mmo:v2:answer:[0-9a-f]{64}', key)
    assert AnswerCache.key('answer', list(material)) == key
    other_model = ['simple', ['sha256:aaa', 'sha256:ccc']] + material[2:]
    other_index = material[:2] + ['faiss:docs:123:456'] + material[3:]
    keys = {key, AnswerCache.key('answer', other_model), AnswerCache.key('answer', other_index),
            AnswerCache.key('chat', material)}
    assert len(keys) == 4
    # Objects in the material hash the same whatever their key order.
    assert AnswerCache.key('chat', [{'role': 'user', 'content': 'x'}]) == \
        AnswerCache.key('chat', [{'content': 'x', 'role': 'user'}])


def test_round_trip_in_the_background_with_ttl(redis_db):
    async def scenario():
        cache, metrics = make_cache(redis_db.url, cache_ttl=120)
        key = cache.key('answer', ['q'])
        assert await cache.get(key) is None  # a miss
        assert cache.set(key, {'answer': 'forty-two', 'usage': {'total_tokens': 3}}) is None  # not awaited
        await cache.flush()
        assert await cache.get(key) == {'answer': 'forty-two', 'usage': {'total_tokens': 3}}
        assert await cache.ping() == 'ok'
        await cache.aclose()
        return key, metrics

    key, metrics = run(scenario())
    assert 100 <= redis_db.client.ttl(key) <= 120
    assert (value(metrics, 'mmo_cache_hits_total'), value(metrics, 'mmo_cache_misses_total'),
            value(metrics, 'mmo_cache_errors_total')) == (1, 1, 0)


def test_ttl_zero_turns_the_cache_off(redis_db):
    async def scenario():
        cache, _metrics = make_cache(redis_db.url, cache_ttl=0)
        redis_db.client.set('mmo:v2:answer:x', '{"answer": "old"}')
        assert await cache.get('mmo:v2:answer:x') is None
        cache.set('mmo:v2:answer:y', {'answer': 'new'})
        await cache.aclose()

    run(scenario())
    assert redis_db.client.keys('*') == ['mmo:v2:answer:x']


def test_a_malformed_entry_is_a_miss(redis_db):
    async def scenario():
        cache, metrics = make_cache(redis_db.url)
        for number, raw in enumerate(['not json', '[1, 2]', '"text"', 'null', b'\xff\xfe{}']):
            redis_db.client.set(f'mmo:v2:answer:{number}', raw)
            assert await cache.get(f'mmo:v2:answer:{number}') is None
        redis_db.client.set('mmo:v2:answer:good', '{"answer": "fine"}')
        assert await cache.get('mmo:v2:answer:good') == {'answer': 'fine'}  # the breaker did not open
        await cache.aclose()
        return metrics

    metrics = run(scenario())
    assert value(metrics, 'mmo_cache_malformed_total') == 5
    assert value(metrics, 'mmo_cache_misses_total') == 5
    assert value(metrics, 'mmo_cache_errors_total') == 0 and value(metrics, 'mmo_cache_hits_total') == 1


def test_redis_dropping_connections_is_tried_on_a_new_connection_then_skipped(redis_db, redis_switch):
    clock = Clock()

    async def scenario():
        cache, metrics = make_cache(redis_switch.url(redis_db.password), clock)
        redis_switch.mode = 'reset'
        for _attempt in range(10):
            assert await cache.get('mmo:v2:answer:k') is None
        cache.set('mmo:v2:answer:k', {'answer': 'x'})
        await cache.flush()
        # A dropped connection is tried once more on a new one, then the breaker skipped the
        # 9 other reads and the write.
        assert redis_switch.connections == 2
        assert (value(metrics, 'mmo_cache_errors_total'), value(metrics, 'mmo_cache_skipped_total')) == (1, 10)

        # Redis is back; the breaker lets one call probe it once breaker_seconds have passed.
        redis_switch.mode = 'forward'
        redis_db.client.set('mmo:v2:answer:k', '{"answer": "cached"}')
        clock.now += 4.9
        assert await cache.get('mmo:v2:answer:k') is None and redis_switch.connections == 2
        clock.now += 0.2
        assert await cache.get('mmo:v2:answer:k') == {'answer': 'cached'}
        assert await cache.get('mmo:v2:answer:k') == {'answer': 'cached'}  # closed again
        await cache.aclose()
        return metrics

    metrics = run(scenario())
    assert value(metrics, 'mmo_cache_hits_total') == 2 and value(metrics, 'mmo_cache_errors_total') == 1


def test_the_first_read_after_a_redis_restart_is_a_hit(redis_db, redis_switch):
    """Redis restarted: the pooled connection is dead. The read connects anew and hits, instead
    of missing and opening the breaker (the answer cache lost for breaker_seconds)."""
    async def scenario():
        cache, metrics = make_cache(redis_switch.url(redis_db.password), Clock())
        redis_db.client.set('mmo:v2:answer:k', '{"answer": "cached"}')
        assert await cache.get('mmo:v2:answer:k') == {'answer': 'cached'}
        redis_switch.drop_connections()
        assert await cache.get('mmo:v2:answer:k') == {'answer': 'cached'}
        cache.set('mmo:v2:answer:j', {'answer': 'stored'})
        await cache.flush()
        await cache.aclose()
        return metrics

    metrics = run(scenario())
    assert redis_db.client.get('mmo:v2:answer:j') == '{"answer": "stored"}'
    assert redis_switch.connections == 2
    assert (value(metrics, 'mmo_cache_hits_total'), value(metrics, 'mmo_cache_errors_total')) == (2, 0)


def test_a_hung_redis_costs_one_deadline_then_is_skipped(redis_db, redis_switch):
    """Black-holed: connections are accepted and never answered. Each call has a hard deadline
    (redis_timeout) and the breaker keeps the next queries off Redis entirely."""
    clock = Clock()

    async def scenario():
        cache, metrics = make_cache(redis_switch.url(redis_db.password), clock)
        redis_switch.mode = 'blackhole'
        assert await cache.get('mmo:v2:answer:k') is None  # returns: the deadline, not a socket timeout
        for _attempt in range(5):
            assert await cache.get('mmo:v2:answer:k') is None
            cache.set('mmo:v2:answer:k', {'answer': 'x'})
        await cache.flush()
        assert redis_switch.connections == 1
        assert (value(metrics, 'mmo_cache_errors_total'), value(metrics, 'mmo_cache_skipped_total')) == (1, 10)

        # Half open: one call probes (and hangs until its deadline); calls meanwhile skip Redis.
        clock.now += 5.0
        probe = asyncio.create_task(cache.get('mmo:v2:answer:k'))
        await asyncio.sleep(0)  # the probe has started
        assert await cache.get('mmo:v2:answer:k') is None
        assert await probe is None
        assert redis_switch.connections == 2
        assert (value(metrics, 'mmo_cache_errors_total'), value(metrics, 'mmo_cache_skipped_total')) == (2, 11)
        assert cache.breaker_open

        # Readiness is not behind the breaker: it says what Redis does now.
        assert await cache.ping() == 'TimeoutError: no answer within 2.0 s'
        await cache.aclose()

    run(scenario())


def test_a_write_that_fails_opens_the_breaker_and_never_raises(redis_db, redis_switch):
    async def scenario():
        cache, metrics = make_cache(redis_switch.url(redis_db.password), Clock())
        redis_switch.mode = 'blackhole'
        cache.set('mmo:v2:answer:k', {'answer': 'x'})
        cache.set('mmo:v2:answer:k', {'not serialisable': object()})  # logged, not raised
        await cache.flush()
        assert cache.breaker_open and redis_switch.connections == 1
        assert await cache.get('mmo:v2:answer:k') is None and redis_switch.connections == 1
        await cache.aclose()
        return metrics

    metrics = run(scenario())
    assert value(metrics, 'mmo_cache_errors_total') == 1


def test_ping_names_the_failure_without_the_password(redis_db, servers):
    refused_port = int(servers.refused().rsplit(':', 1)[1])

    async def scenario():
        results = []
        for url in (f'redis://:wrong-password@127.0.0.1:{redis_db.port}/0',
                    f'redis://:{redis_db.password}@127.0.0.1:{refused_port}/0'):
            cache, _metrics = make_cache(url)
            results.append(await cache.ping())
            await cache.aclose()
        return results

    wrong, refused = run(scenario())
    assert wrong.startswith('AuthenticationError') and refused.startswith('ConnectionError')
    assert 'wrong-password' not in wrong + refused and redis_db.password not in wrong + refused


# --- through the backend ------------------------------------------------------------------

def test_queries_with_redis_hung_are_answered_and_leave_redis_alone(servers, backend, tiers, redis_db, redis_switch):
    """Before: each query waited for redis-py's 5 s timeouts, retried, on the read and again on
    the write; the httpx client of the test gives up after 30 s."""
    fast = servers.llama('Q2_FAST_1')
    running = backend(tiers([fast.url], [fast.url], [fast.url]), redis_url=redis_switch.url(redis_db.password),
                      redis_timeout=0.2, breaker_seconds=300)
    redis_switch.mode = 'blackhole'
    for number in range(5):
        reply = running.query(f'question {number}', mode='simple')
        assert reply.status_code == 200 and reply.json()['cached'] is False
    assert redis_switch.connections == 1  # the first read; the breaker kept the rest off Redis
    metrics = running.http.get('/metrics').text
    assert 'mmo_cache_errors_total 1.0' in metrics and 'mmo_cache_skipped_total 9.0' in metrics
    assert len(fast.chats()) == 5


def test_a_malformed_entry_through_the_backend_is_a_miss_not_a_500(stack, redis_db, wait_until):
    """Before: an entry that was JSON but not an object (or lacked the answer) made the query fail."""
    assert stack.backend.query('cached question', mode='simple').status_code == 200
    wait_until(lambda: redis_db.client.keys('mmo:*'), what='the background cache write')
    for junk in ('[1, 2]', '{"no": "answer"}', 'not json'):
        for key in redis_db.client.keys('mmo:*'):
            redis_db.client.set(key, junk)
        reply = stack.backend.query('cached question', mode='simple')
        assert reply.status_code == 200, junk
        assert reply.json()['cached'] is False and 'says: Hello from Q2_FAST_' in reply.json()['answer']
        # The fresh answer replaces the junk (in the background): wait, so it cannot land on the next junk.
        wait_until(lambda: all(redis_db.client.get(k) != junk for k in redis_db.client.keys('mmo:*')),
                   what='the fresh answer cached')
    assert 'mmo_cache_malformed_total 2.0' in stack.backend.http.get('/metrics').text  # the list and 'not json'
