"""How a query is answered: tier, cache, sources, then an instance of the tier.

Shared by the HTTP and WebSocket routes (api.py), which differ only in how the answer is
generated (one reply, or a stream of tokens).
"""

import asyncio
import hashlib
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import redis.asyncio as aioredis
from fastapi import HTTPException
from redis.exceptions import RedisError

from .config import LEVELS, Instance, Settings
from .llama import LlamaPool, Messages
from .log import logger, redact
from .metrics import Metrics
from .retrieval import IndexStore
from .routing import route
from .schemas import QueryRequest, Source

SYSTEM_PROMPT = "You are a helpful assistant. Answer clearly and concisely."
TOP_K = 4  # passages prepended to the prompt
WEB_RESULTS = 3  # SearXNG results prepended to the prompt
PASSAGE_CHARS = 1500  # per passage, so a few long passages cannot fill the context window

# generate(tier, messages, max_tokens) -> (answer text, the instance that answered)
Generate = Callable[[str, Messages, int], Awaitable[tuple[str, Instance]]]


def build_messages(query: str, sources: list[Source]) -> Messages:
    if sources:
        context = "\n\n".join(
            f"[{n}] {s['text'][:PASSAGE_CHARS]}" + (f"\n(source: {s['source']})" if s["source"] else "")
            for n, s in enumerate(sources, 1))
        query = f"Use these passages if they help, citing them as [n].\n\n{context}\n\nQuestion: {query}"
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": query}]


class Backend:
    """What requests share: clients, round-robin state, indexes. Built at startup, closed at shutdown."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
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

    async def aclose(self) -> None:
        await self.http.aclose()
        await self.redis.aclose()

    def plan(self, req: QueryRequest) -> tuple[str, int, str]:
        """(tier, max_tokens, cache key) of a query."""
        if req.use_web and not self.settings.searxng_url:
            raise HTTPException(400, "use_web needs MMO_SEARXNG_URL to be set")
        tier = route(req.query, req.mode)
        max_tokens = req.max_tokens or self.settings.max_tokens
        # use_web is part of the retrieval flag: an answer with web sources is another answer.
        material = json.dumps([tier, req.query, max_tokens, req.use_retrieval, req.use_web])
        return tier, max_tokens, "mmo:answer:" + hashlib.sha256(material.encode("utf-8")).hexdigest()

    async def answer(self, req: QueryRequest, generate: Generate) -> dict[str, Any]:
        """The query flow HTTP and WebSocket share: cache, sources, then
        generate(tier, messages, max_tokens) -> (text, instance) on a miss."""
        start = time.perf_counter()
        tier, max_tokens, key = self.plan(req)
        result = await self.cache_get(key)
        cached = result is not None
        if result is None:
            sources = await self.sources(req)
            text, instance = await generate(tier, build_messages(req.query, sources), max_tokens)
            result = {"answer": text, "instance": instance.name, "sources": sources}
            await self.cache_set(key, result)
        latency = time.perf_counter() - start
        self.metrics.query_latency.labels(tier, str(cached).lower()).observe(latency)
        return {"answer": result["answer"], "tier": tier, "instance": result["instance"], "cached": cached,
                "latency_ms": round(latency * 1000), "sources": result["sources"]}

    async def cache_get(self, key: str) -> dict[str, Any] | None:
        if not self.settings.cache_ttl:
            return None
        try:
            raw = await self.redis.get(key)
        except (RedisError, OSError) as exc:
            # The cache is an optimisation: answer without it while Redis is down.
            self.metrics.cache_errors.inc()
            logger.warning("cache read failed: %s", exc)
            return None
        if raw is None:
            self.metrics.cache_misses.inc()
            return None
        try:
            value = json.loads(raw)
        except ValueError:
            logger.warning("cache entry %s is not JSON: ignored", key)
            return None
        self.metrics.cache_hits.inc()
        return value

    async def cache_set(self, key: str, value: dict[str, Any]) -> None:
        if not self.settings.cache_ttl:
            return
        try:
            await self.redis.set(key, json.dumps(value), ex=self.settings.cache_ttl)
        except (RedisError, OSError) as exc:
            self.metrics.cache_errors.inc()
            logger.warning("cache write failed: %s", exc)

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
        async def redis_state() -> str:
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
