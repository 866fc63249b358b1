"""API keys (MMO_API_KEYS_FILE) for /api/*, /v1/* and /ws, and the request body limit.

A client presents a key as `Authorization: Bearer KEY` or, from the browser page, as the
cookie mmo_key that `POST /api/login` (with the bearer header) sets: HttpOnly (scripts
cannot read it), SameSite=Strict (other sites' pages cannot send it), Secure when the
request came over https. Keys are compared in constant time with every configured key.
/health, /health/ready and /metrics need no key: only /health is routed by the proxy.

Both middlewares are pure ASGI: a refused request never reaches the routes, and its body is
never parsed (the 401 or 413 comes first; the rest of a refused body is read and thrown away,
within bounds, so that the client gets the answer rather than a connection reset).
"""

import asyncio
import hmac
import json
from collections.abc import Iterable
from urllib.parse import quote, unquote

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .config import Settings
from .metrics import Metrics

COOKIE = "mmo_key"
COOKIE_MAX_AGE = 30 * 24 * 3600  # the browser asks for the key again after 30 days
LOGIN, LOGOUT = "/api/login", "/api/logout"
# The proxy adds this; without a proxy (tests, direct access) the connection's own scheme counts.
FORWARDED_PROTO = b"x-forwarded-proto"
# How much of a refused body is read and discarded before the 401 or 413 (see discard_body).
DISCARD_MAX_BYTES = 16 * 1024 * 1024
DISCARD_MAX_SECONDS = 5.0


def protected(path: str) -> bool:
    """Whether a path needs a key (everything a client of the site uses; not the probes)."""
    return path == "/ws" or path in ("/api", "/v1") or path.startswith(("/api/", "/v1/"))


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def is_https(scope: Scope) -> bool:
    forwarded = header(scope, FORWARDED_PROTO)
    if forwarded:
        return forwarded.split(",")[0].strip().lower() in ("https", "wss")
    return scope.get("scheme") in ("https", "wss")


def error_body(path: str, status: int, message: str, code: str) -> dict:
    """The error shape of the API the path belongs to: OpenAI's on /v1, {"detail"} elsewhere."""
    if path == "/v1" or path.startswith("/v1/"):
        kind = "invalid_request_error" if status < 500 else "server_error"
        return {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return {"detail": message}


async def send_json(send: Send, status: int, body: dict, headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    data = json.dumps(body).encode("utf-8")
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": data})


class Keys:
    def __init__(self, keys: Iterable[str]) -> None:
        self._keys = [k.encode("utf-8") for k in keys]

    def valid(self, candidate: str | None) -> bool:
        """Constant time for a given candidate: every key is compared, no early exit."""
        if not candidate:
            return False
        given = candidate.encode("utf-8", "surrogateescape")
        found = False
        for key in self._keys:
            found |= hmac.compare_digest(given, key)
        return found


def bearer(scope: Scope) -> str | None:
    """The key of an `Authorization: Bearer KEY` header ("" for another scheme: not a key)."""
    value = header(scope, b"authorization")
    if value is None:
        return None
    scheme, _space, key = value.strip().partition(" ")
    return key.strip() if scheme.lower() == "bearer" else ""


def cookie(scope: Scope) -> str | None:
    raw = header(scope, b"cookie")
    for part in (raw or "").split(";"):
        name, _equals, value = part.strip().partition("=")
        if name == COOKIE and value:
            return unquote(value)
    return None


def login_cookie(key: str, secure: bool) -> bytes:
    flags = "; Secure" if secure else ""
    return f"{COOKIE}={quote(key, safe='')}; Max-Age={COOKIE_MAX_AGE}; Path=/; HttpOnly; SameSite=Strict{flags}".encode()


def logout_cookie(secure: bool) -> bytes:
    flags = "; Secure" if secure else ""
    return f"{COOKIE}=; Max-Age=0; Path=/; HttpOnly; SameSite=Strict{flags}".encode()


class AuthMiddleware:
    """Refuses requests to protected paths without a valid key: 401 with
    `WWW-Authenticate: Bearer` (a WebSocket: refused before the upgrade). POST /api/login
    checks the bearer key itself (the route sets the cookie); /api/logout needs no key."""

    def __init__(self, app: ASGIApp, settings: Settings, metrics: Metrics) -> None:
        self.app, self.enabled, self.metrics = app, settings.auth, metrics
        self.keys = Keys(settings.api_keys)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] not in ("http", "websocket") or not self.enabled or not protected(scope["path"])
                or scope["path"] == LOGOUT):
            return await self.app(scope, receive, send)
        key = bearer(scope)
        if key is None and scope["path"] != LOGIN:
            key = cookie(scope)
        if self.keys.valid(key):
            return await self.app(scope, receive, send)
        reason = "missing" if key is None else "invalid"
        self.metrics.auth_failures.labels(reason).inc()
        message = ("missing API key: send the header 'Authorization: Bearer KEY' (the browser page logs in "
                   "at POST /api/login)" if reason == "missing" else "invalid API key")
        if scope["type"] == "websocket":
            return await self._refuse_websocket(scope, send, message)
        await discard_body(scope, receive)
        await send_json(send, 401, error_body(scope["path"], 401, message, "invalid_api_key"),
                        [(b"www-authenticate", b"Bearer")])

    @staticmethod
    async def _refuse_websocket(scope: Scope, send: Send, message: str) -> None:
        if "websocket.http.response" in scope.get("extensions", {}):  # a real 401 before the upgrade
            data = json.dumps({"detail": message}).encode("utf-8")
            await send({"type": "websocket.http.response.start", "status": 401,
                        "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer"),
                                    (b"content-length", str(len(data)).encode())]})
            await send({"type": "websocket.http.response.body", "body": data})
        else:  # the server answers 403 to a close before accept
            await send({"type": "websocket.close", "code": 1008, "reason": ""})


