"""Keyed concurrency (``spec.keyedConcurrency``) against a real nats-server: the lease bucket
made by the operator's own plan, in-process workers with the settings the operator renders,
and the handler's own record of when each task ran (``handlers.SPANS``)."""

from __future__ import annotations

import asyncio
import random
import time

import pytest
from nats.aio.client import Client as NATS

from e2e.testbed.nats_server import NatsServer
from jetpool import TaskPhase
from jetpool_protocol.naming import PoolNames
from jetpool_protocol.worker_settings import WorkerSettings
from jetpool_worker.consumer_loop import Worker
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


async def keyed_pool(nc: NATS, url: str, **limit: object) -> TrackedPool:
    return await make_tracked_pool(
        nc,
        url,
        handler=SPANNED,
        concurrency=8,
        keyedConcurrency={"header": "Customer", **limit},
    )


async def test_no_key_ever_runs_more_than_its_limit_across_workers(
    nc: NATS, nats_server: NatsServer
) -> None:
    pool = await keyed_pool(nc, nats_server.url, maxPerKey=2, leaseSeconds=5)
    rng = random.Random(7)
    keys = [f"customer-{i}" for i in range(5)]
    tasks = [(rng.choice(keys), rng.uniform(0.01, 0.08)) for _ in range(300)]
    handles = await asyncio.gather(
        *(pool.client.publish({"sleep": sleep}, headers={"Customer": key}) for key, sleep in tasks)
    )
    ids = [h.id for h in handles]
    async with running_workers(pool.settings, 3):
        # the handler's own record first (polling 300 states would load the shared loop)
        await eventually(lambda: all(handlers.SPANS[i] for i in ids), within=60, interval=0.5)
        await eventually(
            lambda: every_task_succeeded(pool, ids), within=30, interval=0.5, what="every task"
        )
    peaks = {
        key: most_at_once(
            [
                span
                for i, (k, _) in zip(ids, tasks, strict=True)
                if k == key
                for span in handlers.SPANS[i]
            ]
        )
        for key in keys
    }
    assert all(peak <= 2 for peak in peaks.values()), peaks
    assert max(peaks.values()) == 2  # the limit, not one at a time
    states = await asyncio.gather(*(pool.client.status(i) for i in ids))
    assert all(s is not None and s.runs == 1 for s in states)  # busy keys cost no attempt
    assert all(len(handlers.SPANS[i]) == 1 for i in ids)


async def test_tasks_without_the_key_header_are_not_limited(
    nc: NATS, nats_server: NatsServer
) -> None:
    pool = await keyed_pool(nc, nats_server.url, maxPerKey=1)
    ids = [h.id for h in await pool.client.publish_batch([{"sleep": 0.3}] * 6)]
    async with running_worker(pool.settings):
        await eventually(lambda: every_task_succeeded(pool, ids), within=20, what="every task")
    assert most_at_once([span for i in ids for span in handlers.SPANS[i]]) == 6


async def test_a_slot_left_by_a_crashed_holder_frees_itself_after_the_lease(
    nc: NATS, nats_server: NatsServer
) -> None:
    pool = await keyed_pool(nc, nats_server.url, maxPerKey=1, leaseSeconds=3)
    bucket = PoolNames(pool.namespace, pool.name).key_lease_bucket
    kv = await nc.jetstream().key_value(bucket)
    await kv.create("conc.acme.0", b"a-worker-that-died", msg_ttl=3)  # its only slot
    held_at = time.monotonic()
    task = await pool.client.publish({}, headers={"Customer": "acme"})
    async with running_worker(pool.settings):
        await eventually(lambda: every_task_succeeded(pool, [task.id]), within=20, what="run")
    [(started, _)] = handlers.SPANS[task.id]
    assert started - held_at >= 2.5  # it waited for the lease to lapse (TTL granularity ~1 s)


async def test_a_task_longer_than_its_lease_keeps_its_slot_by_renewing_it(
    nc: NATS, nats_server: NatsServer
) -> None:
    pool = await keyed_pool(nc, nats_server.url, maxPerKey=1, leaseSeconds=3)
    async with running_workers(pool.settings, 2) as workers:
        long = await pool.client.publish({"sleep": 5}, headers={"Customer": "acme"})

        async def long_runs() -> bool:
            state = await long.status()
            return state is not None and state.phase is TaskPhase.RUNNING

        await eventually(long_runs, what="the long task to hold the key's only slot")
        short = await pool.client.publish({}, headers={"Customer": "acme"})
        await eventually(
            lambda: every_task_succeeded(pool, [long.id, short.id]), within=20, what="both"
        )
        assert all(w.gates.leases is not None and w.gates.leases.lost == 0 for w in workers)
    [(_, long_ended)] = handlers.SPANS[long.id]
    [(short_started, _)] = handlers.SPANS[short.id]
    assert short_started >= long_ended  # 5 s > the 3 s lease: renewals kept the slot


def test_a_batch_handler_with_a_per_key_limit_refuses_to_start() -> None:
    settings = WorkerSettings(
        pool_name="p",
        handler="tests.worker.handlers:fill_batch",
        stream="s",
        consumer="workers",
        dead_letter_stream="s-dlq",
        dead_letter_subject_prefix="jetpool.dlq.n.p",
        control_key="n.p",
        stats_subject="jetpool.stats.n.p",
        key_lease_bucket="s-leases",
        key_header="Customer",
    )
    with pytest.raises(ValueError, match="batch handlers cannot be used with keyedConcurrency"):
        Worker(settings)
