"""The FastAPI app: `uvicorn multimodel_backend.main:app`.

Endpoints: GET /health, GET /health/ready, GET /metrics, POST /api/query, WebSocket /ws.
See README.md for the contract.
"""

import asyncio
import hashlib
import json
import logging
import sys
import time
from contextlib import aclosing, asynccontextmanager
from typing import Literal

import httpx
import redis.asyncio as aioredis
from fastapi import FastAPI, HTTPException, Request, WebSocket, WebSocketDisconnect
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from redis.exceptions import RedisError

from .config import LEVELS, ConfigError, load_settings
from .llama import LlamaPool, TierUnavailable, UpstreamError
from .metrics import Metrics
from .retrieval import IndexStore
from .routing import route

log = logging.getLogger("multimodel_backend")

SYSTEM_PROMPT = "You are a helpful assistant. Answer clearly and concisely."
TOP_K = 4  # passages prepended to the prompt
WEB_RESULTS = 3  # SearXNG results prepended to the prompt
PASSAGE_CHARS = 1500  # per passage, so a few long passages cannot fill the context window


class QueryRequest(BaseModel):
    # strict: "true" is not a bool and "12" is not an int; extra keys are typos, not options.
    model_config = ConfigDict(strict=True, extra="forbid", str_strip_whitespace=True)

    query: str = Field(min_length=1, max_length=8000)
    mode: Literal["auto", "simple", "moderate", "complex"] = "auto"
    max_tokens: int | None = Field(default=None, ge=1, le=8192)
    use_retrieval: bool = False
    use_web: bool = False


def redact(text, secrets):
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


class RedactSecrets(logging.Filter):
    """Last line of defence: the code never logs secrets, and this masks any that slip in."""

    def __init__(self, secrets):
        super().__init__()
        self.secrets = secrets

    def filter(self, record):
        message = record.getMessage()
        cleaned = redact(message, self.secrets)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


# uvicorn configures only its own loggers: ours gets one handler per process.
_handler = logging.StreamHandler(sys.stderr)
_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))


def _setup_logging(secrets):
    if _handler not in log.handlers:
        log.addHandler(_handler)
        log.setLevel(logging.INFO)
    _handler.filters = [RedactSecrets(secrets)]  # the secrets of the latest app (one per process outside tests)


def _describe(errors):
    """Pydantic errors as one line: 'query: String should have at least 1 character'."""
    parts = []
    for error in errors:
        where = ".".join(str(p) for p in error["loc"] if p != "body") or "body"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


class Backend:
    """What requests share: clients, round-robin state, indexes. Built at startup, closed at shutdown."""

    def __init__(self, settings, metrics):
        self.settings = settings
        self.metrics = metrics
        # A short connect timeout: a dead instance should fail over in seconds, not after
        # the full generation timeout.
        self.http = httpx.AsyncClient(timeout=httpx.Timeout(settings.request_timeout,
                                                            connect=min(5.0, settings.request_timeout)))
        self.redis = aioredis.Redis.from_url(settings.redis_url, decode_responses=True,
                                             socket_timeout=5, socket_connect_timeout=5)
        self.pool = LlamaPool(settings, self.http, metrics)
        self.store = IndexStore(settings.faiss_dir)

    async def aclose(self):
        await self.http.aclose()
        await self.redis.aclose()

    def plan(self, req):
        """(tier, max_tokens, cache key) of a query."""
        if req.use_web and not self.settings.searxng_url:
            raise HTTPException(400, "use_web needs MMO_SEARXNG_URL to be set")
        tier = route(req.query, req.mode)
        max_tokens = req.max_tokens or self.settings.max_tokens
        # use_web is part of the retrieval flag: an answer with web sources is another answer.
        material = json.dumps([tier, req.query, max_tokens, req.use_retrieval, req.use_web])
        return tier, max_tokens, "mmo:answer:" + hashlib.sha256(material.encode("utf-8")).hexdigest()

    async def answer(self, req, generate):
        """The query flow HTTP and WebSocket share: cache, sources, then
        generate(tier, messages, max_tokens) -> (text, instance) on a miss."""
        start = time.perf_counter()
        tier, max_tokens, key = self.plan(req)
        result = await self.cache_get(key)
        cached = result is not None
        if not cached:
            sources = await self.sources(req)
            text, instance = await generate(tier, build_messages(req.query, sources), max_tokens)
            result = {"answer": text, "instance": instance.name, "sources": sources}
            await self.cache_set(key, result)
        latency = time.perf_counter() - start
        self.metrics.query_latency.labels(tier, str(cached).lower()).observe(latency)
        return {"answer": result["answer"], "tier": tier, "instance": result["instance"], "cached": cached,
                "latency_ms": round(latency * 1000), "sources": result["sources"]}

    async def cache_get(self, key):
        if not self.settings.cache_ttl:
            return None
        try:
            raw = await self.redis.get(key)
        except (RedisError, OSError) as exc:
            # The cache is an optimisation: answer without it while Redis is down.
            self.metrics.cache_errors.inc()
            log.warning("cache read failed: %s", exc)
            return None
        if raw is None:
            self.metrics.cache_misses.inc()
            return None
        try:
            value = json.loads(raw)
        except ValueError:
            log.warning("cache entry %s is not JSON: ignored", key)
            return None
        self.metrics.cache_hits.inc()
        return value

    async def cache_set(self, key, value):
        if not self.settings.cache_ttl:
            return
        try:
            await self.redis.set(key, json.dumps(value), ex=self.settings.cache_ttl)
        except (RedisError, OSError) as exc:
            self.metrics.cache_errors.inc()
            log.warning("cache write failed: %s", exc)

    async def sources(self, req):
        found = []
        if req.use_retrieval:
            found += await asyncio.to_thread(self.store.search, req.query, TOP_K)  # FAISS + file checks block
        if req.use_web:
            found += await self.web_search(req.query)
        return found

    async def web_search(self, query):
        try:
            response = await self.http.get(f"{self.settings.searxng_url}/search",
                                           params={"q": query, "format": "json"}, timeout=10.0)
            response.raise_for_status()
            results = response.json()["results"]
            if not isinstance(results, list):
                raise ValueError("'results' is not a list")
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            # Web results are an extra: answer without them.
            log.warning("SearXNG search failed: %s", exc)
            return []
        return [{"id": r.get("url", ""), "text": r.get("content") or r.get("title", ""),
                 "source": r.get("url", ""), "title": r.get("title", ""), "index": "web", "score": None}
                for r in results[:WEB_RESULTS] if isinstance(r, dict)]

    async def readiness(self):
        async def redis_state():
            try:
                async with asyncio.timeout(5):
                    await self.redis.ping()
                return "ok"
            except (RedisError, OSError, TimeoutError) as exc:
                return redact(f"{type(exc).__name__}: {exc}", self.settings.secrets())

        instances = self.settings.instances
        states = await asyncio.gather(redis_state(), *(self.pool.health(i) for i in instances))
        tiers = {level: {i.name: s for i, s in zip(instances, states[1:]) if i.complexity == level}
                 for level in LEVELS}
        down = ([] if states[0] == "ok" else ["redis"]) + \
            [f"tier {level}" for level, by_name in tiers.items() if "ok" not in by_name.values()]
        return not down, {"status": "unavailable" if down else "ready", "down": down,
                          "redis": states[0], "tiers": tiers}


