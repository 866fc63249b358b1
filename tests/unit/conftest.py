# Copyright (c) 2026, multimodel.orchestration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Shared pytest setup for the unit tests.

1. Make ``ansible_collections.multimodel.orchestration`` importable from this checkout,
   whatever directory it lives in, without putting a symlink inside the repository.
2. Provide ``fake_llama_server``: a real HTTP server on 127.0.0.1 that answers like
   llama.cpp's llama-server (same status codes and JSON shapes as observed on
   llama.cpp-tools 0.7.0), with knobs for loading, API key, delays and errors.
"""

import atexit
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _link_checkout(base):
    """Make base/ansible_collections/multimodel/orchestration a symlink to this checkout;
    return False when a real directory (e.g. an installed copy) is in the way."""
    namespace = os.path.join(base, 'ansible_collections', 'multimodel')
    link = os.path.join(namespace, 'orchestration')
    os.makedirs(namespace, exist_ok=True)
    if os.path.realpath(link) == ROOT:
        return True
    if os.path.lexists(link) and not os.path.islink(link):
        return False
    if os.path.islink(link):
        os.unlink(link)  # a stale link to another checkout
    try:
        os.symlink(ROOT, link)
    except FileExistsError:
        pass  # another pytest process made it at the same moment
    return os.path.realpath(link) == ROOT


def _collections_dir():
    """A directory holding ansible_collections/multimodel/orchestration -> this checkout."""
    parent = os.path.dirname(ROOT)
    # Already inside a collection tree (e.g. ansible-test units): use it as is.
    if os.path.basename(parent) == 'multimodel' \
            and os.path.basename(os.path.dirname(parent)) == 'ansible_collections':
        return os.path.dirname(os.path.dirname(parent))
    # `make setup` links the checkout there too (ansible.cfg's collections_path).
    base = os.path.join(ROOT, '.venv', 'collections')
    if os.path.isdir(os.path.join(ROOT, '.venv')) and _link_checkout(base):
        return base
    base = tempfile.mkdtemp(prefix='mmo-unit-collections-')
    atexit.register(shutil.rmtree, base, True)  # rmtree removes the link, not the checkout
    _link_checkout(base)
    return base


sys.path.insert(0, _collections_dir())


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on (connections are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


class FakeLlamaServer:
    """Canned llama-server. Attributes may be changed while it runs.

    loading_s     answer 503 "Loading model" on every path for this long after start
    loading_requests  ... and to this many requests first (deterministic)
    api_key       when set, every path but /health needs "Authorization: Bearer <key>"
    alias         the model id listed by /v1/models (the first --alias)
    aliases       all --alias values (default [alias])
    delay         seconds to sleep before answering each request
    slots         list of slot dicts for /slots; None answers 501 like --no-slots
    override      {path: (status, body[, headers])} to force an answer
    timings       include llama-server's "timings" object in completions
    tls           (certfile, keyfile): serve https
    """

    def __init__(self, alias='tiny', aliases=None, api_key=None, loading_s=0.0, loading_requests=0, delay=0.0,
                 slots=None, override=None, timings=True, tls=None):
        self.alias = alias
        self.aliases = aliases
        self.loading_requests = loading_requests
        self.api_key = api_key
        self.loading_s = loading_s
        self.delay = delay
        self.slots = slots if slots is not None else [
            {'id': 0, 'id_task': -1, 'n_ctx': 2048, 'speculative': False, 'is_processing': False},
        ]
        self.override = dict(override or {})
        self.timings = timings
        # (method, path, authorization header, body, start, end) of every request.
        self.requests = []
        self._lock = threading.Lock()
        self.started = time.monotonic()
        self.httpd = ThreadingHTTPServer(('127.0.0.1', 0), self._handler_class())
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = 'http://127.0.0.1:%d' % self.port
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
            self.url = 'https://127.0.0.1:%d' % self.port
        # A short poll interval makes shutdown() (each test's teardown) quick.
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={'poll_interval': 0.05},
                                        daemon=True)
        self._thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def paths(self):
        return [r[1] for r in self.requests]

    def answer(self, method, path, auth, body):
        """Return (status, JSON-able body) like llama-server would."""
        if path in self.override:
            return self.override[path]
        if len(self.requests) < self.loading_requests or time.monotonic() - self.started < self.loading_s:
            return 503, {'error': {'code': 503, 'message': 'Loading model', 'type': 'unavailable_error'}}
        if self.api_key and path != '/health' and auth != 'Bearer ' + self.api_key:
            return 401, {'error': {'code': 401, 'message': 'Invalid API Key', 'type': 'authentication_error'}}
        if method == 'GET' and path == '/health':
            return 200, {'status': 'ok'}
        if method == 'GET' and path == '/v1/models':
            aliases = self.aliases or [self.alias]
            return 200, {
                'models': [{'name': self.alias, 'model': self.alias, 'type': 'model',
                            'capabilities': ['completion']}],
                'object': 'list',
                'data': [{'id': self.alias, 'aliases': aliases, 'tags': [], 'object': 'model',
                          'created': 1795723642, 'owned_by': 'llamacpp',
                          'meta': {'vocab_type': 1, 'n_vocab': 339, 'n_ctx': 2048, 'n_params': 174784}}],
            }
        if method == 'POST' and path == '/v1/completions':
            request = json.loads(body.decode('utf-8'))
            n = int(request.get('max_tokens', 16))
            reply = {
                'choices': [{'text': ' hello' * n, 'index': 0, 'logprobs': None, 'finish_reason': 'length'}],
                'created': 1764187200, 'model': self.alias, 'system_fingerprint': 'b11669-Debian',
                'object': 'text_completion',
                'usage': {'completion_tokens': n, 'prompt_tokens': 2, 'total_tokens': n + 2,
                          'prompt_tokens_details': {'cached_tokens': 0}},
                'id': 'chatcmpl-fake',
            }
            if self.timings:
                reply['timings'] = {'cache_n': 0, 'prompt_n': 2, 'prompt_ms': 0.5,
                                    'prompt_per_token_ms': 0.25, 'prompt_per_second': 4000.0,
                                    'predicted_n': n, 'predicted_ms': n * 1.25,
                                    'predicted_per_token_ms': 1.25, 'predicted_per_second': 800.0}
            return 200, reply
        if method == 'GET' and path == '/slots':
            if self.slots is None:
                return 501, {'error': {'code': 501, 'message': 'This server does not support slots endpoint. '
                                       'Start it with `--slots`', 'type': 'not_supported_error'}}
            return 200, self.slots
        return 404, {'error': {'code': 404, 'message': 'File Not Found', 'type': 'not_found_error'}}

    def _handler_class(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = 'HTTP/1.1'

            def _serve(self, method):
                start = time.monotonic()
                length = int(self.headers.get('Content-Length') or 0)
                body = self.rfile.read(length) if length else b''
                if server.delay:
                    time.sleep(server.delay)
                answer = server.answer(method, self.path, self.headers.get('Authorization'), body)
                status, reply = answer[:2]
                extra_headers = answer[2] if len(answer) > 2 else {}
                data = reply if isinstance(reply, bytes) else json.dumps(reply).encode('utf-8')
                # Record before answering, so a test sees the request once the client has the reply.
                with server._lock:
                    server.requests.append((method, self.path, self.headers.get('Authorization'),
                                            body, start, time.monotonic()))
                try:
                    self.send_response(status)
                    self.send_header('Content-Type', 'application/json; charset=utf-8')
                    self.send_header('Content-Length', str(len(data)))
                    for header, value in extra_headers.items():
                        self.send_header(header, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout tests)

            def do_GET(self):  # noqa: N802 (http.server naming)
                self._serve('GET')

            def do_POST(self):  # noqa: N802
                self._serve('POST')

            def log_message(self, *args):  # keep pytest output clean
                pass

        return Handler


@pytest.fixture
def fake_llama_server():
    """Factory: fake_llama_server(**knobs) -> a running FakeLlamaServer, closed after the test."""
    servers = []

    def start(**kwargs):
        server = FakeLlamaServer(**kwargs)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


class RawServer:
    """A TCP server that answers each connection with fixed bytes (or closes it at once),
    for the not-HTTP and dropped-connection cases."""

    def __init__(self, reply=b''):
        self.reply = reply
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(('127.0.0.1', 0))
        self.sock.listen(16)
        self.url = 'http://127.0.0.1:%d' % self.sock.getsockname()[1]
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop:
            try:
                conn, dummy = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(1)
                try:
                    conn.recv(65536)
                    if self.reply:
                        conn.sendall(self.reply)
                except OSError:
                    pass

    def close(self):
        self._stop = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() on Linux
        except OSError:
            pass
        self.sock.close()


@pytest.fixture
def raw_server():
    servers = []

    def start(reply=b''):
        server = RawServer(reply)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def refused_url():
    return 'http://127.0.0.1:%d' % free_port()


@pytest.fixture(scope='session')
def self_signed_cert(tmp_path_factory):
    """(certfile, keyfile) of a self-signed certificate for 127.0.0.1, made with openssl."""
    if not shutil.which('openssl'):
        pytest.skip('openssl is not installed')
    directory = tmp_path_factory.mktemp('tls')
    cert, key = str(directory / 'cert.pem'), str(directory / 'key.pem')
    subprocess.run(['openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert,
                    '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'],
                   check=True, capture_output=True)
    return cert, key
