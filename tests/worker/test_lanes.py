"""Laned pools (``spec.priorities``, ``spec.ordered``) against a real nats-server: stream and
consumers made by the operator's own plan, in-process workers with the settings the operator
renders, and the handlers' own record of when each task ran (``handlers.SPANS``/``STARTS``)."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import defaultdict
from typing import Any

import pytest
from nats.aio.client import Client as NATS

from e2e.testbed.nats_server import NatsServer
from jetpool import TaskPhase
from jetpool_cli.errors import ClientError
from jetpool_protocol.dead_letter import DeadLetterRecord
from tests.rates import most_at_once
from tests.worker import handlers
from tests.worker.helpers import (
    TrackedPool,
    eventually,
    every_task_succeeded,
    make_tracked_pool,
    running_worker,
    running_workers,
)

pytestmark = pytest.mark.nats

SPANNED = "tests.worker.handlers:spanned"
STAMPED = "tests.worker.handlers:stamped"
LEVELS = {"levels": [{"name": "high", "weight": 9}, {"name": "low", "weight": 1}], "default": "low"}


async def laned_pool(nc: NATS, url: str, handler: str, **spec: Any) -> TrackedPool:
    return await make_tracked_pool(nc, url, handler=handler, **spec)


# ------------------------------------------------------------------ priorities


async def test_a_high_task_published_behind_a_low_backlog_takes_the_next_free_slot(
    nc: NATS, nats_server: NatsServer
) -> None:
    pool = await laned_pool(nc, nats_server.url, STAMPED, concurrency=2, priorities=LEVELS)
    lows = await pool.client.publish_batch([{"sleep": 0.2}] * 40)
    async with running_worker(pool.settings):
        await eventually(lambda: sum(1 for h in lows if h.id in handlers.STARTS) >= 2, within=20)
        published = time.time()
        high = await pool.client.publish({"sleep": 0}, priority="high")
        await eventually(lambda: bool(handlers.STARTS.get(high.id)), within=10, interval=0.05)
        waited = handlers.STARTS[high.id][0] - published
        lows_left = sum(1 for h in lows if h.id not in handlers.STARTS)
    assert lows_left >= 20  # there was a backlog of low tasks when it started
    assert waited < 0.2 + 0.15, waited  # one running low task's length, plus a sweep


async def test_under_contention_levels_start_tasks_in_proportion_to_their_weights(
    nc: NATS, nats_server: NatsServer
) -> None:
    pool = await laned_pool(nc, nats_server.url, STAMPED, concurrency=4, priorities=LEVELS)
    lows = [h.id for h in await pool.client.publish_batch([{"sleep": 0.02}] * 300)]
    highs = [
        h.id for h in await pool.client.publish_batch([{"sleep": 0.02}] * 300, priority="high")
    ]
    async with running_workers(pool.settings, 2):
        await eventually(
            lambda: all(handlers.STARTS.get(i) for i in highs), within=60, interval=0.5
        )
    # While both levels had a backlog (until the last high started), low got about 1 in 10
    last_high = max(handlers.STARTS[i][0] for i in highs)
    low_meanwhile = sum(1 for i in lows if handlers.STARTS.get(i, [1e18])[0] <= last_high)
    share = low_meanwhile / (low_meanwhile + len(highs))
    assert 0.05 <= share <= 0.18, share  # weights 9:1 -> 10 %


async def test_the_default_level_takes_tasks_published_without_a_priority(
    nc: NATS, nats_server: NatsServer
) -> None:
    pool = await laned_pool(nc, nats_server.url, STAMPED, priorities=LEVELS)
    plain = await pool.client.publish({})
    named_low = await pool.client.publish({}, priority="low")
    async with running_worker(pool.settings):
        await eventually(
            lambda: every_task_succeeded(pool, [plain.id, named_low.id]), within=20, interval=0.2
        )


async def test_a_level_the_pool_does_not_have_is_refused_at_publish(
    nc: NATS, nats_server: NatsServer
) -> None:
    pool = await laned_pool(nc, nats_server.url, STAMPED, priorities=LEVELS)
    with pytest.raises(ClientError, match="no level 'urgent'"):
        await pool.client.publish({}, priority="urgent")
    with pytest.raises(ClientError, match=r"no spec\.ordered"):  # levels only, no ordered keys
        await pool.client.publish({}, ordered_key="acct-1")


# ------------------------------------------------------------------ ordered keys


def assert_in_order_without_overlap(
    spans: dict[str, list[tuple[float, float]]], ids: list[str]
) -> None:
    """Each task's first start comes after the previous task's last end (publish order)."""
    for before, after in itertools.pairwise(ids):
        assert spans[before][-1][1] <= spans[after][0][0], (before, after)


async def test_tasks_of_one_key_run_one_at_a_time_in_publish_order_across_workers(
    nc: NATS, nats_server: NatsServer
) -> None:
    pool = await laned_pool(nc, nats_server.url, SPANNED, concurrency=4, ordered={"partitions": 4})
    keys = [f"k{i}" for i in range(6)]
    by_key: dict[str, list[str]] = defaultdict(list)

    async def publish_key(key: str) -> None:
        for n in range(20):
            handle = await pool.client.publish({"sleep": 0.005 * (n % 4)}, ordered_key=key)
            by_key[key].append(handle.id)

    await asyncio.gather(*(publish_key(k) for k in keys))
    ids = [i for k in keys for i in by_key[k]]
    async with running_workers(pool.settings, 3):
        await eventually(lambda: all(handlers.SPANS[i] for i in ids), within=60, interval=0.5)
    for key in keys:
        assert_in_order_without_overlap(handlers.SPANS, by_key[key])
    assert all(len(handlers.SPANS[i]) == 1 for i in ids)
    # different keys did run side by side
    starts = sorted(s for i in ids for s, _ in handlers.SPANS[i])
    ends = sorted(e for i in ids for _, e in handlers.SPANS[i])
    assert any(starts[n + 1] < ends[n] for n in range(len(starts) - 1))


async def test_a_failing_task_holds_its_key_until_its_retry_succeeds(
    nc: NATS, nats_server: NatsServer
) -> None:
    pool = await laned_pool(nc, nats_server.url, SPANNED, concurrency=4, ordered={"partitions": 2})
    first = await pool.client.publish({"fail_first": True}, ordered_key="acct-1")
    second = await pool.client.publish({}, ordered_key="acct-1")
    async with running_workers(pool.settings, 2):
        await eventually(
            lambda: every_task_succeeded(pool, [first.id, second.id]), within=30, interval=0.2
        )
    assert len(handlers.SPANS[first.id]) == 2  # failed, retried after its backoff
    assert handlers.SPANS[first.id][-1][1] <= handlers.SPANS[second.id][0][0]


async def test_a_dead_lettered_task_releases_its_key_and_keeps_the_published_subject(
    nc: NATS, nats_server: NatsServer
) -> None:
    pool = await laned_pool(nc, nats_server.url, SPANNED, concurrency=2, ordered={"partitions": 2})
    doomed = await pool.client.publish({"raise": "broken"}, ordered_key="acct-9")
    after = await pool.client.publish({}, ordered_key="acct-9")
    async with running_worker(pool.settings):
        await eventually(lambda: every_task_succeeded(pool, [after.id]), within=30, interval=0.2)
    state = await pool.client.status(doomed.id)
    assert state is not None
    assert state.phase is TaskPhase.DEAD_LETTERED
    assert handlers.SPANS[doomed.id][-1][1] <= handlers.SPANS[after.id][0][0]
    js = nc.jetstream()
    record = await js.get_last_msg(
        pool.settings.dead_letter_stream, f"{pool.settings.dead_letter_subject_prefix}.>"
    )
    dead = DeadLetterRecord.model_validate_json(record.data or b"")
    # what the publisher used (a replay publishes there and the stream re-partitions it)
    assert dead.original_subject.endswith(".ordered.acct-9")


async def test_empty_ordered_partitions_hold_only_their_share_of_a_busy_worker(
    nc: NATS, nats_server: NatsServer
) -> None:
    """8 empty partitions on a worker of 4 slots: the levels keep 3 of them busy (one pull
    waits on a partition), not one slot in many."""
    pool = await laned_pool(
        nc, nats_server.url, SPANNED, concurrency=4, priorities=LEVELS, ordered={}
    )
    lows = [h.id for h in await pool.client.publish_batch([{"sleep": 0.05}] * 60)]
    async with running_worker(pool.settings):
        await eventually(lambda: all(handlers.SPANS[i] for i in lows), within=60, interval=0.2)
    running_at_once = most_at_once([span for i in lows for span in handlers.SPANS[i]])
    assert running_at_once == 3  # concurrency 4 minus ordered.pullsPerWorker 1


async def test_ordered_tasks_still_run_while_the_levels_keep_every_slot_busy(
    nc: NATS, nats_server: NatsServer
) -> None:
    pool = await laned_pool(
        nc, nats_server.url, STAMPED, concurrency=4, priorities=LEVELS, ordered={"partitions": 4}
    )
    await pool.client.publish_batch([{"sleep": 0.05}] * 400)
    async with running_worker(pool.settings):
        await eventually(lambda: len(handlers.STARTS) >= 20, within=20)
        ordered = [(await pool.client.publish({}, ordered_key=f"acct-{i}")).id for i in range(8)]
        await eventually(
            lambda: all(handlers.STARTS.get(i) for i in ordered), within=30, interval=0.2
        )
