"""The operator's bounds per tier (MMO_TIER_LIMITS_JSON): how many generations run at once,
and the most max_tokens a query may ask for.

Concurrency is counted per worker process (uvicorn --workers N allows N times as many on
the host). A generation waits for a free slot of its tier up to MMO_QUEUE_TIMEOUT seconds,
in arrival order; then it is refused (Busy: 429 with Retry-After). Cache hits take no slot.
"""

import asyncio
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from .config import Settings
from .metrics import Metrics


class Busy(Exception):
    """Every slot of the tier stayed taken for queue_timeout seconds."""

    def __init__(self, tier: str, retry_after: int) -> None:
        super().__init__(f"tier '{tier}' is busy: every generation slot stayed taken; retry in {retry_after} s")
        self.tier, self.retry_after = tier, retry_after


class TooManyTokens(Exception):
    """A query asked for more max_tokens than its tier allows."""

    def __init__(self, tier: str, limit: int, asked: int | None = None) -> None:
        asked_text = "" if asked is None else f" ({asked} asked)"
        super().__init__(f"max_tokens must be at most {limit} for tier '{tier}'{asked_text}")
        self.tier, self.limit, self.asked = tier, limit, asked


class TierLimiter:
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self._slots = {tier: asyncio.Semaphore(limit.concurrency) for tier, limit in settings.tier_limits.items()}
        # Retry-After: the client waited queue_timeout already; as long again is a fair guess.
        self.retry_after = max(1, math.ceil(settings.queue_timeout))

    def check_max_tokens(self, tier: str, max_tokens: int) -> None:
        limit = self.settings.tier_limits[tier].max_tokens
        if max_tokens > limit:
            raise TooManyTokens(tier, limit, max_tokens)

    @asynccontextmanager
    async def slot(self, tier: str) -> AsyncIterator[None]:
        """Hold one of the tier's generation slots for the body; Busy after queue_timeout."""
        slots = self._slots[tier]
        if slots.locked():
            self.metrics.queued.labels(tier).inc()
            try:
                async with asyncio.timeout(self.settings.queue_timeout):
                    await slots.acquire()
            except TimeoutError:
                self.metrics.rejected.labels(tier).inc()
                raise Busy(tier, self.retry_after) from None
        else:
            await slots.acquire()  # free: does not wait
        try:
            yield
        finally:
            slots.release()
