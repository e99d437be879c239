"""The operator credits worker stats only to the pool whose subject they arrived on."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any, cast

import pytest
from nats.aio.client import Client as NATS

from e2e.testbed.nats_server import NatsServer
from jetpool_operator.adapters.nats import ConnectionKey
from jetpool_operator.controller import OperatorRuntime
from jetpool_protocol.naming import PoolNames
from jetpool_protocol.stats import WorkerStats
from tests.worker.helpers import eventually

pytestmark = pytest.mark.nats


def _stats(namespace: str, pool: str, worker: str, **fields: Any) -> bytes:
    now = datetime.now(UTC)
    values: dict[str, Any] = {"failed": 999, **fields}
    return (
        WorkerStats(worker=worker, pool=pool, namespace=namespace, at=now, started_at=now, **values)
        .model_dump_json()
        .encode()
    )


async def test_stats_claiming_another_pool_on_this_pools_subject_are_ignored(
    nats_server: NatsServer, nc: NATS
) -> None:
    ns = f"t{uuid.uuid4().hex[:8]}"
    victim, hostile = PoolNames(ns, "victim"), PoolNames(f"{ns}-b", "hostile")
    operator = OperatorRuntime(kube=cast(Any, None))
    key = ConnectionKey(nats_server.url)
    runtimes = {}
    for names in (victim, hostile):
        runtime = operator.start_pool(names.namespace, names.pool)
        runtime.connection_key, runtime.stats_subject = key, names.stats_subject
        runtimes[names] = runtime
    try:
        await (await operator.nats.get(key)).flush()  # its stats subscription is in place

        async def published_and_seen() -> bool:
            # Sent again each round, as workers do every second: stats lost to a reconnect of
            # the operator's connection under load are simply the next ones.
            # A hostile pool's worker speaks for the victim on its own subject, and the reverse.
            await nc.publish(hostile.stats_subject, _stats(ns, "victim", "forged"))
            await nc.publish("jetpool.stats.elsewhere.x", _stats(ns, "victim", "forged-2"))
            await nc.publish(victim.stats_subject, _stats(ns, "victim", "real"))
            await nc.publish(hostile.stats_subject, _stats(f"{ns}-b", "hostile", "theirs"))
            await nc.flush()
            await asyncio.sleep(0.1)
            return "real" in runtimes[victim].snapshots and "theirs" in runtimes[hostile].snapshots

        await eventually(published_and_seen, interval=0.2, what="both pools' stats")
        assert set(runtimes[victim].snapshots) == {"real"}
        assert set(runtimes[hostile].snapshots) == {"theirs"}
    finally:
        await operator.nats.close()


async def test_a_sleeping_pool_is_woken_by_a_worker_reporting_trouble_not_by_routine_stats(
    nats_server: NatsServer, nc: NATS
) -> None:
    """A quiescent pool ticks only when woken; health must still name a worker that gets
    paused by its memory guard while the pool is idle."""
    names = PoolNames(f"t{uuid.uuid4().hex[:8]}", "idle")
    operator = OperatorRuntime(kube=cast(Any, None))
    key = ConnectionKey(nats_server.url)
    runtime = operator.start_pool(names.namespace, names.pool)
    runtime.connection_key, runtime.stats_subject = key, names.stats_subject
    runtime.quiescent = True
    try:
        await (await operator.nats.get(key)).flush()
        fine = _stats(names.namespace, names.pool, "w1", concurrency=4, pulled_ago_seconds=0.5)

        async def seen(worker_state: bytes) -> bool:
            await nc.publish(names.stats_subject, worker_state)
            await nc.flush()
            await asyncio.sleep(0.1)
            return bool(runtime.snapshots)

        await eventually(lambda: seen(fine), interval=0.2, what="routine stats")
        assert not runtime.wake.is_set()
        paused = _stats(names.namespace, names.pool, "w1", fetching=False, paused_reason="memory")
        await nc.publish(names.stats_subject, paused)
        await eventually(runtime.wake.is_set, what="the pool woken")
    finally:
        await operator.nats.close()
