"""The HTTP and WebSocket routes: GET /health, GET /health/ready, GET /metrics,
POST /api/query, POST /api/login, POST /api/logout, GET /api/session, WebSocket /ws, and the
OpenAI-compatible /v1 API (openai_api.py). See README.md for the contract.

Middlewares, outermost first: drain (counts requests in flight), metrics, CORS (when
configured; answers preflights, which carry no key), API keys (auth.py), body limit (413),
then the routes.
"""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

from fastapi import FastAPI, HTTPException, Request, WebSocket, WebSocketDisconnect
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Scope

from .auth import AuthMiddleware, BodyLimitMiddleware, bearer, error_body, header, is_https, login_cookie, \
    logout_cookie
from .config import Settings
from .drain import Drain, DrainMiddleware
from .limits import Busy, TooManyTokens
from .llama import TierUnavailable, UpstreamError, UpstreamTimeout
from .log import logger, setup_logging
from .metrics import Metrics, RequestMetrics
from .openai_api import router as openai_router
from .schemas import QueryRequest, describe_errors
from .service import Backend, ClientDisconnected, until_disconnected

# What answering a query may raise besides a bad request, each mapped to its status.
QUERY_ERRORS = (TooManyTokens, Busy, TierUnavailable, UpstreamError)
WS_INBOX = 4  # queries a WebSocket client may send ahead of the one being answered
CLIENT_CLOSED = 499  # nginx's code for "the client went away first": only the metrics see it


def query_error(exc: Exception) -> JSONResponse:
    """The /api response of an exception in QUERY_ERRORS."""
    if isinstance(exc, TooManyTokens):
        return JSONResponse({"detail": str(exc), "tier": exc.tier, "limit": exc.limit}, status_code=400)
    if isinstance(exc, Busy):
        return JSONResponse({"detail": str(exc), "tier": exc.tier}, status_code=429,
                            headers={"Retry-After": str(exc.retry_after)})
    if isinstance(exc, TierUnavailable):
        return JSONResponse({"detail": str(exc), "tier": exc.tier, "tried": exc.tried}, status_code=503)
    assert isinstance(exc, UpstreamError)
    verb = "did not answer in time" if isinstance(exc, UpstreamTimeout) else "refused the query"
    return JSONResponse({"detail": f"instance {exc.instance.name} {verb}: {exc.reason}",
                         "tier": exc.instance.complexity, "tried": [exc.instance.name]},
                        status_code=504 if isinstance(exc, UpstreamTimeout) else 502)


def _origin(url: str) -> str | None:
    """scheme://host[:port], lower case, without the scheme's default port."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    default = {"http": 80, "https": 443}[parts.scheme]
    return f"{parts.scheme}://{host}" + ("" if port in (None, default) else f":{port}")


def origin_allowed(scope: Scope, settings: Settings) -> bool:
    """A WebSocket upgrade's Origin: none (not a browser), a configured origin, or the site's
    own (the scheme the client used, and the Host header the proxy keeps)."""
    origin = header(scope, b"origin")
    if origin is None:
        return True
    given = _origin(origin)
    if given is None:
        return False
    allowed = {_origin(o) for o in settings.allowed_origins + settings.cors_origins}
    host = header(scope, b"host")
    if host:
        allowed.add(_origin(f"{'https' if is_https(scope) else 'http'}://{host}"))
    return given in allowed


def create_app(settings: Settings) -> FastAPI:
    metrics = Metrics()
    drain = Drain(settings.drain_delay)  # started by serve.py's server on SIGTERM
    setup_logging(settings.secrets())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        backend = Backend(settings, metrics)
        await asyncio.to_thread(backend.store.refresh)
        logger.info("starting: %d llama-server instances (%s), %d retrieval indexes in %s, cache TTL %ss, "
                    "API keys %s", len(settings.instances),
                    ", ".join(f"{i.name}={i.complexity}" for i in settings.instances),
                    len(backend.store.indexes), settings.faiss_dir, settings.cache_ttl,
                    f"on ({len(settings.api_keys)})" if settings.auth else "OFF")
        app.state.backend = backend
        try:
            yield
        finally:
            await backend.aclose()
            logger.info("shut down: Redis and HTTP clients closed")

    app = FastAPI(title="multimodel backend", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.drain = drain
    # add_middleware wraps what was added before: the last added is the outermost.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes, metrics=metrics)
    app.add_middleware(AuthMiddleware, settings=settings, metrics=metrics)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Content-Type", "Authorization"])
    app.add_middleware(RequestMetrics, metrics=metrics)
    app.add_middleware(DrainMiddleware, drain=drain)  # the outermost: counts every request

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        message = describe_errors(exc.errors())  # FastAPI says 422
        return JSONResponse(error_body(request.url.path, 400, message, "invalid_request"), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        # 404 and 405 of a /v1 path in OpenAI's shape, for the SDKs' error handling.
        body = error_body(request.url.path, exc.status_code, str(exc.detail),
                          "not_found" if exc.status_code == 404 else "invalid_request")
        return JSONResponse(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    # response_model=None: FastAPI would turn a dict return annotation into a response model
    # (validation on every call, a schema in /openapi.json); these annotations are for readers.
    # While draining (SIGTERM), 503: the proxy's active health check stops sending requests here.
    @app.get("/health", response_model=None)
    async def health() -> dict[str, str] | JSONResponse:
        if drain.draining:
            return JSONResponse({"status": "draining"}, status_code=503)
        return {"status": "ok"}

    @app.get("/health/ready")
    async def ready(request: Request) -> JSONResponse:
        if drain.draining:
            return JSONResponse({"status": "draining"}, status_code=503)
        ok, body = await request.app.state.backend.readiness()
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/metrics")
    async def metrics_endpoint() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.post("/api/login", status_code=204)
    async def login(request: Request) -> Response:
        """Bearer key in (AuthMiddleware checked it), the cookie out: the browser page's login."""
        response = Response(status_code=204)
        key = bearer(request.scope)
        if settings.auth and key:
            response.headers.append("set-cookie", login_cookie(key, is_https(request.scope)).decode())
        return response

    @app.post("/api/logout", status_code=204)
    async def logout(request: Request) -> Response:
        response = Response(status_code=204)
        response.headers.append("set-cookie", logout_cookie(is_https(request.scope)).decode())
        return response

    @app.get("/api/session", status_code=204)
    async def session() -> Response:
        """204 when the request carries a valid key (or keys are off): the page asks for one on 401."""
        return Response(status_code=204)

    @app.post("/api/query", response_model=None)
    async def query(req: QueryRequest, request: Request) -> dict[str, Any] | Response:
        backend = request.app.state.backend
        try:
            # The client going away cancels the generation (llama-server frees the slot).
            return await until_disconnected(request.receive, backend.answer(req))
        except ClientDisconnected:
            return Response(status_code=CLIENT_CLOSED)
        except QUERY_ERRORS as exc:
            return query_error(exc)

    app.include_router(openai_router)  # /v1/models, /v1/chat/completions

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        if not origin_allowed(websocket.scope, settings):
            # Cross-site WebSocket hijacking: another site's page would use this browser's cookie.
            metrics.ws_refused.inc()
            logger.warning("WebSocket from Origin %r refused", websocket.headers.get("origin"))
            await websocket.close(code=1008)  # before accept: the server answers 403
            return
        await websocket.accept()
        await _ws_session(websocket, settings, metrics, drain)

    return app


