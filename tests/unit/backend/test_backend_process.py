# Copyright (c) 2026, multimodel.orchestration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The backend as the role runs it: `mmo-serve multimodel_backend.main:app` (uvicorn with a graceful
drain, multimodel_backend/serve.py) or plain uvicorn, configured by MMO_* variables."""

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from multimodel_backend.log import RedactSecrets
from support.servers import wait_for

API_KEY = 'sk-llama-0123456789abcdef'


def tiers_json(urls):
    names = [('Q2_FAST_1', 'simple'), ('Q3_SYNTH_1', 'moderate'), ('Q4_DEEP_1', 'complex')]
    return json.dumps([{'name': n, 'url': u, 'alias': n.lower(), 'complexity': c} for (n, c), u in zip(names, urls)])


class Uvicorn:
    """`python -m MODULE multimodel_backend.main:app` on a free loopback port: uvicorn, or
    multimodel_backend.serve (the role's mmo-serve)."""

    def __init__(self, app_dir, log_path, env, *args, module='uvicorn'):
        with socket.socket() as sock:
            sock.bind(('127.0.0.1', 0))
            self.port = sock.getsockname()[1]
        self.url = f'http://127.0.0.1:{self.port}'
        self.log_path = log_path
        clean = {k: v for k, v in os.environ.items() if not k.startswith('MMO_') and k != 'PROMETHEUS_MULTIPROC_DIR'}
        with open(log_path, 'w') as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                [sys.executable, '-m', module, 'multimodel_backend.main:app', '--host', '127.0.0.1',
                 '--port', str(self.port), *args], cwd=app_dir, env=dict(clean, MMO_AUTH='off', **env), stdout=log,
                stderr=subprocess.STDOUT)

    def wait_ready(self, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.output()
            try:
                if httpx.get(self.url + '/health', timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError('uvicorn did not answer:\n' + self.output())

    def output(self):
        with open(self.log_path) as handle:
            return handle.read()

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


@pytest.fixture
def uvicorn_process(app_dir, tmp_path):
    started = []

    def start(env, *args, module='uvicorn'):
        started.append(Uvicorn(app_dir, tmp_path / f'uvicorn-{len(started)}.log', env, *args, module=module))
        return started[-1]

    yield start
    for process in started:
        process.stop()


@pytest.mark.parametrize('env, message', [
    ({'MMO_REDIS_URL': 'redis://:pw@127.0.0.1:6379/0'}, 'configuration error: MMO_TIERS_JSON is required'),
    ({'MMO_TIERS_JSON': tiers_json(['http://a:1'] * 3)}, 'configuration error: MMO_REDIS_URL is required'),
])
def test_bad_configuration_stops_startup_with_a_clear_message(uvicorn_process, env, message):
    process = uvicorn_process(env)
    assert process.process.wait(60) == 3  # uvicorn's "startup failed"
    output = process.output()
    assert message in output
    assert 'Traceback' not in output


def test_bad_configuration_stops_a_multi_worker_supervisor(uvicorn_process):
    process = uvicorn_process({'MMO_TIERS_JSON': '[]', 'MMO_REDIS_URL': 'redis://r'}, '--workers', '2')
    process.process.wait(60)  # stops instead of restarting workers forever (the parent exits 0 though)
    output = process.output()
    assert 'MMO_TIERS_JSON must be a non-empty JSON list' in output
    assert 'failed to start, stopping the parent process' in output


def test_serves_and_shuts_down_gracefully(uvicorn_process, servers, redis_db, tmp_path, build_index):
    llama = [servers.llama(name, api_key=API_KEY) for name in ('Q2_FAST_1', 'Q3_SYNTH_1', 'Q4_DEEP_1')]
    build_index(tmp_path / 'faiss', 'docs', [{'id': '1', 'text': 'Caddy terminates TLS.', 'source': 'caddy.md'}])
    process = uvicorn_process({'MMO_TIERS_JSON': tiers_json([s.url for s in llama]), 'MMO_REDIS_URL': redis_db.url,
                               'MMO_LLAMA_API_KEY': API_KEY, 'MMO_FAISS_DIR': str(tmp_path / 'faiss')})
    process.wait_ready()
    assert httpx.get(process.url + '/health/ready').status_code == 200
    reply = httpx.post(process.url + '/api/query', json={'query': 'Who terminates TLS?', 'use_retrieval': True},
                       timeout=30)
    assert reply.status_code == 200 and reply.json()['sources'][0]['source'] == 'caddy.md'
    with connect(process.url.replace('http', 'ws') + '/ws') as ws:  # uvicorn serves WebSockets (websockets)
        ws.send(json.dumps({'query': 'hello', 'mode': 'complex'}))
        assert json.loads(ws.recv(timeout=30))['type'] == 'token'
    # uvicorn shuts down, then re-raises SIGTERM so the exit status says what stopped it.
    assert process.stop() in (0, -signal.SIGTERM)
    output = process.output()
    assert 'Waiting for application shutdown' in output
    assert 'shut down: Redis and HTTP clients closed' in output


def test_secrets_never_reach_the_logs(uvicorn_process, servers, redis_db):
    # Everything fails in ways that get logged: a wrong API key (401), a wrong Redis
    # password (cache and readiness errors); uvicorn at debug level.
    llama = servers.llama('Q2_FAST_1', api_key='the-right-key')
    redis_password = 'wrong-redis-password-42'
    process = uvicorn_process({'MMO_TIERS_JSON': tiers_json([llama.url] * 3), 'MMO_LLAMA_API_KEY': API_KEY,
                               'MMO_REDIS_URL': f'redis://:{redis_password}@127.0.0.1:{redis_db.port}/0'},
                              '--log-level', 'debug')
    process.wait_ready()
    assert httpx.get(process.url + '/health/ready').status_code == 503
    assert httpx.post(process.url + '/api/query', json={'query': 'hi'}, timeout=30).status_code == 502
    process.stop()
    output = process.output()
    assert 'HTTP 401: Invalid API Key' in output and 'cache read failed' in output  # the failures were logged
    assert API_KEY not in output and redis_password not in output


def test_redact_filter_masks_secrets():
    record = logging.LogRecord('multimodel_backend', logging.WARNING, __file__, 1, 'key=%s url=%s', (
        API_KEY, 'redis://:pw-123@redis:6379'), None)
    assert RedactSecrets([API_KEY, 'pw-123']).filter(record)
    assert record.getMessage() == 'key=*** url=redis://:***@redis:6379'


def test_workers_share_metrics_through_the_multiprocess_directory(uvicorn_process, servers, redis_db, tmp_path):
    llama = servers.llama('Q2_FAST_1')
    (tmp_path / 'prom').mkdir()
    process = uvicorn_process({'MMO_TIERS_JSON': tiers_json([llama.url] * 3), 'MMO_REDIS_URL': redis_db.url,
                               'PROMETHEUS_MULTIPROC_DIR': str(tmp_path / 'prom')}, '--workers', '2')
    process.wait_ready()
    with httpx.Client(base_url=process.url, timeout=30) as client:
        for n in range(6):  # new connections: uvicorn's workers share the listening socket
            assert httpx.post(process.url + '/api/query', json={'query': f'q{n}', 'mode': 'simple'},
                              timeout=30).status_code == 200
        scrapes = [client.get('/metrics').text for n in range(3)]
    line = 'mmo_http_requests_total{endpoint="/api/query",method="POST",status="200"} 6.0'
    assert all(line in text for text in scrapes), scrapes[-1]
    assert len(os.listdir(tmp_path / 'prom')) >= 2  # both workers wrote their values


# --- the graceful drain (mmo-serve) -------------------------------------------------------

def in_thread(function):
    """Run function() in a thread; the returned thread's .result is its return value or exception."""
    def run():
        try:
            thread.result = function()
        except Exception as exc:  # pylint: disable=broad-exception-caught  # the test asserts on it
            thread.result = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.result = None
    thread.start()
    return thread


def ws_answer(ws):
    """The messages of one WebSocket answer, up to done or error, then the close code."""
    messages = []
    while not messages or messages[-1]['type'] == 'token':
        messages.append(json.loads(ws.recv(timeout=30)))
    try:
        ws.recv(timeout=10)
    except ConnectionClosed as closed:
        return messages, closed.rcvd.code if closed.rcvd else None
    return messages, 'still open'


@pytest.mark.parametrize('workers', ['1', '2'])
def test_sigterm_drains_a_long_request_and_a_websocket_stream(uvicorn_process, servers, redis_db, workers):
    long_http = servers.llama('Q2_FAST_1', delay=4)  # a 4 s answer
    long_stream = servers.llama('Q4_DEEP_1', tokens=[f' t{n}' for n in range(12)], token_delay=0.3)  # about 4 s
    llama = [long_http, servers.llama('Q3_SYNTH_1'), long_stream]
    process = uvicorn_process({'MMO_TIERS_JSON': tiers_json([s.url for s in llama]), 'MMO_REDIS_URL': redis_db.url,
                               'MMO_CACHE_TTL': '0', 'MMO_DRAIN_DELAY': '1.5'},
                              '--workers', workers, '--timeout-graceful-shutdown', '30',
                              module='multimodel_backend.serve')
    process.wait_ready(120)
    with connect(process.url.replace('http', 'ws') + '/ws') as ws:
        query = in_thread(lambda: httpx.post(process.url + '/api/query', json={'query': 'long', 'mode': 'simple'},
                                             timeout=30))
        ws.send(json.dumps({'query': 'stream', 'mode': 'complex'}))
        first = json.loads(ws.recv(timeout=30))
        wait_for(long_http.chats, what='the HTTP query to reach llama-server')
        signalled = time.monotonic()
        process.process.send_signal(signal.SIGTERM)
        # At once (the supervisor passes the signal on within half a second): /health is 503
        # for the proxy's health check, while the listener still takes new connections.
        wait_for(lambda: httpx.get(process.url + '/health', timeout=2).status_code == 503, timeout=3,
                 what='/health to answer 503')
        assert httpx.get(process.url + '/health').json() == {'status': 'draining'}
        messages, close_code = ws_answer(ws)
    assert first['type'] == 'token'
    assert messages[-1]['type'] == 'done' and len(messages) == 12, messages  # every token, then done
    assert close_code == 1012  # service restart: reconnect, to another replica
    query.join(30)
    assert isinstance(query.result, httpx.Response) and query.result.status_code == 200, query.result
    assert query.result.json()['answer'] == 'Q2_FAST_1 says: Hello from Q2_FAST_1.'
    assert query.result.headers['connection'] == 'close'
    process.process.wait(30)
    took = time.monotonic() - signalled
    assert 1.5 <= took < 20, took
    output = process.output()
    assert 'Draining: /health answers 503' in output and 'Drain timeout' not in output
    assert 'shut down: Redis and HTTP clients closed' in output


def test_the_drain_waits_no_longer_than_the_graceful_timeout(uvicorn_process, servers, redis_db):
    stuck = servers.llama('Q2_FAST_1', delay=20)
    process = uvicorn_process({'MMO_TIERS_JSON': tiers_json([stuck.url] * 3), 'MMO_REDIS_URL': redis_db.url,
                               'MMO_DRAIN_DELAY': '0.5'},
                              '--timeout-graceful-shutdown', '2', module='multimodel_backend.serve')
    process.wait_ready()
    query = in_thread(lambda: httpx.post(process.url + '/api/query', json={'query': 'stuck', 'mode': 'simple'},
                                         timeout=30))
    wait_for(stuck.chats, what='the query to reach llama-server')
    signalled = time.monotonic()
    process.process.send_signal(signal.SIGTERM)
    process.process.wait(15)
    assert time.monotonic() - signalled < 6
    assert 'Drain timeout (2 s) exceeded with 1 request(s) in flight' in process.output()
    query.join(10)
    assert not isinstance(query.result, httpx.Response) or query.result.status_code >= 500
