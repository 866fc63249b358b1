# Copyright (c) 2026, multimodel.orchestration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The OpenAI-compatible API (/v1), driven by the official `openai` client against the
backend in uvicorn, canned llama-servers and a real Redis."""

import threading

import httpx
import openai
import pytest

from multimodel_backend.config import TierLimit

API_KEY = 'mmo-test-key-0123456789abcdef'
HELLO = 'Hello from Q2_FAST_1.'  # the canned stream of the instance Q2_FAST_1


def client_for(running, api_key=API_KEY):
    return openai.OpenAI(base_url=running.url + '/v1', api_key=api_key, max_retries=0, timeout=30)


@pytest.fixture
def v1(servers, backend, tiers):
    """The usual deployment (two simple instances, one moderate, one complex) and an openai client."""
    class V1:
        fast1 = servers.llama('Q2_FAST_1')
        fast2 = servers.llama('Q2_FAST_2')
        synth = servers.llama('Q3_SYNTH_1')
        deep = servers.llama('Q4_DEEP_1')

    V1.backend = backend(tiers([V1.fast1.url, V1.fast2.url], [V1.synth.url], [V1.deep.url]),
                         auth=True, api_keys=(API_KEY,))
    V1.client = client_for(V1.backend)
    return V1


def ask(client, content='What is the capital of France', model='simple', **options):
    return client.chat.completions.create(model=model, messages=[{'role': 'user', 'content': content}], **options)


def test_models_lists_the_tiers_and_auto(v1):
    models = v1.client.models.list()
    assert [m.id for m in models.data] == ['simple', 'moderate', 'complex', 'auto']
    assert all(m.object == 'model' and m.owned_by == 'multimodel' and m.created > 0 for m in models.data)


def test_chat_completion_with_usage(v1):
    reply = ask(v1.client, max_tokens=32, temperature=0.2, top_p=0.9, stop=['\n\n'])
    assert reply.object == 'chat.completion' and reply.id.startswith('chatcmpl-')
    assert reply.model == 'simple'
    assert reply.choices[0].message.role == 'assistant'
    assert reply.choices[0].message.content == 'Q2_FAST_1 says: ' + HELLO
    assert reply.choices[0].finish_reason == 'stop'
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.total_tokens) == (20, 4, 24)
    sent = v1.fast1.chats()[0].json
    assert sent['max_tokens'] == 32 and sent['temperature'] == 0.2 and sent['top_p'] == 0.9
    assert sent['stop'] == ['\n\n'] and sent['stream'] is False and sent['model'] == 'q2-fast'
    assert sent['messages'] == [{'role': 'user', 'content': 'What is the capital of France'}]


def test_streaming_with_usage(v1):
    chunks = list(ask(v1.client, model='complex', stream=True, stream_options={'include_usage': True}))
    assert chunks[0].choices[0].delta.role == 'assistant'
    assert ''.join(c.choices[0].delta.content or '' for c in chunks if c.choices) == 'Hello from Q4_DEEP_1.'
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == 'stop'
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == 24
    assert all(c.model == 'complex' and c.id == chunks[0].id for c in chunks)
    sent = v1.deep.chats()[0].json
    assert sent['stream'] is True and sent['stream_options'] == {'include_usage': True}


def test_streaming_without_usage_and_text_parts(v1):
    messages = [{'role': 'system', 'content': 'Be brief.'},
                {'role': 'user', 'content': [{'type': 'text', 'text': 'hi'}, {'type': 'text', 'text': 'there'}]}]
    chunks = list(v1.client.chat.completions.create(model='moderate', messages=messages, stream=True))
    assert ''.join(c.choices[0].delta.content or '' for c in chunks) == 'Hello from Q3_SYNTH_1.'
    assert all(c.choices for c in chunks)  # no usage chunk unless asked
    assert v1.synth.chats()[0].json['messages'][1] == {'role': 'user', 'content': 'hi\nthere'}


def test_auto_routes_on_the_last_user_message(v1):
    messages = [{'role': 'user', 'content': 'Compare B-trees and LSM trees in depth'},
                {'role': 'assistant', 'content': 'They differ.'},
                {'role': 'user', 'content': 'Explain how a hash map works'}]
    reply = v1.client.chat.completions.create(model='auto', messages=messages)
    assert reply.model == 'moderate' and len(v1.synth.chats()) == 1
    assert ask(v1.client, 'hi', model='auto').model == 'simple'


def test_unknown_model_is_404_model_not_found(v1):
    with pytest.raises(openai.NotFoundError) as caught:
        ask(v1.client, model='gpt-4o')
    assert caught.value.status_code == 404 and caught.value.code == 'model_not_found'
    assert caught.value.body['param'] == 'model' and "'gpt-4o'" in caught.value.body['message']
    assert not v1.fast1.requests


def test_without_the_key_401(v1):
    with pytest.raises(openai.AuthenticationError) as caught:
        ask(client_for(v1.backend, api_key='not-the-key-0123456789'))
    assert caught.value.status_code == 401
    assert set(caught.value.body) >= {'message', 'type', 'code'}  # OpenAI's error shape
    assert not v1.fast1.requests


@pytest.mark.parametrize('options, param', [
    ({'temperature': 3}, 'temperature'),
    ({'top_p': -0.1}, 'top_p'),
    ({'n': 2}, 'n'),
    ({'stop': ['a', 'b', 'c', 'd', 'e']}, 'stop'),
    ({'max_tokens': 0}, 'max_tokens'),
    ({'extra_body': {'max_tokens': '12'}}, 'max_tokens'),
    ({'extra_body': {'stream': 'yes'}}, 'stream'),
    ({'extra_body': {'messages': [{'role': 'tool', 'content': 'x'}]}}, 'messages[0].role'),
    ({'extra_body': {'messages': [{'role': 'user', 'content': [{'type': 'image_url', 'image_url': {}}]}]}},
     'messages[0].content[0]'),
    ({'max_tokens': 2000}, 'max_tokens'),  # the tier's bound: 1024 by default
])
def test_bad_parameters_are_400_naming_them(v1, options, param):
    with pytest.raises(openai.BadRequestError) as caught:
        ask(v1.client, **options)
    assert caught.value.body['param'] == param and caught.value.body['type'] == 'invalid_request_error'
    assert not v1.fast1.requests and not v1.fast2.requests


def test_max_tokens_bound_is_per_tier(servers, backend, tiers):
    fast = servers.llama('Q2_FAST_1')
    running = backend(tiers([fast.url], [fast.url], [fast.url]), tier_limits={'simple': TierLimit(64, 8)})
    client = client_for(running)
    with pytest.raises(openai.BadRequestError) as caught:
        ask(client, max_tokens=65)
    assert "max_tokens must be at most 64 for tier 'simple'" in caught.value.body['message']
    assert ask(client, max_tokens=64).choices[0].message.content
    assert ask(client, model='complex', max_tokens=1000).choices[0].message.content


def test_unknown_fields_are_ignored(v1):
    reply = ask(v1.client, extra_body={'presence_penalty': 0.5, 'user': 'someone', 'seed': 1})
    assert reply.choices[0].message.content


def test_failover_to_the_next_instance(servers, backend, tiers):
    ok = servers.llama('Q2_FAST_2')
    running = backend(tiers([servers.refused(), ok.url], [ok.url], [ok.url]))
    client = client_for(running)
    assert ask(client).choices[0].message.content == 'Q2_FAST_2 says: Hello from Q2_FAST_2.'
    assert ''.join(c.choices[0].delta.content or '' for c in ask(client, 'another', stream=True)) == \
        'Hello from Q2_FAST_2.'
    metrics = running.http.get('/metrics').text
    assert 'mmo_upstream_failovers_total{instance="Q2_FAST_1",tier="simple"} 1.0' in metrics


def test_second_identical_call_is_a_cache_hit(v1, redis_db, wait_until):
    first = ask(v1.client, 'What is Redis', temperature=0)
    wait_until(lambda: redis_db.client.keys('mmo:v2:chat:*'), what='the cache entry')
    second = ask(v1.client, 'What is Redis', temperature=0)
    streamed = list(ask(v1.client, 'What is Redis', temperature=0, stream=True, stream_options={'include_usage': True}))
    assert second.choices[0].message.content == first.choices[0].message.content
    assert ''.join(c.choices[0].delta.content or '' for c in streamed if c.choices) == first.choices[0].message.content
    assert second.usage == first.usage and streamed[-1].usage == first.usage
    assert len(v1.fast1.chats()) + len(v1.fast2.chats()) == 1
    # Other sampling parameters are another answer.
    ask(v1.client, 'What is Redis', temperature=1)
    assert len(v1.fast1.chats()) + len(v1.fast2.chats()) == 2


@pytest.mark.parametrize('stream', [False, True])
def test_upstream_failures_keep_openai_error_shape(servers, backend, tiers, stream):
    down = servers.llama('Q4_DEEP_1', state='error')
    slow = servers.llama('Q2_FAST_1', delay=3.0)
    running = backend(tiers([slow.url], [slow.url], [servers.refused(), down.url]), request_timeout=1.0)
    client = client_for(running)
    with pytest.raises(openai.InternalServerError) as unavailable:
        ask(client, model='complex', stream=stream)
    assert unavailable.value.status_code == 503 and unavailable.value.code == 'tier_unavailable'
    assert "every instance of tier 'complex' failed" in unavailable.value.body['message']
    with pytest.raises(openai.APIStatusError) as timeout:
        ask(client, model='simple', stream=stream)
    assert timeout.value.status_code == 504 and timeout.value.code == 'upstream_timeout'


def test_an_error_mid_stream_is_an_error_event(servers, backend, tiers, redis_db):
    breaking = servers.llama('Q2_FAST_1', stream_break=2)
    other = servers.llama('Q2_FAST_2')
    running = backend(tiers([breaking.url, other.url], [other.url], [other.url]))
    texts = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in ask(client_for(running), stream=True):
            texts.append(chunk.choices[0].delta.content or '')
    assert ''.join(texts) == 'Hello from'
    assert 'Q2_FAST_1' in caught.value.message and caught.value.code == 'upstream_error'
    assert not other.chats() and redis_db.client.keys('mmo:v2:*') == []


def test_a_busy_tier_is_429_with_retry_after(servers, backend, tiers, wait_until):
    slow = servers.llama('Q2_FAST_1', delay=3.0)
    other = servers.llama('Q3_SYNTH_1')
    running = backend(tiers([slow.url], [other.url], [other.url]), queue_timeout=0.2,
                      tier_limits={'simple': TierLimit(256, 1)})
    first = threading.Thread(target=lambda: httpx.post(
        running.url + '/v1/chat/completions', timeout=30,
        json={'model': 'simple', 'messages': [{'role': 'user', 'content': 'slow'}]}))
    first.start()
    try:
        wait_until(slow.chats, what='the first generation to take the only slot')
        with pytest.raises(openai.RateLimitError) as caught:
            ask(client_for(running), 'another')
        assert caught.value.status_code == 429 and caught.value.response.headers['retry-after'] == '1'
        assert caught.value.code == 'rate_limit_exceeded'
        assert ask(client_for(running), 'cheap', model='moderate').choices  # another tier, its own slots
    finally:
        first.join(30)
    assert len(slow.chats()) == 1
    metrics = running.http.get('/metrics').text
    assert 'mmo_tier_rejected_total{tier="simple"} 1.0' in metrics


@pytest.mark.parametrize('body, param, message', [
    (b'{"model": "simple", "messages": [', None, 'the body is not valid JSON'),
    (b'["simple"]', None, 'the body must be a JSON object'),
    (b'{"messages": [{"role": "user", "content": "hi"}]}', 'model', "'model' is required"),
    (b'{"model": "simple"}', 'messages', "'messages' must be a non-empty list"),
    (b'{"model": "simple", "messages": [{"role": "user", "content": "hi"}], "stream_options": 1}',
     'stream_options', "'stream_options' must be an object"),
])
def test_malformed_bodies_are_400_in_openai_shape(v1, body, param, message):
    reply = v1.backend.http.post('/v1/chat/completions', content=body, headers={
        'Authorization': 'Bearer ' + API_KEY, 'Content-Type': 'application/json'})
    assert reply.status_code == 400, reply.text
    error = reply.json()['error']
    assert error['param'] == param and error['type'] == 'invalid_request_error' and message in error['message']
