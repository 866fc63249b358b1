# Copyright (c) 2026, multimodel.orchestration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The backend against misbehaving llama-servers: malformed streams, answers that break
after they started, and clients that leave mid-answer (the upstream request is closed, so
llama-server stops generating: the canned server records that its client went away)."""

import json

import httpx
import openai
import pytest
from websockets.sync.client import connect

from multimodel_backend.config import TierLimit
from support.ws_client import ask as ws_ask

GOOD_CHUNK = 'data: ' + json.dumps({'object': 'chat.completion.chunk',
                                    'choices': [{'index': 0, 'delta': {'content': 'Hel'}, 'finish_reason': None}]})
LONG = [f'token{n} ' for n in range(400)]  # with token_delay 0.05: 20 s of tokens


@pytest.mark.parametrize('bad, why', [
    ('data: {"choices": [{"delta": {"content": "lo"}}]', 'not JSON'),  # cut
    ('data: 42', 'not a JSON object'),
    ('data: ["choices"]', 'not a JSON object'),
    ('data: {"choices": 5}', "'choices' is not a list"),
    ('data: {"choices": ["lo"]}', 'a choice is not an object'),
    ('data: {"choices": [{"delta": "lo"}]}', "'delta' is not an object"),
    ('data: {"choices": [{"delta": {"content": 5}}]}', "'content' is not text"),
])
def test_a_malformed_stream_is_an_error_message_not_a_crash(servers, backend, tiers, bad, why):
    broken = servers.llama('Q2_FAST_1', sse_raw=[GOOD_CHUNK + '\n\n', bad + '\n\n', 'data: [DONE]\n\n'])
    other = servers.llama('Q2_FAST_2')
    ok = servers.llama('Q3_SYNTH_1')
    running = backend(tiers([broken.url, other.url], [ok.url], [broken.url]))
    with connect(running.ws_url) as ws:
        texts, error = ws_ask(ws, query='hi', mode='simple')
        assert texts == ['Hel'] and error['type'] == 'error'
        assert error['message'] == f'Q2_FAST_1: malformed stream chunk: {why}'
        assert ws_ask(ws, query='hi', mode='moderate')[1]['type'] == 'done'  # the socket lives on
    assert not other.chats()  # it started on Q2_FAST_1: not replayed
    metrics = running.http.get('/metrics').text
    assert 'mmo_upstream_errors_total{instance="Q2_FAST_1",kind="invalid"} 1.0' in metrics
    # The OpenAI stream ends with an error event instead.
    client = openai.OpenAI(base_url=running.url + '/v1', api_key='none', max_retries=0)
    with pytest.raises(openai.APIError) as caught:
        list(client.chat.completions.create(model='complex', messages=[{'role': 'user', 'content': 'again'}],
                                            stream=True))
    assert caught.value.code == 'upstream_error' and why in caught.value.message


@pytest.mark.parametrize('answer', [b'not json', b'[]', b'{"choices": []}',
                                    b'{"choices": [{"message": {"content": 5}}]}'])
def test_a_malformed_answer_is_502(servers, backend, tiers, answer):
    broken = servers.llama('Q2_FAST_1', override={'/v1/chat/completions': (200, answer)})
    running = backend(tiers([broken.url], [broken.url], [broken.url]))
    reply = running.query('hi', mode='simple')
    assert reply.status_code == 502 and 'answer is not a chat completion' in reply.json()['detail']


def test_a_stream_that_breaks_after_the_200_is_not_replayed(servers, backend, tiers):
    # 200 and no token yet: the generation may be running there all the same.
    broken = servers.llama('Q2_FAST_1', stream_break=0)
    other = servers.llama('Q2_FAST_2')
    running = backend(tiers([broken.url, other.url], [other.url], [other.url]))
    with connect(running.ws_url) as ws:
        texts, error = ws_ask(ws, query='hi', mode='simple')
    assert texts == [] and error['type'] == 'error' and error['message'].startswith('Q2_FAST_1: ')
    assert not other.chats()


def test_the_deadline_bounds_a_stream_too(servers, backend, tiers):
    # Each token comes within the second, but the whole answer would take 4 s: one deadline.
    slow = servers.llama('Q2_FAST_1', tokens=[f't{n} ' for n in range(8)], token_delay=0.5)
    other = servers.llama('Q2_FAST_2')
    running = backend(tiers([slow.url, other.url], [slow.url], [other.url]), request_timeout=1.0)
    with connect(running.ws_url) as ws:
        texts, error = ws_ask(ws, query='hi', mode='simple')
    assert 0 < len(texts) < 8 and error['type'] == 'error'
    assert error['message'] == "Q2_FAST_1: no answer within the query's deadline (1 s)"
    assert not other.chats()
    client = openai.OpenAI(base_url=running.url + '/v1', api_key='none', max_retries=0)
    with pytest.raises(openai.APIError) as caught:
        list(client.chat.completions.create(model='moderate', messages=[{'role': 'user', 'content': 'again'}],
                                            stream=True))
    assert caught.value.code == 'upstream_timeout'


def test_stream_asks_for_usage_and_the_answer_reports_it(stack):
    with connect(stack.backend.ws_url) as ws:
        done = ws_ask(ws, query='hi', mode='simple')[1]
    assert done['type'] == 'done'
    assert done['usage'] == {'completion_tokens': 4, 'prompt_tokens': 20, 'total_tokens': 24}
    assert stack.fast1.chats()[0].json['stream_options'] == {'include_usage': True}


# --- the client leaves: the generation stops -------------------------------------------------

def limited(servers, backend, tiers, **knobs):
    """A simple tier of a slow instance and a quick one, one generation at a time (a slot
    not freed would make the next query wait, then 429)."""
    slow = servers.llama('Q2_FAST_1', **knobs)
    quick = servers.llama('Q2_FAST_2')
    running = backend(tiers([slow.url, quick.url], [quick.url], [quick.url]), request_timeout=60.0,
                      cache_ttl=0, queue_timeout=1.0, tier_limits={'simple': TierLimit(1024, 1)})
    return slow, running


def gone(slow, wait_until):
    """Wait for the slow instance to see its client (the backend) go away mid-generation."""
    wait_until(lambda: slow.chats() and slow.chats()[0].disconnected, timeout=5,
               what='the backend to close its request to llama-server')


@pytest.mark.parametrize('path', ['/api/query', '/v1/chat/completions'])
def test_a_client_leaving_a_request_cancels_the_generation(servers, backend, tiers, wait_until, path):
    slow, running = limited(servers, backend, tiers, delay=20.0)
    body = ({'query': 'slow', 'mode': 'simple'} if path == '/api/query'
            else {'model': 'simple', 'messages': [{'role': 'user', 'content': 'slow'}]})
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(running.url + path, json=body, timeout=httpx.Timeout(10, read=1.0))  # gives up after 1 s
    gone(slow, wait_until)
    # Its slot was freed: the next query of the tier runs at once, on the next instance.
    assert running.query('next', mode='simple').json()['instance'] == 'Q2_FAST_2'


def test_a_client_leaving_an_openai_stream_cancels_the_generation(servers, backend, tiers, wait_until):
    slow, running = limited(servers, backend, tiers, tokens=LONG, token_delay=0.05)
    client = openai.OpenAI(base_url=running.url + '/v1', api_key='none', max_retries=0)
    stream = client.chat.completions.create(model='simple', messages=[{'role': 'user', 'content': 'go'}],
                                            stream=True)
    chunks = iter(stream)
    assert next(chunks).choices[0].delta.role == 'assistant'
    assert next(chunks).choices[0].delta.content == 'token0 '
    stream.close()
    gone(slow, wait_until)
    assert running.query('next', mode='simple').json()['instance'] == 'Q2_FAST_2'


def test_a_websocket_closing_mid_answer_cancels_the_generation(servers, backend, tiers, wait_until):
    slow, running = limited(servers, backend, tiers, tokens=LONG, token_delay=0.05)
    with connect(running.ws_url) as ws:
        ws.send(json.dumps({'query': 'go', 'mode': 'simple'}))
        assert json.loads(ws.recv(timeout=10)) == {'type': 'token', 'text': 'token0 '}
    gone(slow, wait_until)
    assert running.query('next', mode='simple').json()['instance'] == 'Q2_FAST_2'


class HangUp:
    """A llama-server address that reads each request and closes the connection without a
    byte of an answer (killed mid-request, or closing an idle connection as it is reused)."""

    def __init__(self):
        import socket
        import threading
        self.listener = socket.create_server(('127.0.0.1', 0))
        self.url = f'http://127.0.0.1:{self.listener.getsockname()[1]}'
        self.hung_up = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                connection = self.listener.accept()[0]
            except OSError:
                return
            with connection:
                connection.recv(65536)
                self.hung_up += 1

    def close(self):
        self.listener.close()


@pytest.fixture
def hang_up():
    server = HangUp()
    yield server
    server.close()


def test_a_connection_closed_before_any_answer_fails_over(servers, backend, tiers, hang_up):
    # Nothing runs there for this query: the next instance answers it, streamed or not.
    other = servers.llama('Q2_FAST_2')
    running = backend(tiers([hang_up.url, other.url], [other.url], [other.url]))
    # Round-robin: the first and third queries start on the one that hangs up.
    for query in ('hi', 'its turn'):
        reply = running.query(query, mode='simple')
        assert reply.status_code == 200 and reply.json()['instance'] == 'Q2_FAST_2'
    with connect(running.ws_url) as ws:
        texts, done = ws_ask(ws, query='hi again', mode='simple')
    assert done['type'] == 'done' and done['instance'] == 'Q2_FAST_2' and texts
    assert hang_up.hung_up == 2 and len(other.chats()) == 3
    assert 'mmo_upstream_failovers_total{instance="Q2_FAST_1",tier="simple"}' in running.http.get('/metrics').text
