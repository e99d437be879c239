"""A task's life read back by id through ``jetpool.Client``: status, results, cancellation,
delayed and periodic tasks, and attempts that count runs. The NATS resources are the ones the
operator makes (its own plan and ``ensure_plan``); the handlers keep their own ledger
(``handlers.LEDGER``), which every status must agree with."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from nats.aio.client import Client as NATS

from e2e.testbed.nats_server import NatsServer
from jetpool import CancelOutcome, Client, TaskPhase
from jetpool_protocol.task_state import TaskError
from jetpool_worker.dead_letter import RawTask
from jetpool_worker.task_tracking import TaskTracker
from tests.worker import handlers
from tests.worker.helpers import (
    TrackedPool,
    dead_letters,
    eventually,
    running_worker,
)
from tests.worker.helpers import make_tracked_pool as tracked_pool

pytestmark = pytest.mark.nats


@pytest.fixture
async def pool(nc: NATS, nats_server: NatsServer) -> TrackedPool:
    return await tracked_pool(nc, nats_server.url)


async def phase_of(client: Client, task_id: str) -> TaskPhase | None:
    state = await client.status(task_id)
    return None if state is None else state.phase


async def test_every_kind_of_ending_reads_back_by_id_and_agrees_with_the_handler(
    pool: TrackedPool,
) -> None:
    client = pool.client
    ok = await client.publish({"return": {"answer": 42}})
    failing = await client.publish({"raise": "boom"})
    queued_then_cancelled = await client.publish({"return": "never"})
    expired = await client.publish({"return": "late"}, headers={"Jetpool-Ttl": "0.5"})
    delayed = await client.publish({"return": "later"}, delay=2)
    assert await phase_of(client, ok.id) is TaskPhase.QUEUED
    assert (await delayed.status()).phase is TaskPhase.SCHEDULED  # type: ignore[union-attr]
    assert (await queued_then_cancelled.cancel()).outcome is CancelOutcome.REQUESTED
    await asyncio.sleep(0.6)  # the TTL passes before any worker runs

    async with running_worker(pool.settings):
        running = await client.publish({"sleep": 30})
        await eventually(
            lambda: handlers.LEDGER[running.id] == ["ran"], what="the long task to start"
        )
        await eventually(
            lambda: _is(client, running.id, TaskPhase.RUNNING), what="running in the state"
        )
        assert (await running.cancel()).outcome is CancelOutcome.REQUESTED
        for handle, phase in [
            (ok, TaskPhase.SUCCEEDED),
            (failing, TaskPhase.DEAD_LETTERED),
            (queued_then_cancelled, TaskPhase.CANCELLED),
            (expired, TaskPhase.EXPIRED),
            (running, TaskPhase.CANCELLED),
            (delayed, TaskPhase.SUCCEEDED),
        ]:
            await eventually(lambda h=handle, p=phase: _is(client, h.id, p), what=f"{phase}")

    result = await ok.result()
    assert result.ok
    assert result.value == {"answer": 42}
    assert (await delayed.result()).value == "later"
    failed = await failing.result()
    assert not failed.ok
    assert failed.error is not None
    assert failed.error.message == "boom"
    # the handler's own ledger agrees with every state
    assert handlers.LEDGER[ok.id] == ["ran", "returned"]
    assert handlers.LEDGER[failing.id] == ["ran", "raised", "ran", "raised"]
    assert (await failing.status()).runs == 2  # type: ignore[union-attr]
    assert handlers.LEDGER[running.id] == ["ran", "cancelled"]
    assert queued_then_cancelled.id not in handlers.LEDGER
    assert expired.id not in handlers.LEDGER
    assert handlers.LEDGER[delayed.id] == ["ran", "returned"]
    records = {r.task_id: r for _, r in await dead_letters(client.js, pool)}  # type: ignore[arg-type]
    assert set(records) == {failing.id, expired.id}
    assert records[failing.id].attempts == 2


async def _is(client: Client, task_id: str, phase: TaskPhase) -> bool:
    return await phase_of(client, task_id) is phase


async def test_a_scheduled_task_cancelled_before_its_time_never_runs(pool: TrackedPool) -> None:
    client = pool.client
    later = await client.publish({"return": "never"}, delay=1.5)
    cancelled = await later.cancel()
    assert cancelled.outcome is CancelOutcome.CANCELLED
    async with running_worker(pool.settings):
        await asyncio.sleep(3)
    assert later.id not in handlers.LEDGER
    assert await phase_of(client, later.id) is TaskPhase.CANCELLED
    assert await client.schedules() == []


async def test_a_periodic_schedule_fires_until_deleted(pool: TrackedPool) -> None:
    client = pool.client
    await client.schedule("tick", {"return": "tock"}, every="1s")
    [listed] = await client.schedules()
    assert (listed.name, listed.pattern) == ("tick", "@every 1s")
    async with running_worker(pool.settings):
        await eventually(
            lambda: (
                sum(1 for k in handlers.LEDGER if k.startswith("seq-")) >= 2 and _ran_from(pool)
            ),
            within=10,
            what="two firings run",
        )
        assert await client.delete_schedule("tick")
        fired = _ran_from(pool)
        await asyncio.sleep(2.5)
        assert _ran_from(pool) <= fired + 1  # one may have been on its way
    assert await client.schedules() == []


def _ran_from(pool: TrackedPool) -> int:
    return sum(1 for runs in handlers.LEDGER.values() if runs[-1:] == ["returned"])


async def test_a_sync_handler_sees_the_cancel_flag_and_its_task_settles_as_cancelled(
    nc: NATS, nats_server: NatsServer
) -> None:
    pool = await tracked_pool(nc, nats_server.url, handler="tests.worker.handlers:lifecycle_sync")
    async with running_worker(pool.settings):
        running = await pool.client.publish({"sleep": 30})
        await eventually(lambda: handlers.LEDGER[running.id] == ["ran"], what="started")
        await running.cancel()
        await eventually(
            lambda: _is(pool.client, running.id, TaskPhase.CANCELLED), what="cancelled"
        )
    assert handlers.LEDGER[running.id] == ["ran", "cancelled"]


async def test_a_delivery_handed_back_unrun_costs_no_attempt_and_an_unrecorded_one_does(
    nc: NATS, pool: TrackedPool
) -> None:
    # The worker's own tracker on the real bucket, delivery by delivery: deterministic where
    # the mid-burst e2e test depends on when workers happen to hand tasks back.
    tracker = TaskTracker(pool.settings, "w-test", lambda: datetime.now(UTC))
    tracker.bind(nc, nc.jetstream())

    def delivery(number: int) -> RawTask:
        return RawTask(
            subject=pool.client.default_subject(),
            stream=pool.settings.stream,
            sequence=7,
            payload=b"{}",
            headers={"Jetpool-Task-Id": "t-handed-back"},
            attempt=number,
            published_at=datetime.now(UTC),
        )

    first = await tracker.admit(delivery(1))
    tracker.started(first)
    await tracker.retrying(first, 0.1, TaskError.of("RuntimeError", "boom"))  # ran, failed
    await tracker.handed_back([delivery(2)], "the worker is stopping")  # delivered, not run
    third = await tracker.admit(delivery(3))
    assert third.attempt == 2
    # the third delivery's worker dies before writing anything: it counts as a run
    fourth = await tracker.admit(delivery(4))
    assert fourth.attempt == 3
    state = await pool.client.status("t-handed-back")
    assert state is not None
    assert (state.phase, state.runs, state.deliveries) == (TaskPhase.QUEUED, 1, 2)