async def discard_body(scope: Scope, receive: Receive) -> None:
    """Read and throw away the rest of a request body we refuse, before answering.

    The client is still sending it: a connection closed with its bytes unread is reset by the
    kernel, and the client may lose the answer already sent (httpx: "connection reset by
    peer" instead of the 401 or 413). nginx's lingering close does the same, within bounds:
    a client that asked for 100-continue sends nothing until told to; one that sends more than
    DISCARD_MAX_BYTES, or slower than DISCARD_MAX_SECONDS, gets the answer at once.
    """
    if (header(scope, b"expect") or "").strip().lower() == "100-continue":
        return
    length = header(scope, b"content-length")
    if length is not None and length.strip().isdigit() and int(length) > DISCARD_MAX_BYTES:
        return

    async def read_rest() -> None:
        discarded = 0
        while discarded <= DISCARD_MAX_BYTES:
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                return
            discarded += len(message.get("body", b""))

    try:
        await asyncio.wait_for(read_rest(), DISCARD_MAX_SECONDS)
    except asyncio.TimeoutError:
        pass


class BodyLimitMiddleware:
    """413 for a request body over max_body_bytes, before the app parses it: at once from
    Content-Length, or as soon as a chunked body grows past the limit (the app then sees the
    client gone and its own answer is replaced by the 413)."""

    def __init__(self, app: ASGIApp, max_bytes: int, metrics: Metrics) -> None:
        self.app, self.max_bytes, self.metrics = app, max_bytes, metrics

    async def _too_large(self, scope: Scope, send: Send) -> None:
        self.metrics.body_too_large.inc()
        message = f"request body over {self.max_bytes} bytes"
        await send_json(send, 413, error_body(scope["path"], 413, message, "request_too_large"),
                        [(b"connection", b"close")])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = header(scope, b"content-length")
        if length is not None and length.strip().isdigit() and int(length) > self.max_bytes:
            await discard_body(scope, receive)
            return await self._too_large(scope, send)
        received, too_large, started = 0, False, False

        async def limited_receive() -> Message:
            nonlocal received, too_large
            if too_large:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    too_large = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if too_large and not started:
                return  # the app's answer to a body it never got whole: the 413 goes instead
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:  # pylint: disable=broad-exception-caught
            if not too_large or started:
                raise  # the app saw a disconnect it would not have seen otherwise: only then ours to handle
        if too_large and not started:
            await discard_body(scope, receive)
            await self._too_large(scope, send)
