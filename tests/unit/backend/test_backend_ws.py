# Copyright (c) 2026, multimodel.orchestration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""WebSocket /ws: streamed answers from llama-server's SSE API, the Origin check, and the
generation cancelled when the client leaves."""

import json
import logging
import socket

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from support.ws_client import ask


def test_streams_tokens_then_done(stack):
    with connect(stack.backend.ws_url) as ws:
        texts, done = ask(ws, query='hi there', mode='simple', max_tokens=8)
    assert texts == ['Hello', ' from', ' Q2_FAST_1', '.']  # one message per SSE chunk
    assert done['type'] == 'done' and done['tier'] == 'simple' and done['instance'] == 'Q2_FAST_1'
    assert done['cached'] is False and isinstance(done['latency_ms'], int) and done['sources'] == []
    request = stack.fast1.chats()[0].json
    assert request['stream'] is True and request['max_tokens'] == 8 and request['model'] == 'q2-fast'


def test_several_queries_per_connection_round_robin_and_cache(stack):
    with connect(stack.backend.ws_url) as ws:
        first = ask(ws, query='one', mode='simple')
        second = ask(ws, query='two', mode='simple')
        third = ask(ws, query='Explain why the sky is blue')
        again = ask(ws, query='one', mode='simple')
    assert first[1]['instance'] == 'Q2_FAST_1' and second[1]['instance'] == 'Q2_FAST_2'
    assert third[1]['tier'] == 'moderate' and third[1]['instance'] == 'Q3_SYNTH_1'
    # The repeated query comes from the cache the first one filled, as one token.
    assert again[1]['cached'] is True and again[0] == [''.join(first[0])]
    metrics = stack.backend.http.get('/metrics').text
    assert 'mmo_ws_queries_total{outcome="ok"} 4.0' in metrics


def test_http_and_websocket_share_the_cache(stack):
    stack.backend.query('shared', mode='complex')
    with connect(stack.backend.ws_url) as ws:
        texts, done = ask(ws, query='shared', mode='complex')
    assert done['cached'] is True and texts == ['Q4_DEEP_1 says: Hello from Q4_DEEP_1.']


def test_bad_messages_get_an_error_and_the_connection_stays(stack):
    with connect(stack.backend.ws_url) as ws:
        assert ask(ws, query='')[1] == {'type': 'error', 'message': 'query: String should have at least 1 character'}
        ws.send('not json')
        assert json.loads(ws.recv(timeout=10))['type'] == 'error'
        assert ask(ws, query='hi', mode='simple')[1]['type'] == 'done'
    assert 'mmo_ws_queries_total{outcome="error"} 2.0' in stack.backend.http.get('/metrics').text


def test_failover_before_the_first_token(servers, backend, tiers):
    loading = servers.llama('Q2_FAST_1', state='loading')
    # Failover before the first byte of the answer only: a 5xx (a 200 whose stream then breaks
    # is not replayed, the generation may be running: test_backend_upstream.py).
    broken = servers.llama('Q2_FAST_2', state='error')
    ok = servers.llama('Q2_FAST_3')
    running = backend(tiers([loading.url, broken.url, ok.url], [ok.url], [ok.url]))
    with connect(running.ws_url) as ws:
        texts, done = ask(ws, query='hi', mode='simple')
    assert done['type'] == 'done' and done['instance'] == 'Q2_FAST_3'
    assert ''.join(texts) == 'Hello from Q2_FAST_3.'


def test_error_when_the_tier_is_down(servers, backend, tiers):
    ok = servers.llama('ok')
    running = backend(tiers([ok.url], [ok.url], [servers.refused(), servers.llama('x', state='error').url]))
    with connect(running.ws_url) as ws:
        texts, error = ask(ws, query='hi', mode='complex')
        assert texts == [] and error['type'] == 'error'
        assert "every instance of tier 'complex' failed" in error['message']
        assert 'Q4_DEEP_1 (connection failed' in error['message']
        assert 'Q4_DEEP_2 (HTTP 500: failed to decode the batch)' in error['message']
        assert ask(ws, query='hi', mode='simple')[1]['type'] == 'done'  # still usable


def test_error_mid_answer_is_not_failed_over_nor_cached(servers, backend, tiers, redis_db):
    breaking = servers.llama('Q2_FAST_1', stream_break=2)
    other = servers.llama('Q2_FAST_2')
    running = backend(tiers([breaking.url, other.url], [other.url], [other.url]))
    with connect(running.ws_url) as ws:
        texts, error = ask(ws, query='hi', mode='simple')
    assert texts == ['Hello', ' from'] and error['type'] == 'error'
    assert error['message'].startswith('Q2_FAST_1: ')
    assert not other.chats() and redis_db.client.keys('mmo:*') == []


def test_client_leaving_mid_answer_is_counted_not_crashed(servers, backend, tiers, caplog, wait_until):
    slow = servers.llama('Q2_FAST_1', tokens=[f'token{n} ' for n in range(300)])
    running = backend(tiers([slow.url], [slow.url], [slow.url]))
    with connect(running.ws_url) as ws:
        ws.send(json.dumps({'query': 'hi', 'mode': 'simple'}))
        assert json.loads(ws.recv(timeout=10))['type'] == 'token'
    line = 'mmo_ws_queries_total{outcome="disconnected"} 1.0'
    wait_until(lambda: line in running.http.get('/metrics').text, what='the disconnect')
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # no "Exception in ASGI application"


def test_client_leaving_mid_answer_stops_the_generation(servers, backend, tiers, wait_until):
    """Before: the loop noticed a close only at its next send, so while llama-server was still
    evaluating a long prompt (no token yet) the generation ran on and kept its slot busy."""
    slow = servers.llama('Q2_FAST_1', delay=60)  # "evaluates the prompt" for a minute
    running = backend(tiers([slow.url], [slow.url], [slow.url]), request_timeout=120)
    with connect(running.ws_url) as ws:
        ws.send(json.dumps({'query': 'hi', 'mode': 'simple'}))
        wait_until(slow.chats, what='the query to reach llama-server')
    wait_until(lambda: slow.chats()[0].disconnected is not None, what='the upstream request to be closed')
    line = 'mmo_ws_queries_total{outcome="disconnected"} 1.0'
    wait_until(lambda: line in running.http.get('/metrics').text, what='the disconnect counted')


def test_queries_sent_ahead_are_answered_in_turn(stack):
    with connect(stack.backend.ws_url) as ws:
        ws.send(json.dumps({'query': 'first', 'mode': 'simple'}))
        ws.send(json.dumps({'query': 'second', 'mode': 'simple'}))
        kinds = []
        while kinds.count('done') < 2:
            kinds.append(json.loads(ws.recv(timeout=30))['type'])
    assert kinds == ['token'] * 4 + ['done'] + ['token'] * 4 + ['done']


def test_a_message_over_the_body_limit_closes_the_socket(servers, backend, tiers):
    ok = servers.llama('ok')
    running = backend(tiers([ok.url], [ok.url], [ok.url]), max_body_bytes=2048)
    with connect(running.ws_url) as ws:
        ws.send(json.dumps({'query': 'x' * 3000}))
        assert json.loads(ws.recv(timeout=10)) == {'type': 'error', 'message': 'message over 2048 bytes'}
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd.code == 1009
    assert not ok.chats()


@pytest.mark.parametrize('origin', ['https://evil.example', 'null', 'http://127.0.0.1.evil.example'])
def test_a_foreign_origin_is_refused_before_the_upgrade(servers, backend, tiers, origin):
    """Cross-site WebSocket hijacking: before, any page could open /ws from a visitor's browser."""
    ok = servers.llama('ok')
    running = backend(tiers([ok.url], [ok.url], [ok.url]), cors_origins=('https://app.example',),
                      allowed_origins=('https://chat.example:8443',))
    with pytest.raises(InvalidStatus) as refused:
        connect(running.ws_url, origin=origin)
    assert refused.value.response.status_code == 403
    assert 'mmo_ws_refused_total 1.0' in running.http.get('/metrics').text


def test_allowed_origins(servers, backend, tiers):
    ok = servers.llama('ok')
    running = backend(tiers([ok.url], [ok.url], [ok.url]), cors_origins=('https://app.example',),
                      allowed_origins=('https://chat.example:8443',))
    port = int(running.url.rsplit(':', 1)[1])

    def proxied(origin):
        """Through the proxy: Host chat.example (the proxy keeps it), X-Forwarded-Proto https."""
        return connect('ws://chat.example/ws', sock=socket.create_connection(('127.0.0.1', port)), origin=origin,
                       additional_headers={'X-Forwarded-Proto': 'https'})

    for origin in (None, 'https://app.example', 'https://CHAT.example:8443', running.url):
        with connect(running.ws_url, origin=origin) as ws:
            assert ask(ws, query='hi', mode='simple')[1]['type'] == 'done', origin
    for origin in ('https://chat.example', 'https://chat.example:443'):  # the site's own origin
        with proxied(origin) as ws:
            assert ask(ws, query='hi', mode='simple')[1]['type'] == 'done', origin
    # The site's own host over another scheme is another origin.
    with pytest.raises(InvalidStatus):
        proxied('http://chat.example')
