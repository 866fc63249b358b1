# Copyright (c) 2026, multimodel.orchestration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Per-tier bounds (limits.py): concurrent generations and max_tokens.

Before: nothing bounded either; any number of generations queued up on llama-server and a
query could ask for 8192 tokens from any tier.
"""

import asyncio

import pytest

from multimodel_backend.config import Settings, TierLimit
from multimodel_backend.limits import Busy, TierLimiter, TooManyTokens
from multimodel_backend.metrics import Metrics


def limiter(**settings):
    options = dict(instances=(), redis_url='redis://r', queue_timeout=0.2,
                   tier_limits={'simple': TierLimit(max_tokens=512, concurrency=2)})
    options.update(settings)
    metrics = Metrics()
    return TierLimiter(Settings(**options), metrics), metrics


def test_max_tokens_bounded_per_tier():
    tiers, _metrics = limiter(max_tokens=2000)
    tiers.check_max_tokens('simple', 512)
    with pytest.raises(TooManyTokens) as error:
        tiers.check_max_tokens('simple', 513)
    assert (error.value.tier, error.value.limit) == ('simple', 512)
    assert str(error.value) == "max_tokens must be at most 512 for tier 'simple' (513 asked)"
    tiers.check_max_tokens('complex', 2000)  # a tier not configured: max(1024, MMO_MAX_TOKENS)
    with pytest.raises(TooManyTokens):
        tiers.check_max_tokens('complex', 2001)


def test_a_full_tier_queues_then_refuses_with_retry_after():
    async def scenario():
        tiers, metrics = limiter()
        release = asyncio.Event()
        entered = []

        async def generation(name):
            async with tiers.slot('simple'):
                entered.append(name)
                await release.wait()

        holders = [asyncio.create_task(generation(n)) for n in ('a', 'b')]
        await asyncio.sleep(0)
        assert entered == ['a', 'b']
        # Both slots taken: a third waits queue_timeout, then Busy.
        with pytest.raises(Busy) as error:
            async with tiers.slot('simple'):
                entered.append('c')
        assert (error.value.tier, error.value.retry_after) == ('simple', 1)
        # Another tier is not affected.
        async with tiers.slot('moderate'):
            entered.append('moderate')
        # A waiter gets the slot a generation releases (in arrival order).
        waiter = asyncio.create_task(generation('d'))
        await asyncio.sleep(0)
        assert 'd' not in entered
        release.set()
        await asyncio.gather(*holders, waiter)
        assert entered == ['a', 'b', 'moderate', 'd']
        return metrics

    metrics = asyncio.run(asyncio.wait_for(scenario(), 30))
    assert metrics.registry.get_sample_value('mmo_tier_queued_total', {'tier': 'simple'}) == 2
    assert metrics.registry.get_sample_value('mmo_tier_rejected_total', {'tier': 'simple'}) == 1
    assert metrics.registry.get_sample_value('mmo_tier_queued_total', {'tier': 'moderate'}) is None


def test_a_slot_is_released_when_the_generation_fails_or_is_cancelled():
    async def scenario():
        tiers, _metrics = limiter(tier_limits={'simple': TierLimit(512, 1)}, queue_timeout=0)
        with pytest.raises(RuntimeError):
            async with tiers.slot('simple'):
                raise RuntimeError('upstream failed')
        started = asyncio.Event()

        async def cancelled_generation():
            async with tiers.slot('simple'):
                started.set()
                await asyncio.Event().wait()

        task = asyncio.create_task(cancelled_generation())
        await started.wait()
        with pytest.raises(Busy):  # queue_timeout 0: refused at once while the slot is held
            async with tiers.slot('simple'):
                pass
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        async with tiers.slot('simple'):
            return 'free again'

    assert asyncio.run(asyncio.wait_for(scenario(), 30)) == 'free again'
