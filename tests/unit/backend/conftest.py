# Copyright (c) 2026, multimodel.orchestration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Fixtures for the reference backend's tests (roles/backend/files/app).

Everything is real except llama-server: Redis is a throwaway redis-server with a password,
the backend runs in uvicorn on a loopback port, and llama-server is a canned HTTP server
(llama-server cannot run on this host) answering with llama-server's real formats.
"""

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
APP_DIR = os.path.join(ROOT, 'roles', 'backend', 'files', 'app')
sys.path.insert(0, APP_DIR)
# The role copies APP_DIR into the image: keep __pycache__ out of it (here and in the
# uvicorn and build_index subprocesses the tests start).
sys.dont_write_bytecode = True
os.environ['PYTHONDONTWRITEBYTECODE'] = '1'

import httpx  # noqa: E402 (after the path set-up, like the imports the tests make)
import redis  # noqa: E402
import uvicorn  # noqa: E402

from multimodel_backend.config import Instance, Settings  # noqa: E402
from multimodel_backend.api import create_app  # noqa: E402


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout=10.0, what='condition'):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f'timed out waiting for {what}')


# --- Redis ------------------------------------------------------------------------------

class RedisServer:
    """A throwaway redis-server on a random loopback port, with a password."""

    def __init__(self):
        binary = shutil.which('redis-server')
        if not binary:
            pytest.fail('redis-server is not installed: apt-get install -y redis-server')
        self.password = 'pw-' + secrets.token_hex(12)
        self.dir = tempfile.mkdtemp(prefix='mmo-redis-')
        for attempt in range(5):  # the port is free when picked, but another process may take it
            self.port = free_port()
            self.process = subprocess.Popen(
                [binary, '--port', str(self.port), '--bind', '127.0.0.1', '--requirepass', self.password,
                 '--save', '', '--appendonly', 'no', '--dir', self.dir, '--logfile', ''],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.url = f'redis://:{self.password}@127.0.0.1:{self.port}/0'
            self.client = redis.Redis.from_url(self.url, decode_responses=True)
            try:
                wait_for(self._answers, timeout=5, what='redis-server')
                return
            except AssertionError:
                self.process.kill()
                self.process.wait()
        raise RuntimeError('could not start redis-server')

    def _answers(self):
        if self.process.poll() is not None:
            raise AssertionError('redis-server exited')
        try:
            return self.client.ping()
        except redis.exceptions.ConnectionError:
            return False

    def close(self):
        self.client.close()
        self.process.terminate()
        self.process.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope='session')
def redis_server():
    server = RedisServer()
    yield server
    server.close()


@pytest.fixture
def redis_db(redis_server):
    """The session's redis-server, emptied for this test."""
    redis_server.client.flushall()
    return redis_server


# --- canned llama-server ------------------------------------------------------------------

LOADING = (503, {'error': {'code': 503, 'message': 'Loading model', 'type': 'unavailable_error'}})
UNAUTHORIZED = (401, {'error': {'code': 401, 'message': 'Invalid API Key', 'type': 'authentication_error'}})
SERVER_ERROR = (500, {'error': {'code': 500, 'message': 'failed to decode the batch', 'type': 'server_error'}})


def _serve(handler):
    """Serve handler on a free loopback port in a daemon thread; return (server, base URL)."""
    httpd = ThreadingHTTPServer(('127.0.0.1', 0), handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, kwargs={'poll_interval': 0.05}, daemon=True).start()
    return httpd, 'http://127.0.0.1:%d' % httpd.server_address[1]


def _stop(httpd):
    httpd.shutdown()
    httpd.server_close()


