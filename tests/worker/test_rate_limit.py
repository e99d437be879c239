"""A pool-wide rate limit (``spec.rateLimit``) against a real nats-server: the pool's counter
stream made by the operator's own plan, in-process workers with the settings the operator
renders, and the handler's own record of when each task started (``handlers.STARTS``)."""

from __future__ import annotations

import asyncio
import statistics
import time

import pytest
from nats.aio.client import Client as NATS

from e2e.testbed.nats_server import NatsServer
from jetpool import TaskPhase
from jetpool_operator.adapters.nats import ensure_plan
from jetpool_operator.api.v1alpha1 import WorkerPoolSpec
from jetpool_operator.core.nats_resources import plan
from jetpool_worker.consumer_loop import Worker
from jetpool_worker.rate_limit import StartPermits
from tests.rates import sliding_counts
from tests.worker import handlers
from tests.worker.helpers import (
    eventually,
    every_task_succeeded,
    make_tracked_pool,
    running_worker,
    running_workers,
)

pytestmark = pytest.mark.nats

STAMPED = "tests.worker.handlers:stamped"


def permits_of(worker: Worker) -> StartPermits:
    """The worker's pool-wide rate-limit permits (the pool has a limit)."""
    assert worker.gates.permits is not None
    return worker.gates.permits


async def test_the_limit_holds_across_workers_while_the_pool_doubles(
    nc: NATS, nats_server: NatsServer
) -> None:
    pool = await make_tracked_pool(
        nc,
        nats_server.url,
        handler=STAMPED,
        rateLimit={"perSecond": 50, "burst": 5},
        concurrency=4,
    )
    handles = await pool.client.publish_batch([{"sleep": 0.01}] * 650)
    ids = [h.id for h in handles]
    async with running_workers(pool.settings, 2):
        await asyncio.sleep(5)
        async with running_workers(pool.settings, 2, first=2):
            # the handler's own record (in memory): polling 650 states here would load the
            # event loop the workers share with the test
            await eventually(lambda: all(handlers.STARTS[i] for i in ids), within=60, interval=0.5)
        await eventually(
            lambda: every_task_succeeded(pool, ids), within=30, interval=0.5, what="every task"
        )
    starts = [t for i in ids for t in handlers.STARTS[i]]
    assert len(starts) == len(ids)  # each ran once: none dropped, none doubled
    windows = sliding_counts(starts, width=2.0, step=0.5)
    assert len(windows) >= 16
    # never above the limit: at most 50/s * 2 s + 2 bursts in any 2 s (docs/flow-control.md)
    assert max(windows) <= 110, windows
    # and the limit, not the workers, sets the pace: the typical window is at the limit
    # (in-process workers sharing one event loop with pytest can fall behind for a moment on
    # a loaded box, so no floor per window here; the kubectl-level test checks every 5 s)
    assert 95 <= statistics.median(windows) <= 105, windows


async def test_a_stopping_worker_hands_its_waiting_tasks_back_without_using_an_attempt(
    nc: NATS, nats_server: NatsServer
) -> None:
    pool = await make_tracked_pool(
        nc, nats_server.url, handler=STAMPED, rateLimit={"perSecond": 1, "burst": 1}
    )
    ids = [h.id for h in await pool.client.publish_batch([{}] * 4)]
    async with running_worker(pool.settings) as worker:
        await eventually(lambda: permits_of(worker).waiting >= 2)
    states = [await pool.client.status(i) for i in ids]
    handed_back = [s for s in states if s is not None and s.phase is TaskPhase.QUEUED]
    assert handed_back
    assert all(s.runs == 0 and s.deliveries == 1 for s in handed_back)
    async with running_worker(pool.settings):
        await eventually(lambda: every_task_succeeded(pool, ids), within=20, what="all four")
    finals = [await pool.client.status(i) for i in ids]
    assert all(s is not None and s.runs == 1 for s in finals)
    assert all(len(handlers.STARTS[i]) == 1 for i in ids)


