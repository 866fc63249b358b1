"""The Redis answer cache: an optimisation that must never slow an answer down.

Redis slow, refused or black-holed (a listener that never answers) costs a query at most
MMO_REDIS_TIMEOUT once: every call has that hard deadline, the client does not retry (but
for one new connection in place of a pooled one Redis closed, within the same deadline), and
after a failure a breaker skips Redis for MMO_REDIS_BREAKER_SECONDS, then lets one call
probe it. Writes run in the background (the answer does not wait for them). A malformed
entry (not JSON, not an object) is a miss. Keys are versioned ("mmo:v2:"): the material a
caller hashes into them (tier, the models behind it, the index version, the query...)
decides when an answer is stale.
"""

import asyncio
import hashlib
import json
import time
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from .config import Settings
from .log import logger, redact
from .metrics import Metrics

KEY_PREFIX = "mmo:v2:"
# Readiness probes are not on a query's path: a busy host should not make the replica look
# down because one PING took longer than a cache read may.
PING_TIMEOUT = 2.0
MAX_PENDING_WRITES = 64  # background writes in flight at most; more are dropped (counted as skipped)
# What a failed Redis call raises: redis-py's errors, socket errors, and our deadline.
FAILURES = (RedisError, OSError, TimeoutError)
# A connection Redis closed or reset (a pooled one after Redis restarted: no answer was started).
DROPPED = (RedisConnectionError, ConnectionError)


class AnswerCache:
    def __init__(self, settings: Settings, metrics: Metrics, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = settings.cache_ttl  # 0: the cache is off
        self.timeout = settings.redis_timeout
        self.breaker_seconds = settings.breaker_seconds
        self.metrics = metrics
        self.clock = clock
        self._secrets = settings.secrets()
        # No retries (redis-py retries connection errors by default, with backoff), socket
        # timeouts as short as the deadline, raw bytes (a value that is not UTF-8 is a
        # malformed entry, not a parser error).
        self.redis = self._client(settings.redis_url, self.timeout)
        self._probe = self._client(settings.redis_url, max(PING_TIMEOUT, self.timeout))  # readiness only
        self._open_until: float | None = None  # breaker: skip Redis until then (None: closed)
        self._probing = False  # half open: one call is finding out whether Redis is back
        self._pending: set[asyncio.Task[None]] = set()

    @staticmethod
    def _client(url: str, timeout: float) -> aioredis.Redis:
        return aioredis.Redis.from_url(url, retry=Retry(NoBackoff(), 0), socket_timeout=timeout,
                                       socket_connect_timeout=timeout, health_check_interval=0)

    @staticmethod
    def key(kind: str, material: list[Any]) -> str:
        """'mmo:v2:<kind>:<sha256 of the material as JSON>'."""
        data = json.dumps(material, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return f"{KEY_PREFIX}{kind}:" + hashlib.sha256(data.encode("utf-8")).hexdigest()

    @property
    def breaker_open(self) -> bool:
        return self._open_until is not None and (self.clock() < self._open_until or self._probing)

    def _enter(self) -> bool:
        """Whether this call may use Redis now (the breaker closed, or this call is the probe)."""
        if self._open_until is None:
            return True
        if self.clock() < self._open_until or self._probing:
            self.metrics.cache_skipped.inc()
            return False
        self._probing = True
        return True

    def _succeeded(self) -> None:
        if self._open_until is not None:
            logger.info("cache: Redis answers again, breaker closed")
        self._open_until, self._probing = None, False

    def _failed(self, operation: str, exc: BaseException) -> None:
        self.metrics.cache_errors.inc()
        if self._open_until is None or self._probing:
            logger.warning("cache %s failed, Redis skipped for %ss: %s", operation, self.breaker_seconds,
                           self._describe(exc))
        self._open_until, self._probing = self.clock() + self.breaker_seconds, False

    def _describe(self, exc: BaseException, timeout: float | None = None) -> str:
        if isinstance(exc, TimeoutError) and not str(exc):
            return f"TimeoutError: no answer within {timeout or self.timeout} s"
        return redact(f"{type(exc).__name__}: {exc}", self._secrets)

    async def _call(self, command: Callable[[], Any]) -> Any:
        """command() under the deadline. A dropped connection is tried once more: redis-py
        threw the dead one away, so the second try connects anew. That tells a Redis that
        restarted (every pooled connection is dead, the first query after it would miss)
        from one that is gone (refused again at once); a hung Redis is a timeout, not retried."""
        async with asyncio.timeout(self.timeout):
            try:
                return await command()
            except DROPPED:
                return await command()

    async def get(self, key: str) -> dict[str, Any] | None:
        """The entry, or None: a miss, a malformed entry, Redis failing or skipped. Never raises."""
        if not self.ttl or not self._enter():
            return None
        try:
            raw = await self._call(lambda: self.redis.get(key))
        except FAILURES as exc:
            self._failed("read", exc)
            return None
        self._succeeded()
        if raw is None:
            self.metrics.cache_misses.inc()
            return None
        try:
            value = json.loads(raw)
        except ValueError:  # also bytes that are not UTF-8
            value = None
        if not isinstance(value, dict):
            self.metrics.cache_malformed.inc()
            self.metrics.cache_misses.inc()
            logger.warning("cache entry %s is not a JSON object: ignored (a miss)", key)
            return None
        self.metrics.cache_hits.inc()
        return value

    def set(self, key: str, value: dict[str, Any]) -> None:
        """Store value in the background: returns at once, never raises."""
        if not self.ttl:
            return
        try:
            data = json.dumps(value)
        except (TypeError, ValueError) as exc:
            logger.warning("cache entry %s not stored: %s", key, exc)
            return
        if len(self._pending) >= MAX_PENDING_WRITES:
            self.metrics.cache_skipped.inc()
            return
        if not self._enter():
            return
        task = asyncio.get_running_loop().create_task(self._write(key, data))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _write(self, key: str, data: str) -> None:
        try:
            await self._call(lambda: self.redis.set(key, data, ex=self.ttl))
        except FAILURES as exc:
            self._failed("write", exc)
        else:
            self._succeeded()

    async def flush(self) -> None:
        """Wait for the background writes started so far (each has its deadline)."""
        if self._pending:
            await asyncio.wait(set(self._pending))

    async def ping(self) -> str:
        """'ok' when Redis answers PING within max(PING_TIMEOUT, redis_timeout), else why not
        (for /health/ready; the breaker does not apply: readiness reports what Redis does now)."""
        timeout = max(PING_TIMEOUT, self.timeout)
        try:
            async with asyncio.timeout(timeout):
                await self._probe.ping()
        except FAILURES as exc:
            return self._describe(exc, timeout)
        return "ok"

    async def aclose(self) -> None:
        await self.flush()
        await self.redis.aclose()
        await self._probe.aclose()