async def _ws_session(websocket: WebSocket, settings: Settings, metrics: Metrics, drain: Drain) -> None:
    """Several queries per connection, one at a time. The socket is read all along, so a client
    that closes mid-answer cancels the generation at once (llama-server frees the slot)."""
    backend = websocket.app.state.backend
    inbox: asyncio.Queue[str] = asyncio.Queue(WS_INBOX)
    gone = asyncio.Event()  # the client closed, or sent more queries than the inbox holds
    flooded = False

    async def read() -> None:
        nonlocal flooded
        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                raw = message.get("text") or (message.get("bytes") or b"").decode("utf-8", "replace")
                try:
                    inbox.put_nowait(raw)
                except asyncio.QueueFull:
                    flooded = True
                    return
        finally:
            gone.set()

    reader = asyncio.create_task(read())
    try:
        while True:
            if inbox.empty() and gone.is_set():
                break
            raw = await _next(inbox, gone)
            if raw is None:
                break
            if len(raw.encode("utf-8")) > settings.max_body_bytes:
                await websocket.send_json({"type": "error", "message": f"message over {settings.max_body_bytes} bytes"})
                metrics.ws_queries.labels("error").inc()
                await websocket.close(1009, "message too big")
                return
            with drain.track():  # a query being answered holds the drain until it is done
                outcome = await _until_gone(_ws_query(websocket, backend, raw), gone)
            metrics.ws_queries.labels(outcome).inc()
            if outcome == "disconnected":
                return
            if drain.draining:
                # Answered; the client reconnects (through the proxy, to another replica).
                await websocket.close(1012, "service restart")
                return
        if flooded:
            await websocket.close(1008, f"at most {WS_INBOX} queries waiting")
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)


async def _race(work: Any, gone: asyncio.Event) -> "asyncio.Future[Any]":
    """Run work until it is done or the client is gone, whichever comes first (then work is
    cancelled, and awaited so it can clean up); return its task."""
    task = asyncio.ensure_future(work)
    waiter = asyncio.ensure_future(gone.wait())
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    return task


async def _next(inbox: "asyncio.Queue[str]", gone: asyncio.Event) -> str | None:
    """The next query of the inbox, or None once the client is gone and nothing is left."""
    if not inbox.empty():
        return inbox.get_nowait()
    getter = await _race(inbox.get(), gone)
    return None if getter.cancelled() else getter.result()


async def _until_gone(work: Any, gone: asyncio.Event) -> str:
    """The outcome of work, or "disconnected" when the client goes first: work is cancelled,
    which closes the upstream stream and frees the tier's slot."""
    task = await _race(work, gone)
    if task.cancelled():
        return "disconnected"
    try:
        return task.result()
    except (WebSocketDisconnect, OSError, RuntimeError):  # a send to a socket closed meanwhile
        return "disconnected"


async def _ws_query(websocket: WebSocket, backend: Backend, raw: str) -> str:
    """Answer one WebSocket query: token messages, then done (or one error message); return
    the outcome ("ok" or "error") the metrics count."""
    async def on_token(text: str) -> None:
        await websocket.send_json({"type": "token", "text": text})

    extra: dict[str, Any] = {}
    try:
        reply = await backend.answer(QueryRequest.model_validate_json(raw), on_token)
    except ValidationError as exc:
        error = describe_errors(exc.errors())
    except HTTPException as exc:
        error = exc.detail
    except QUERY_ERRORS as exc:
        error = str(exc)
        if isinstance(exc, Busy):
            extra["retry_after"] = exc.retry_after
    else:
        if reply["cached"]:
            await websocket.send_json({"type": "token", "text": reply["answer"]})
        del reply["answer"]
        await websocket.send_json({"type": "done", **reply})
        return "ok"
    await websocket.send_json({"type": "error", "message": error, **extra})
    return "error"
