"""Graceful drain: what a replica does between SIGTERM and its exit.

serve.py's server starts the drain when the signal arrives; from then on /health answers 503
(the proxy's active health check stops sending new requests here), every HTTP response
closes its connection, and a WebSocket is closed with 1012 (service restart) once its query
is answered. The server exits when the minimum drain delay has passed (enough for the proxy
to notice) and nothing is in flight: no HTTP request, no WebSocket query being answered.
"""

import contextlib
import time
from collections.abc import Iterator

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class Drain:
    """The drain state of one app (one process): whether it drains, since when, what is in flight."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay  # the least seconds between the signal and the exit
        self.since: float | None = None  # time.monotonic() of the signal
        self.active = 0  # HTTP requests and WebSocket queries being answered

    @property
    def draining(self) -> bool:
        return self.since is not None

    def start(self) -> None:
        if self.since is None:
            self.since = time.monotonic()

    def done(self) -> bool:
        """Whether the process may exit: draining, the delay over, and nothing in flight."""
        return self.since is not None and time.monotonic() - self.since >= self.delay and self.active == 0

    @contextlib.contextmanager
    def track(self) -> Iterator[None]:
        self.active += 1
        try:
            yield
        finally:
            self.active -= 1


class DrainMiddleware:
    """Counts HTTP requests in flight; while draining, each response closes its connection,
    so no idle keep-alive connection is left for the proxy to send a request on at exit."""

    def __init__(self, app: ASGIApp, drain: Drain) -> None:
        self.app, self.drain = app, drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def close_when_draining(message: Message) -> None:
            if message["type"] == "http.response.start" and self.drain.draining:
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"connection"]
                message = {**message, "headers": headers + [(b"connection", b"close")]}
            await send(message)

        with self.drain.track():
            await self.app(scope, receive, close_when_draining)