async def test_without_its_counter_stream_the_pool_starts_nothing_and_drops_nothing(
    nc: NATS, nats_server: NatsServer
) -> None:
    pool = await make_tracked_pool(
        nc, nats_server.url, handler=STAMPED, rateLimit={"perSecond": 20}
    )
    spec = WorkerPoolSpec.model_validate(
        {
            "image": "unused",
            "handler": STAMPED,
            "nats": {"url": nats_server.url},
            "rateLimit": {"perSecond": 20},
        }
    )
    desired = plan(pool.namespace, pool.name, spec)
    assert desired.rate_limit is not None
    await nc.jetstream().delete_stream(desired.rate_limit.name)
    ids = [h.id for h in await pool.client.publish_batch([{}] * 10)]
    async with running_worker(pool.settings) as worker:
        await eventually(lambda: permits_of(worker).count_failures > 0)
        await asyncio.sleep(1)
        assert not any(handlers.STARTS[i] for i in ids)  # fails closed
        await ensure_plan(nc, desired)  # the operator's next reconcile puts it back
        await eventually(lambda: every_task_succeeded(pool, ids), within=20, what="every task")
    assert all(len(handlers.STARTS[i]) == 1 for i in ids)


async def test_each_key_keeps_its_own_limit_and_a_hot_key_holds_up_no_other(
    nc: NATS, nats_server: NatsServer
) -> None:
    pool = await make_tracked_pool(
        nc,
        nats_server.url,
        handler=STAMPED,
        concurrency=8,
        rateLimit={"perKey": {"header": "Customer", "perSecond": 5, "burst": 1}},
    )
    hot = [
        h.id
        for h in await asyncio.gather(
            *(pool.client.publish({}, headers={"Customer": "hot"}) for _ in range(40))
        )
    ]
    async with running_workers(pool.settings, 2):
        await asyncio.sleep(1)  # the hot key's backlog is in full swing
        cold_at = time.time()
        cold = [
            (await pool.client.publish({}, headers={"Customer": f"cold-{i}"})).id for i in range(5)
        ]
        await eventually(lambda: every_task_succeeded(pool, cold), within=10, what="cold keys")
        waited = [handlers.STARTS[i][0] - cold_at for i in cold]
        assert max(waited) < 2.5, waited  # not behind the hot key's 8 s backlog
        await eventually(
            lambda: every_task_succeeded(pool, hot), within=30, interval=0.5, what="hot key"
        )
    starts = [t for i in hot for t in handlers.STARTS[i]]
    assert len(starts) == len(hot)  # each ran once
    assert max(sliding_counts(starts, width=1.0, step=0.25)) <= 5 + 2  # 5/s, one window's edge
    assert (len(starts) - 1) / (max(starts) - min(starts)) <= 5.5
    states = await asyncio.gather(*(pool.client.status(i) for i in hot))
    assert all(s is not None and s.runs == 1 for s in states)  # going back cost no attempt


async def test_a_task_whose_deadline_passes_while_it_waits_expires_unrun(
    nc: NATS, nats_server: NatsServer
) -> None:
    pool = await make_tracked_pool(
        nc, nats_server.url, handler=STAMPED, rateLimit={"perSecond": 1, "burst": 1}
    )
    ids = [(await pool.client.publish({}, headers={"Jetpool-Ttl": "1.5"})).id for _ in range(5)]

    async def all_settled() -> bool:
        states = await asyncio.gather(*(pool.client.status(i) for i in ids))
        return all(s is not None and s.phase.final for s in states)

    async with running_worker(pool.settings):
        await eventually(all_settled, within=15, what="every task settled")
    states = {i: await pool.client.status(i) for i in ids}
    expired = [i for i, s in states.items() if s is not None and s.phase is TaskPhase.EXPIRED]
    ran = [i for i in ids if handlers.STARTS[i]]
    # one a second in epoch-aligned windows: at most three windows begin inside the 1.5 s TTL
    assert 1 <= len(ran) <= 3
    assert len(expired) >= 2
    assert not set(expired) & set(ran)  # an expired task never started
    assert len(expired) + len(ran) == len(ids)


async def test_tasks_waiting_for_a_permit_count_in_flight_but_never_as_stuck(
    nc: NATS, nats_server: NatsServer
) -> None:
    pool = await make_tracked_pool(
        nc, nats_server.url, handler=STAMPED, rateLimit={"perSecond": 0.1, "burst": 1}
    )
    await pool.client.publish_batch([{}] * 3)
    async with running_worker(pool.settings) as worker:
        await eventually(lambda: permits_of(worker).waiting == 2)
        await asyncio.sleep(1.5)  # 10 s windows: at most one of the two got its permit since
        stats = worker.stats()
    assert stats.in_flight >= 1  # in flight 1.5 s or more, holding its slot while it waits
    assert stats.oldest_in_flight_seconds < 1.0  # but waiting is not running: not stuck
