# Copyright (c) 2026, multimodel.orchestration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Real servers on 127.0.0.1 for the fakes, and the helpers around them.

support/ holds the test doubles the unit tests share: these servers, a canned llama-server
(fake_llama.py) and a canned SearXNG (fake_searxng.py); the conftest.py files wrap them in
fixtures. (Its __init__.py stays empty: ansible-test's empty-init rule.)
"""

import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol, TypeVar


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (connections are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def refused_url() -> str:
    """An http:// URL on 127.0.0.1 where nothing listens."""
    return 'http://127.0.0.1:%d' % free_port()


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, what: str = 'condition') -> None:
    """Poll predicate() until it is true; AssertionError after timeout seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f'timed out waiting for {what}')


class HTTPServer:
    """Serve a BaseHTTPRequestHandler class on a free loopback port, in a daemon thread."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], tls: tuple[str, str] | None = None) -> None:
        self.httpd = ThreadingHTTPServer(('127.0.0.1', 0), handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = 'http://127.0.0.1:%d' % self.port
        if tls:  # (certfile, keyfile): serve https
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
            self.url = 'https://127.0.0.1:%d' % self.port
        # A short poll interval makes shutdown() (each test's teardown) quick.
        threading.Thread(target=self.httpd.serve_forever, kwargs={'poll_interval': 0.05}, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def send_json(handler: BaseHTTPRequestHandler, status: int, reply: Any, headers: dict[str, str] | None = None,
              content_type: str = 'application/json; charset=utf-8') -> None:
    """Answer with reply as JSON (bytes are sent as they are) and a Content-Length."""
    data = reply if isinstance(reply, bytes) else json.dumps(reply).encode('utf-8')
    handler.send_response(status)
    handler.send_header('Content-Type', content_type)
    handler.send_header('Content-Length', str(len(data)))
    for header, value in (headers or {}).items():
        handler.send_header(header, value)
    handler.end_headers()
    handler.wfile.write(data)


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler that keeps pytest's output clean."""

    def log_message(self, *args: Any) -> None:  # pylint: disable=arguments-differ
        pass


class RawServer:
    """A TCP server that answers each connection with fixed bytes (or closes it at once),
    for the not-HTTP and dropped-connection cases."""

    def __init__(self, reply: bytes = b'') -> None:
        self.reply = reply
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(('127.0.0.1', 0))
        self.sock.listen(16)
        self.url = 'http://127.0.0.1:%d' % self.sock.getsockname()[1]
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
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

    def close(self) -> None:
        self._stop = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() on Linux
        except OSError:
            pass
        self.sock.close()


class Closeable(Protocol):
    def close(self) -> None:
        """Stop serving and free the port."""


T = TypeVar('T', bound=Closeable)


@contextmanager
def started(factory: Callable[..., T]) -> Iterator[Callable[..., T]]:
    """Yield start(*args, **kwargs) -> factory(*args, **kwargs); close all it started on exit
    (what the server fixtures yield)."""
    opened: list[T] = []

    def start(*args: Any, **kwargs: Any) -> T:
        opened.append(factory(*args, **kwargs))
        return opened[-1]

    try:
        yield start
    finally:
        for server in opened:
            server.close()


class BlackHole:
    """A TCP port on 127.0.0.1 that takes connections (the kernel's backlog completes them)
    but never reads or answers: a server hung or wedged, so every request times out."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(('127.0.0.1', 0))
        self.sock.listen(1024)
        self.url = 'http://127.0.0.1:%d' % self.sock.getsockname()[1]

    def close(self) -> None:
        self.sock.close()


class RecordingProxy:
    """An HTTP proxy on 127.0.0.1 that forwards nothing: it records each request line (an
    absolute URL for http://, CONNECT host:port for https://) with its Authorization
    header, and answers 502, so a test sees what a proxy would have been handed."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str | None]] = []
        proxy = self

        class Handler(QuietHandler):
            def _record(self) -> None:
                proxy.requests.append((self.requestline, self.headers.get('Authorization')))
                send_json(self, 502, {'error': 'recording proxy: not forwarded'})

            do_GET = do_POST = do_CONNECT = _record  # noqa: N815 (http.server naming)

        self._server = HTTPServer(Handler)
        self.url = self._server.url

    def close(self) -> None:
        self._server.close()