class FakeLlama:
    """A canned llama-server (formats as llama.cpp's llama-server answers them).

    name      appears in every answer ("<name> says: ..."), so tests see who answered
    state     'ok', 'loading' (503 everywhere, as while a model loads) or 'error' (500)
    api_key   when set, every path but /health needs "Authorization: Bearer <key>"
    delay     seconds before answering (timeout tests)
    tokens    the streamed pieces; stream_break=N closes the connection after N of them
    """

    def __init__(self, name, state='ok', api_key=None, delay=0.0, tokens=None, stream_break=None):
        self.name, self.state, self.api_key, self.delay = name, state, api_key, delay
        self.tokens = tokens or ['Hello', ' from', ' ' + name, '.']
        self.stream_break = stream_break
        self.requests = []  # (method, path, headers dict, JSON body or None)
        self.httpd, self.url = _serve(self._handler())

    def close(self):
        _stop(self.httpd)

    def chats(self):
        return [r for r in self.requests if r[1] == '/v1/chat/completions']

    def answer(self, method, path, headers, body):
        if self.state == 'loading':
            return LOADING
        if self.api_key and path != '/health' and headers.get('Authorization') != 'Bearer ' + self.api_key:
            return UNAUTHORIZED
        if self.state == 'error' and path != '/health':
            return SERVER_ERROR
        if method == 'GET' and path == '/health':
            return 200, {'status': 'ok'}
        if method == 'POST' and path == '/v1/chat/completions':
            if body.get('stream'):
                return 200, 'stream'
            text = f'{self.name} says: ' + ''.join(self.tokens)
            n = len(self.tokens)
            return 200, {
                'choices': [{'finish_reason': 'stop', 'index': 0,
                             'message': {'role': 'assistant', 'content': text}}],
                'created': 1764187200, 'model': body.get('model', 'tiny'), 'system_fingerprint': 'b11669-Debian',
                'object': 'chat.completion', 'id': 'chatcmpl-fake',
                'usage': {'completion_tokens': n, 'prompt_tokens': 20, 'total_tokens': n + 20,
                          'prompt_tokens_details': {'cached_tokens': 0}},
                'timings': self._timings(n),
            }
        return 404, {'error': {'code': 404, 'message': 'File Not Found', 'type': 'not_found_error'}}

    @staticmethod
    def _timings(n):
        return {'cache_n': 0, 'prompt_n': 20, 'prompt_ms': 5.0, 'prompt_per_token_ms': 0.25,
                'prompt_per_second': 4000.0, 'predicted_n': n, 'predicted_ms': n * 1.25,
                'predicted_per_token_ms': 1.25, 'predicted_per_second': 800.0}

    def sse_events(self, body):
        """llama-server's chat stream: a role chunk, one chunk per token, a final chunk
        with finish_reason, usage and timings, then [DONE]."""
        base = {'created': 1764187200, 'id': 'chatcmpl-fake', 'model': body.get('model', 'tiny'),
                'system_fingerprint': 'b11669-Debian', 'object': 'chat.completion.chunk'}
        yield dict(base, choices=[{'finish_reason': None, 'index': 0,
                                   'delta': {'role': 'assistant', 'content': None}}])
        for number, token in enumerate(self.tokens):
            if self.stream_break is not None and number == self.stream_break:
                return
            yield dict(base, choices=[{'finish_reason': None, 'index': 0, 'delta': {'content': token}}])
        n = len(self.tokens)
        yield dict(base, choices=[{'finish_reason': 'stop', 'index': 0, 'delta': {}}],
                   usage={'completion_tokens': n, 'prompt_tokens': 20, 'total_tokens': n + 20},
                   timings=self._timings(n))
        yield '[DONE]'

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = 'HTTP/1.1'

            def _serve(self, method):
                length = int(self.headers.get('Content-Length') or 0)
                raw = self.rfile.read(length) if length else b''
                body = json.loads(raw) if raw else None
                server.requests.append((method, self.path, dict(self.headers), body))
                if server.delay:
                    time.sleep(server.delay)
                status, reply = server.answer(method, self.path, self.headers, body or {})
                try:
                    if reply == 'stream':
                        self._stream(body)
                        return
                    data = json.dumps(reply).encode('utf-8')
                    self.send_response(status)
                    self.send_header('Content-Type', 'application/json; charset=utf-8')
                    self.send_header('Content-Length', str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout tests)

            def _stream(self, body):
                # Chunked text/event-stream, one event per chunk, like llama-server.
                self.send_response(200)
                self.send_header('Content-Type', 'text/event-stream')
                self.send_header('Transfer-Encoding', 'chunked')
                self.end_headers()
                for event in server.sse_events(body):
                    data = ('data: ' + (event if isinstance(event, str) else json.dumps(event)) + '\n\n').encode()
                    self.wfile.write(b'%x\r\n%s\r\n' % (len(data), data))
                    self.wfile.flush()
                    time.sleep(0.005)
                if server.stream_break is not None:
                    self.close_connection = True  # drop it without the last chunk: a crash mid-answer
                    return
                self.wfile.write(b'0\r\n\r\n')

            def do_GET(self):  # noqa: N802 (http.server naming)
                self._serve('GET')

            def do_POST(self):  # noqa: N802
                self._serve('POST')

            def log_message(self, *args):
                pass

        return Handler


