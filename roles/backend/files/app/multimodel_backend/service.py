"""How a query is answered: tier, cache, sources, then an instance of the tier.

Shared by the HTTP and WebSocket routes (api.py) and the OpenAI-compatible API
(openai_api.py), which differ only in how the answer reaches the client (one reply, or a
stream of tokens).
"""

import asyncio
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from typing import Any, TypeVar

import httpx
from fastapi import HTTPException
from starlette.types import Receive

from .cache import AnswerCache
from .config import LEVELS, Settings
from .limits import TierLimiter
from .llama import Completion, Delta, LlamaPool, Messages, Params
from .log import logger
from .metrics import Metrics
from .retrieval import IndexStore
from .routing import route
from .schemas import QueryRequest, Source

SYSTEM_PROMPT = "You are a helpful assistant. Answer clearly and concisely."
TOP_K = 4  # passages prepended to the prompt
WEB_RESULTS = 3  # SearXNG results prepended to the prompt
PASSAGE_CHARS = 1500  # per passage, so a few long passages cannot fill the context window

OnToken = Callable[[str], Awaitable[None]]
T = TypeVar("T")


class ClientDisconnected(Exception):
    """The HTTP client went away before its answer was ready; the generation was cancelled."""


async def until_disconnected(receive: Receive, work: Awaitable[T]) -> T:
    """Run work (as a task) until it is done or the HTTP client disconnects, whichever comes
    first. On a disconnect the work is cancelled, which closes its upstream request (so
    llama-server stops generating and frees the slot) and its limiter slot, and
    ClientDisconnected is raised. receive is the request's ASGI receive, its body already read."""
    task = asyncio.ensure_future(work)

    async def disconnected() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:  # also when the caller itself is cancelled
        watcher.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)  # let it close the upstream request
    if task.cancelled():
        raise ClientDisconnected()
    return task.result()


def build_messages(query: str, sources: list[Source]) -> Messages:
    if sources:
        context = "\n\n".join(
            f"[{n}] {s['text'][:PASSAGE_CHARS]}" + (f"\n(source: {s['source']})" if s["source"] else "")
            for n, s in enumerate(sources, 1))
        query = f"Use these passages if they help, citing them as [n].\n\n{context}\n\nQuestion: {query}"
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": query}]


