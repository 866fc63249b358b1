# Copyright (c) 2026, multimodel.orchestration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A canned llama.cpp llama-server: a real HTTP server on 127.0.0.1 that answers with the
status codes and JSON shapes llama-server answers with (as observed on llama.cpp-tools
0.7.0): /health, /v1/models, /v1/completions, /v1/chat/completions (plain or streamed as
server-sent events) and /slots, with knobs for loading, API key, delays and errors.
Like llama-server, it watches the connection while it "generates" (the delay, and between
streamed tokens) and stops when the client goes away: Request.disconnected records it.

The model_health module's tests (probing) and the reference backend's tests (chat, failover)
both use it, through the fake_llama_server and servers fixtures.
"""

import json
import select
import socket
import threading
import time
from dataclasses import dataclass
from email.message import Message
from typing import Any

from support.servers import HTTPServer, QuietHandler, send_json

LOADING = (503, {'error': {'code': 503, 'message': 'Loading model', 'type': 'unavailable_error'}})
UNAUTHORIZED = (401, {'error': {'code': 401, 'message': 'Invalid API Key', 'type': 'authentication_error'}})
SERVER_ERROR = (500, {'error': {'code': 500, 'message': 'failed to decode the batch', 'type': 'server_error'}})
NOT_FOUND = (404, {'error': {'code': 404, 'message': 'File Not Found', 'type': 'not_found_error'}})
NO_SLOTS = (501, {'error': {'code': 501, 'message': 'This server does not support slots endpoint. '
                            'Start it with `--slots`', 'type': 'not_supported_error'}})
STREAM = object()  # answer(): reply with the chat completion stream
CREATED = 1764187200
FINGERPRINT = 'b11669-Debian'


@dataclass
class Request:
    """One request the server got; end is set once its answer is ready."""

    method: str
    path: str
    headers: Message  # case-insensitive: headers['Authorization'], 'Authorization' in headers
    body: bytes
    start: float
    end: float | None = None
    disconnected: float | None = None  # when the client was seen gone before its answer was complete

    @property
    def authorization(self) -> str | None:
        return self.headers.get('Authorization')

    @property
    def json(self) -> Any:
        """The body as JSON, None when empty."""
        return json.loads(self.body) if self.body else None


def _usage(prompt_n: int, n: int) -> dict[str, Any]:
    return {'completion_tokens': n, 'prompt_tokens': prompt_n, 'total_tokens': n + prompt_n}


def _timings(prompt_n: int, n: int) -> dict[str, Any]:
    return {'cache_n': 0, 'prompt_n': prompt_n, 'prompt_ms': prompt_n * 0.25, 'prompt_per_token_ms': 0.25,
            'prompt_per_second': 4000.0, 'predicted_n': n, 'predicted_ms': n * 1.25,
            'predicted_per_token_ms': 1.25, 'predicted_per_second': 800.0}


class FakeLlamaServer:
    """Canned llama-server. Attributes may be changed while it runs.

    name          appears in chat answers ("<name> says: ..."), so tests see who answered
    alias         the model id listed by /v1/models (the first --alias)
    aliases       all --alias values (default [alias])
    state         'ok', 'loading' (503 "Loading model" everywhere, as while a model loads)
                  or 'error' (500 on every path but /health)
    loading_s     answer 503 "Loading model" on every path for this long after start
    loading_requests  ... and to this many requests first (deterministic)
    api_key       when set, every path but /health needs "Authorization: Bearer <key>"
    delay         seconds to sleep before answering each request
    slots         list of slot dicts for /slots; None answers 501 like --no-slots
    override      {path: (status, body[, headers])} to force an answer
    timings       include llama-server's "timings" object in completions
    tokens        the chat answer's pieces, one per streamed chunk
    token_delay   seconds between streamed chunks
    stream_break  close a chat stream after this many tokens (a crash mid-answer)
    sse_raw       a chat stream's body as these raw SSE strings instead (malformed streams)
    build_info    the build /props reports
    tls           (certfile, keyfile): serve https
    """

    def __init__(self, name: str = 'llama', *, alias: str = 'tiny', aliases: list[str] | None = None,
                 state: str = 'ok', loading_s: float = 0.0, loading_requests: int = 0, api_key: str | None = None,
                 delay: float = 0.0, slots: list[dict[str, Any]] | None = None,
                 override: dict[str, tuple] | None = None, timings: bool = True, tokens: list[str] | None = None,
                 stream_break: int | None = None, tls: tuple[str, str] | None = None, token_delay: float = 0.005,
                 sse_raw: list[str] | None = None, build_info: str = 'b6000-0fake0') -> None:
        self.name, self.alias, self.aliases = name, alias, aliases
        self.state, self.loading_s, self.loading_requests = state, loading_s, loading_requests
        self.api_key, self.delay = api_key, delay
        self.slots = slots if slots is not None else [
            {'id': 0, 'id_task': -1, 'n_ctx': 2048, 'speculative': False, 'is_processing': False},
        ]
        self.override = dict(override or {})
        self.timings = timings
        self.tokens = tokens or ['Hello', ' from', ' ' + name, '.']
        self.stream_break = stream_break
        self.token_delay, self.sse_raw = token_delay, sse_raw
        self.build_info = build_info
        self.requests: list[Request] = []  # every request, in the order they arrived
        self._lock = threading.Lock()
        self.started = time.monotonic()
        self._server = HTTPServer(self._handler_class(), tls)
        self.port, self.url = self._server.port, self._server.url

    def close(self) -> None:
        self._server.close()

    def paths(self) -> list[str]:
        return [r.path for r in self.requests]

    def chats(self) -> list[Request]:
        return [r for r in self.requests if r.path == '/v1/chat/completions']

    def _loading(self, number: int) -> bool:
        return (self.state == 'loading' or number < self.loading_requests
                or time.monotonic() - self.started < self.loading_s)

    def answer(self, request: Request, number: int) -> tuple:
        """(status, JSON-able body or bytes or STREAM[, headers]) like llama-server would
        answer the number-th request (from 0)."""
        method, path = request.method, request.path
        if path in self.override:
            return self.override[path]
        if self._loading(number):
            return LOADING
        if self.api_key and path != '/health' and request.authorization != 'Bearer ' + self.api_key:
            return UNAUTHORIZED
        if self.state == 'error' and path != '/health':
            return SERVER_ERROR
        if method == 'GET' and path == '/health':
            return 200, {'status': 'ok'}
        if method == 'GET' and path == '/v1/models':
            return 200, self._models()
        if method == 'POST' and path == '/v1/completions':
            return 200, self._completion(request.json)
        if method == 'POST' and path == '/v1/chat/completions':
            body = request.json or {}
            return (200, STREAM) if body.get('stream') else (200, self._chat_completion(body))
        if method == 'GET' and path == '/props':
            return 200, {'build_info': self.build_info, 'total_slots': len(self.slots or [None])}
        if method == 'GET' and path == '/slots':
            return NO_SLOTS if self.slots is None else (200, self.slots)
        return NOT_FOUND

    def _models(self) -> dict[str, Any]:
        return {
            'models': [{'name': self.alias, 'model': self.alias, 'type': 'model', 'capabilities': ['completion']}],
            'object': 'list',
            'data': [{'id': self.alias, 'aliases': self.aliases or [self.alias], 'tags': [], 'object': 'model',
                      'created': 1795723642, 'owned_by': 'llamacpp',
                      'meta': {'vocab_type': 1, 'n_vocab': 339, 'n_ctx': 2048, 'n_params': 174784}}],
        }

    def _completion(self, body: dict[str, Any]) -> dict[str, Any]:
        n = int(body.get('max_tokens', 16))
        reply = {
            'choices': [{'text': ' hello' * n, 'index': 0, 'logprobs': None, 'finish_reason': 'length'}],
            'created': CREATED, 'model': self.alias, 'system_fingerprint': FINGERPRINT,
            'object': 'text_completion',
            'usage': dict(_usage(2, n), prompt_tokens_details={'cached_tokens': 0}),
            'id': 'chatcmpl-fake',
        }
        if self.timings:
            reply['timings'] = _timings(2, n)
        return reply

    def _chat_completion(self, body: dict[str, Any]) -> dict[str, Any]:
        n = len(self.tokens)
        reply = {
            'choices': [{'finish_reason': 'stop', 'index': 0,
                         'message': {'role': 'assistant', 'content': f'{self.name} says: ' + ''.join(self.tokens)}}],
            'created': CREATED, 'model': body.get('model', self.alias), 'system_fingerprint': FINGERPRINT,
            'object': 'chat.completion', 'id': 'chatcmpl-fake',
            'usage': dict(_usage(20, n), prompt_tokens_details={'cached_tokens': 0}),
        }
        if self.timings:
            reply['timings'] = _timings(20, n)
        return reply

    def sse_events(self, body: dict[str, Any]):
        """llama-server's chat stream: a role chunk, one chunk per token, a final chunk with
        finish_reason and timings, a usage chunk (no choices) only when the request asked
        for it (stream_options.include_usage, as llama.cpp b11669 does), then [DONE]."""
        base = {'created': CREATED, 'id': 'chatcmpl-fake', 'model': body.get('model', self.alias),
                'system_fingerprint': FINGERPRINT, 'object': 'chat.completion.chunk'}
        yield dict(base, choices=[{'finish_reason': None, 'index': 0,
                                   'delta': {'role': 'assistant', 'content': None}}])
        for number, token in enumerate(self.tokens):
            if self.stream_break is not None and number == self.stream_break:
                return
            yield dict(base, choices=[{'finish_reason': None, 'index': 0, 'delta': {'content': token}}])
        n = len(self.tokens)
        final = dict(base, choices=[{'finish_reason': 'stop', 'index': 0, 'delta': {}}])
        if self.timings:
            final['timings'] = _timings(20, n)
        yield final
        if (body.get('stream_options') or {}).get('include_usage'):
            yield dict(base, choices=[], usage=dict(_usage(20, n), prompt_tokens_details={'cached_tokens': 0}))
        yield '[DONE]'

    def _record(self, request: Request) -> int:
        """Record a request as it arrives; return how many came before it."""
        with self._lock:
            self.requests.append(request)
            return len(self.requests) - 1

    def _handler_class(self) -> type[QuietHandler]:
        server = self

        class Handler(QuietHandler):
            protocol_version = 'HTTP/1.1'

            def _serve(self, method: str) -> None:
                start = time.monotonic()
                length = int(self.headers.get('Content-Length') or 0)
                request = Request(method, self.path, self.headers, self.rfile.read(length) if length else b'', start)
                number = server._record(request)  # pylint: disable=protected-access
                if server.delay and not self._generate(request, server.delay):
                    request.end, self.close_connection = time.monotonic(), True
                    return  # the client went away: no answer, like llama-server
                status, reply, *headers = server.answer(request, number)
                request.end = time.monotonic()
                try:
                    if reply is STREAM:
                        self._stream(request)
                    else:
                        send_json(self, status, reply, *headers)
                except (BrokenPipeError, ConnectionResetError):
                    request.disconnected = request.disconnected or time.monotonic()  # the client gave up

            def _client_gone(self) -> bool:
                """Whether the client closed its end (EOF waiting to be read), as llama-server checks."""
                try:
                    readable = select.select([self.connection], [], [], 0)[0]
                    return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b''
                except ValueError:  # TLS sockets take no recv flags: cannot tell
                    return False
                except OSError:
                    return True

            def _generate(self, request: Request, seconds: float) -> bool:
                """Spend seconds "generating", watching the client; False when it went away."""
                deadline = time.monotonic() + seconds
                while (left := deadline - time.monotonic()) > 0:
                    if self._client_gone():
                        request.disconnected = time.monotonic()
                        return False
                    time.sleep(min(0.01, left))
                return True

            def _stream(self, request: Request) -> None:
                # Chunked text/event-stream, one event per chunk, like llama-server.
                self.send_response(200)
                self.send_header('Content-Type', 'text/event-stream')
                self.send_header('Transfer-Encoding', 'chunked')
                self.end_headers()
                events = server.sse_raw if server.sse_raw is not None else (
                    'data: ' + (e if isinstance(e, str) else json.dumps(e)) + '\n\n'
                    for e in server.sse_events(request.json))  # lazily: subclasses may pace them
                for event in events:
                    data = event.encode()
                    self.wfile.write(b'%x\r\n%s\r\n' % (len(data), data))
                    self.wfile.flush()
                    if not self._generate(request, server.token_delay):
                        self.close_connection = True
                        return
                if server.stream_break is not None:
                    self.close_connection = True  # drop it without the last chunk: a crash mid-answer
                    return
                self.wfile.write(b'0\r\n\r\n')

            def do_GET(self) -> None:  # noqa: N802 (http.server naming)
                self._serve('GET')

            def do_POST(self) -> None:  # noqa: N802
                self._serve('POST')

        return Handler