class FakeSearxng:
    """SearXNG's /search?format=json, with canned results."""

    def __init__(self, results):
        self.results, self.queries = results, []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                fake.queries.append(self.path)
                data = json.dumps({'query': 'q', 'number_of_results': len(fake.results),
                                   'results': fake.results}).encode()
                self.send_response(200)
                self.send_header('Content-Type', 'application/json')
                self.send_header('Content-Length', str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd, self.url = _serve(Handler)

    def close(self):
        _stop(self.httpd)


@pytest.fixture
def servers():
    """Factory of canned servers, all closed after the test: servers.llama(name, **knobs),
    servers.searxng(results), servers.refused() (a URL where nothing listens)."""
    opened = []

    class Factory:
        @staticmethod
        def llama(name, **knobs):
            opened.append(FakeLlama(name, **knobs))
            return opened[-1]

        @staticmethod
        def searxng(results):
            opened.append(FakeSearxng(results))
            return opened[-1]

        @staticmethod
        def refused():
            return 'http://127.0.0.1:%d' % free_port()

    yield Factory
    for server in opened:
        server.close()


# --- the backend ------------------------------------------------------------------------------

def _tiers(simple, moderate, complex_):
    """Instances for the three levels from lists of URLs (names like the role's: Q2_FAST_1...)."""
    instances = []
    for prefix, level, alias, urls in (('Q2_FAST', 'simple', 'q2-fast', simple),
                                       ('Q3_SYNTH', 'moderate', 'q3-synth', moderate),
                                       ('Q4_DEEP', 'complex', 'q4-deep', complex_)):
        for number, url in enumerate(urls, 1):
            instances.append(Instance(f'{prefix}_{number}', url, level, alias))
    return tuple(instances)


class RunningBackend:
    """create_app(settings) served by a real uvicorn on a loopback port, in a thread."""

    def __init__(self, settings):
        self.settings = settings
        self.app = create_app(settings)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(('127.0.0.1', 0))
        self.url = 'http://127.0.0.1:%d' % sock.getsockname()[1]
        self.ws_url = self.url.replace('http://', 'ws://') + '/ws'
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_config=None, lifespan='on'))
        self.thread = threading.Thread(target=self.server.run, kwargs={'sockets': [sock]}, daemon=True)
        self.thread.start()
        wait_for(lambda: self.server.started or not self.thread.is_alive(), what='uvicorn')
        assert self.server.started, 'the backend did not start'
        self.http = httpx.Client(base_url=self.url, timeout=30)

    def query(self, query, **fields):
        return self.http.post('/api/query', json=dict(fields, query=query))

    def close(self):
        self.http.close()
        self.server.should_exit = True
        self.thread.join(15)


@pytest.fixture
def backend(redis_db, tmp_path):
    """Factory: backend(instances, **settings) -> a RunningBackend (stopped after the test).
    Redis is the test's redis-server; MMO_FAISS_DIR a fresh tmp_path/faiss."""
    started = []

    def start(instances, **overrides):
        options = dict(instances=instances, redis_url=redis_db.url, faiss_dir=str(tmp_path / 'faiss'),
                       request_timeout=5.0)
        options.update(overrides)
        started.append(RunningBackend(Settings(**options)))
        return started[-1]

    yield start
    for running in started:
        running.close()


@pytest.fixture
def stack(servers, backend):
    """The usual deployment: two simple instances, one moderate, one complex, all healthy."""
    class Stack:
        fast1 = servers.llama('Q2_FAST_1')
        fast2 = servers.llama('Q2_FAST_2')
        synth = servers.llama('Q3_SYNTH_1')
        deep = servers.llama('Q4_DEEP_1')

    Stack.backend = backend(_tiers([Stack.fast1.url, Stack.fast2.url], [Stack.synth.url], [Stack.deep.url]))
    return Stack


def _build_index(directory, name, docs, *extra):
    """Run the real CLI: python -m multimodel_backend.build_index DIR NAME docs.jsonl."""
    with tempfile.NamedTemporaryFile('w', suffix='.jsonl', encoding='utf-8') as handle:
        for doc in docs:
            handle.write(json.dumps(doc) + '\n')
        handle.flush()
        return subprocess.run([sys.executable, '-m', 'multimodel_backend.build_index', str(directory), name,
                               handle.name, *extra], cwd=APP_DIR, capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture
def tiers():
    """tiers(simple_urls, moderate_urls, complex_urls) -> Settings.instances."""
    return _tiers


@pytest.fixture
def build_index():
    """build_index(dir, name, docs, *cli_args) -> CompletedProcess of the real CLI."""
    return _build_index


@pytest.fixture
def app_dir():
    """roles/backend/files/app: run `python -m multimodel_backend...` from here."""
    return APP_DIR


@pytest.fixture
def wait_until():
    """wait_until(predicate, timeout=10, what=...): poll until predicate() is true."""
    return wait_for
