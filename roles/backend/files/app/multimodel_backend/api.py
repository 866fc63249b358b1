"""The HTTP and WebSocket routes: GET /health, GET /health/ready, GET /metrics,
POST /api/query, WebSocket /ws. See README.md for the contract.
"""

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException, Request, WebSocket, WebSocketDisconnect
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import ValidationError

from .config import Instance, Settings
from .drain import Drain, DrainMiddleware
from .llama import Messages, TierUnavailable, UpstreamError
from .log import logger, setup_logging
from .metrics import Metrics, RequestMetrics
from .schemas import QueryRequest, describe_errors
from .service import Backend


def create_app(settings: Settings) -> FastAPI:
    metrics = Metrics()
    drain = Drain(settings.drain_delay)  # started by serve.py's server on SIGTERM
    setup_logging(settings.secrets())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        backend = Backend(settings, metrics)
        await asyncio.to_thread(backend.store.refresh)
        logger.info("starting: %d llama-server instances (%s), %d retrieval indexes in %s, cache TTL %ss",
                    len(settings.instances), ", ".join(f"{i.name}={i.complexity}" for i in settings.instances),
                    len(backend.store.indexes), settings.faiss_dir, settings.cache_ttl)
        app.state.backend = backend
        try:
            yield
        finally:
            await backend.aclose()
            logger.info("shut down: Redis and HTTP clients closed")

    app = FastAPI(title="multimodel backend", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.drain = drain
    app.add_middleware(RequestMetrics, metrics=metrics)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins),
                           allow_methods=["GET", "POST"], allow_headers=["Content-Type"])
    app.add_middleware(DrainMiddleware, drain=drain)  # the outermost: counts every request

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": describe_errors(exc.errors())}, status_code=400)  # FastAPI says 422

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

    @app.post("/api/query", response_model=None)
    async def query(req: QueryRequest, request: Request) -> dict[str, Any] | JSONResponse:
        backend = request.app.state.backend
        try:
            return await backend.answer(req, backend.pool.chat)
        except TierUnavailable as exc:
            return JSONResponse({"detail": str(exc), "tier": exc.tier, "tried": exc.tried}, status_code=503)
        except UpstreamError as exc:
            return JSONResponse({"detail": f"instance {exc.instance.name} refused the query: {exc.reason}",
                                 "tier": exc.instance.complexity, "tried": [exc.instance.name]}, status_code=502)

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        backend = websocket.app.state.backend
        while True:  # several queries per connection, one at a time
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            raw = message.get("text") or (message.get("bytes") or b"").decode("utf-8", "replace")
            try:
                with drain.track():  # a query being answered holds the drain until it is done
                    outcome = await _ws_query(websocket, backend, raw)
            except WebSocketDisconnect:
                outcome = "disconnected"  # the client left mid-answer; aclosing() ended the upstream call
            metrics.ws_queries.labels(outcome).inc()
            if outcome == "disconnected":
                return
            if drain.draining:
                # Answered; the client reconnects (through the proxy, to another replica).
                await websocket.close(1012, "service restart")
                return

    return app


async def _ws_query(websocket: WebSocket, backend: Backend, raw: str) -> str:
    """Answer one WebSocket query: token messages, then done (or one error message); return
    the outcome ("ok" or "error") the metrics count."""
    async def stream_tokens(tier: str, messages: Messages, max_tokens: int) -> tuple[str, Instance]:
        pieces: list[str] = []
        instance: Instance | None = None
        async with aclosing(backend.pool.stream(tier, messages, max_tokens)) as stream:
            async for instance, text in stream:
                if text:
                    pieces.append(text)
                    await websocket.send_json({"type": "token", "text": text})
        assert instance is not None  # the stream names the instance that answers first, or raises
        return "".join(pieces), instance

    try:
        reply = await backend.answer(QueryRequest.model_validate_json(raw), stream_tokens)
    except ValidationError as exc:
        error = describe_errors(exc.errors())
    except HTTPException as exc:
        error = exc.detail
    except (TierUnavailable, UpstreamError) as exc:
        error = str(exc)
    else:
        if reply["cached"]:
            await websocket.send_json({"type": "token", "text": reply["answer"]})
        del reply["answer"]
        await websocket.send_json({"type": "done", **reply})
        return "ok"
    await websocket.send_json({"type": "error", "message": error})
    return "error"