class Backend:
    """What requests share: clients, round-robin state, cache, limits, indexes. Built at
    startup, closed at shutdown."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        # Per-request timeouts come from each query's deadline (llama.py); this default
        # covers the other calls (SearXNG, health checks pass their own).
        self.http = httpx.AsyncClient(timeout=httpx.Timeout(settings.request_timeout,
                                                            connect=min(5.0, settings.request_timeout)))
        self.cache = AnswerCache(settings, metrics)
        self.limiter = TierLimiter(settings, metrics)
        self.pool = LlamaPool(settings, self.http, metrics)
        self.store = IndexStore(settings.faiss_dir)

    async def aclose(self) -> None:
        await self.http.aclose()
        await self.cache.aclose()

    def models(self, tier: str) -> list[str]:
        """What answers for the tier, for cache keys: a model swap (sha256) or a new alias is
        another answer."""
        return sorted({i.model or i.alias or i.name for i in self.settings.tier(tier)})

    def check_max_tokens(self, tier: str, max_tokens: int) -> None:
        self.limiter.check_max_tokens(tier, max_tokens)  # limits.TooManyTokens: 400 naming the limit

    async def index_version(self) -> str:
        """The retrieval indexes in use now (reloaded first when due)."""
        await asyncio.to_thread(self.store.refresh_if_due)
        return self.store.fingerprint

    async def plan(self, req: QueryRequest) -> tuple[str, Params, str]:
        """(tier, generation parameters, cache key) of a query."""
        if req.use_web and not self.settings.searxng_url:
            raise HTTPException(400, "use_web needs MMO_SEARXNG_URL to be set")
        tier = route(req.query, req.mode)
        params = Params(max_tokens=req.max_tokens or self.settings.max_tokens)
        self.check_max_tokens(tier, params.max_tokens)
        index = await self.index_version() if req.use_retrieval else None
        # use_web is part of the key: an answer with web sources is another answer.
        key = self.cache.key("query", [tier, self.models(tier), index, req.query, params.max_tokens,
                                       params.temperature, params.top_p, list(params.stop), req.use_retrieval,
                                       req.use_web])
        return tier, params, key

    async def answer(self, req: QueryRequest, on_token: OnToken | None = None) -> dict[str, Any]:
        """Answer a query (POST /api/query, WebSocket /ws): cache, sources, then a generation
        on a miss, streamed to on_token(text) when given. A cache hit does not go through
        on_token: the caller sends the answer ("cached": true) as it likes."""
        start = time.perf_counter()
        tier, params, key = await self.plan(req)
        result = await self.cache.get(key)
        cached = result is not None and isinstance(result.get("answer"), str)
        if not cached:
            sources = await self.sources(req)
            completion = await self.generate(tier, build_messages(req.query, sources), params, on_token)
            result = {"answer": completion.text, "instance": completion.instance.name, "sources": sources,
                      "usage": completion.usage, "finish_reason": completion.finish_reason}
            self.cache.set(key, result)
        assert result is not None
        latency = time.perf_counter() - start
        self.metrics.query_latency.labels(tier, str(cached).lower()).observe(latency)
        return {"answer": result["answer"], "tier": tier, "instance": result.get("instance"), "cached": cached,
                "latency_ms": round(latency * 1000), "sources": result.get("sources") or [],
                "usage": result.get("usage")}

    async def generate(self, tier: str, messages: Messages, params: Params,
                       on_token: OnToken | None = None) -> Completion:
        """One generation on the tier, in one of its slots (limits.Busy when none frees up in
        time): the whole answer, or streamed to on_token(text) when given."""
        if on_token is None:
            async with self.limiter.slot(tier):
                return await self.pool.chat(tier, messages, params)
        pieces: list[str] = []
        last = None
        finish_reason, usage = None, None
        async with aclosing(self.stream(tier, messages, params)) as stream:
            async for last in stream:
                if last.text:
                    pieces.append(last.text)
                    await on_token(last.text)
                finish_reason = last.finish_reason or finish_reason
                usage = last.usage or usage
        assert last is not None  # the stream names the instance that answers first, or raises
        return Completion("".join(pieces), last.instance, finish_reason, usage)

    async def stream(self, tier: str, messages: Messages, params: Params) -> AsyncGenerator[Delta, None]:
        """The deltas of one generation, holding one of the tier's slots until closed. The
        first one (text "") comes once an instance took the query: await it before answering
        the client, so Busy, TierUnavailable and UpstreamError still become a status code."""
        async with self.limiter.slot(tier), aclosing(self.pool.stream(tier, messages, params)) as deltas:
            async for delta in deltas:
                yield delta

    async def sources(self, req: QueryRequest) -> list[Source]:
        found: list[Source] = []
        if req.use_retrieval:
            found += await asyncio.to_thread(self.store.search, req.query, TOP_K)  # FAISS + file checks block
        if req.use_web:
            found += await self.web_search(req.query)
        return found

    async def web_search(self, query: str) -> list[Source]:
        try:
            response = await self.http.get(f"{self.settings.searxng_url}/search",
                                           params={"q": query, "format": "json"}, timeout=10.0)
            response.raise_for_status()
            results = response.json()["results"]
            if not isinstance(results, list):
                raise ValueError("'results' is not a list")
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            # Web results are an extra: answer without them.
            logger.warning("SearXNG search failed: %s", exc)
            return []
        return [{"id": r.get("url", ""), "text": r.get("content") or r.get("title", ""),
                 "source": r.get("url", ""), "title": r.get("title", ""), "index": "web", "score": None}
                for r in results[:WEB_RESULTS] if isinstance(r, dict)]

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        """(ready, body of /health/ready): Redis answers PING and every level has an instance up."""
        instances = self.settings.instances
        states = await asyncio.gather(self.cache.ping(), *(self.pool.health(i) for i in instances))
        tiers = {level: {i.name: s for i, s in zip(instances, states[1:]) if i.complexity == level}
                 for level in LEVELS}
        down = ([] if states[0] == "ok" else ["redis"]) + \
            [f"tier {level}" for level, by_name in tiers.items() if "ok" not in by_name.values()]
        return not down, {"status": "unavailable" if down else "ready", "down": down,
                          "redis": states[0], "tiers": tiers}