def build_messages(query, sources):
    if sources:
        context = "\n\n".join(
            f"[{n}] {s['text'][:PASSAGE_CHARS]}" + (f"\n(source: {s['source']})" if s["source"] else "")
            for n, s in enumerate(sources, 1))
        query = f"Use these passages if they help, citing them as [n].\n\n{context}\n\nQuestion: {query}"
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": query}]


class RequestMetrics:
    """Counts HTTP requests by route template (not raw path: bounded label values) and status."""

    def __init__(self, app, metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = 500  # unless the app starts a response

        async def record_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            endpoint = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.http_requests.labels(scope["method"], endpoint, str(status)).inc()


def create_app(settings):
    metrics = Metrics()
    _setup_logging(settings.secrets())

    @asynccontextmanager
    async def lifespan(app):
        backend = Backend(settings, metrics)
        await asyncio.to_thread(backend.store.refresh)
        log.info("starting: %d llama-server instances (%s), %d retrieval indexes in %s, cache TTL %ss",
                 len(settings.instances), ", ".join(f"{i.name}={i.complexity}" for i in settings.instances),
                 len(backend.store.indexes), settings.faiss_dir, settings.cache_ttl)
        app.state.backend = backend
        try:
            yield
        finally:
            await backend.aclose()
            log.info("shut down: Redis and HTTP clients closed")

    app = FastAPI(title="multimodel backend", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.add_middleware(RequestMetrics, metrics=metrics)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins),
                           allow_methods=["GET", "POST"], allow_headers=["Content-Type"])

    @app.exception_handler(RequestValidationError)
    async def bad_request(request, exc):  # FastAPI says 422; the contract says 400
        return JSONResponse({"detail": _describe(exc.errors())}, status_code=400)

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/health/ready")
    async def ready(request: Request):
        ok, body = await request.app.state.backend.readiness()
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/metrics")
    async def metrics_endpoint():
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.post("/api/query")
    async def query(req: QueryRequest, request: Request):
        backend = request.app.state.backend
        try:
            return await backend.answer(req, backend.pool.chat)
        except TierUnavailable as exc:
            return JSONResponse({"detail": str(exc), "tier": exc.tier, "tried": exc.tried}, status_code=503)
        except UpstreamError as exc:
            return JSONResponse({"detail": f"instance {exc.instance.name} refused the query: {exc.reason}",
                                 "tier": exc.instance.complexity, "tried": [exc.instance.name]}, status_code=502)

    @app.websocket("/ws")
    async def ws(websocket: WebSocket):
        await websocket.accept()
        backend = websocket.app.state.backend
        while True:  # several queries per connection, one at a time
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            raw = message.get("text") or (message.get("bytes") or b"").decode("utf-8", "replace")
            try:
                outcome = await _ws_query(websocket, backend, raw)
            except WebSocketDisconnect:
                outcome = "disconnected"  # the client left mid-answer; aclosing() ended the upstream call
            metrics.ws_queries.labels(outcome).inc()
            if outcome == "disconnected":
                return

    return app


async def _ws_query(websocket, backend, raw):
    """Answer one WebSocket query: token messages, then done (or one error message)."""
    async def stream_tokens(tier, messages, max_tokens):
        pieces, instance = [], None
        async with aclosing(backend.pool.stream(tier, messages, max_tokens)) as stream:
            async for instance, text in stream:
                if text:
                    pieces.append(text)
                    await websocket.send_json({"type": "token", "text": text})
        return "".join(pieces), instance

    try:
        reply = await backend.answer(QueryRequest.model_validate_json(raw), stream_tokens)
    except ValidationError as exc:
        error = _describe(exc.errors())
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


def __getattr__(name):
    """`uvicorn multimodel_backend.main:app` builds the app from the environment here, on
    first access, so tests can import this module and build apps from their own settings.

    A bad configuration stops with one clear line and exit status 3, uvicorn's "startup
    failed" status, which also stops a --workers supervisor instead of restarting workers."""
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"multimodel_backend: configuration error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(3) from None
    app = create_app(settings)
    globals()["app"] = app
    return app
