"""The worker obeys the pool's circuit breaker written to the control KV key."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime

import pytest
from nats.aio.client import Client as NATS

from e2e.testbed.nats_server import NatsServer
from jetpool_protocol.control import BreakerState, ControlState
from jetpool_worker.breaker import BreakerGate, parse_control
from tests.worker import handlers
from tests.worker.helpers import eventually, make_pool, publish_task, running_worker


def test_a_missing_or_empty_control_entry_means_closed():
    assert parse_control(None).breaker is BreakerState.CLOSED
    assert parse_control(b"").breaker is BreakerState.CLOSED


def test_half_open_gives_the_trial_worker_exactly_its_trial_budget():
    gate = BreakerGate("w1")
    gate.update(
        ControlState(breaker=BreakerState.HALF_OPEN, epoch=3, trial_worker="w1", trial_tasks=2)
    )
    assert gate.allowance() == 2
    gate.fetched(2)
    assert gate.allowance() == 0
    assert gate.paused_reason == "breaker_half_open_trial_done"


def test_a_new_epoch_resets_the_trial_budget():
    gate = BreakerGate("w1")
    gate.update(
        ControlState(breaker=BreakerState.HALF_OPEN, epoch=3, trial_worker="w1", trial_tasks=2)
    )
    gate.fetched(2)
    gate.update(
        ControlState(breaker=BreakerState.HALF_OPEN, epoch=4, trial_worker="w1", trial_tasks=2)
    )
    assert gate.allowance() == 2


def test_other_workers_behave_as_open_during_half_open():
    gate = BreakerGate("w2")
    gate.update(
        ControlState(breaker=BreakerState.HALF_OPEN, epoch=1, trial_worker="w1", trial_tasks=5)
    )
    assert gate.allowance() == 0


async def _control_kv(nc: NATS):
    js = nc.jetstream()
    bucket = f"ctl-{uuid.uuid4().hex[:8]}"
    return bucket, await js.create_key_value(bucket=bucket)


def _state(breaker: BreakerState, epoch: int, **kw) -> bytes:
    return (
        ControlState(breaker=breaker, epoch=epoch, since=datetime.now(UTC), **kw)
        .model_dump_json()
        .encode()
    )


@pytest.mark.nats
async def test_an_open_breaker_stops_fetching_within_one_second(nc: NATS, nats_server: NatsServer):
    js = nc.jetstream()
    bucket, kv = await _control_kv(nc)
    pool = await make_pool(js, nats_server.url, control_bucket=bucket)
    async with running_worker(pool.settings) as worker:
        await kv.put(pool.settings.control_key, _state(BreakerState.OPEN, 1, reason="test"))
        tripped = time.monotonic()
        await eventually(
            lambda: worker.gate.state.breaker is BreakerState.OPEN, within=1, what="gate open"
        )
        # Any fetch already in flight expires within FETCH_EXPIRY; after that, none is sent.
        await asyncio.sleep(max(0.0, tripped + 1.0 - time.monotonic()))
        fetches_at_one_second = worker.fetch_requests
        ids = [f"open-{uuid.uuid4().hex[:8]}" for _ in range(5)]
        for task_id in ids:
            await publish_task(js, pool, task_id)
        await eventually(
            lambda: worker.stats().paused_reason == "breaker", within=1, what="paused stats"
        )
        with pytest.raises(AssertionError):
            await eventually(lambda: any(handlers.DONE[i] for i in ids), within=1.0)
        assert worker.fetch_requests == fetches_at_one_second
        await kv.put(pool.settings.control_key, _state(BreakerState.CLOSED, 2))
        await eventually(
            lambda: all(handlers.DONE[i] == 1 for i in ids), what="tasks run after close"
        )


@pytest.mark.nats
async def test_half_open_lets_only_the_trial_worker_run_its_trial_tasks(
    nc: NATS, nats_server: NatsServer
):
    js = nc.jetstream()
    bucket, kv = await _control_kv(nc)
    pool = await make_pool(js, nats_server.url, control_bucket=bucket, concurrency=4)
    other = pool.settings.model_copy(update={"worker_id": pool.settings.worker_id + "-other"})
    await kv.put(
        pool.settings.control_key,
        _state(BreakerState.HALF_OPEN, 7, trial_worker=pool.settings.worker_id, trial_tasks=3),
    )
    ids = [f"trial-{uuid.uuid4().hex[:8]}" for _ in range(10)]
    for task_id in ids:
        await publish_task(js, pool, task_id)
    async with running_worker(pool.settings) as trial, running_worker(other) as bystander:
        await eventually(lambda: sum(handlers.DONE[i] for i in ids) == 3, what="three trial tasks")
        with pytest.raises(AssertionError):
            await eventually(lambda: sum(handlers.DONE[i] for i in ids) > 3, within=1.0)
        assert bystander.counters.succeeded == 0
        assert trial.stats().trial_succeeded == 3
        await kv.put(pool.settings.control_key, _state(BreakerState.CLOSED, 8))
        await eventually(
            lambda: all(handlers.DONE[i] == 1 for i in ids), what="all tasks after close"
        )


@pytest.mark.nats
async def test_a_missing_control_bucket_means_closed(nc: NATS, nats_server: NatsServer):
    js = nc.jetstream()
    pool = await make_pool(js, nats_server.url, control_bucket=f"absent-{uuid.uuid4().hex[:6]}")
    task_id = f"nobucket-{uuid.uuid4().hex[:8]}"
    async with running_worker(pool.settings):
        await publish_task(js, pool, task_id)
        await eventually(lambda: handlers.DONE[task_id] == 1, what="task done")


def half_open(epoch: int, trial_tasks: int = 1) -> ControlState:
    return ControlState(
        breaker=BreakerState.HALF_OPEN, epoch=epoch, trial_worker="w1", trial_tasks=trial_tasks
    )


def test_a_fetch_that_lands_after_the_trip_to_half_open_admits_only_the_trial_budget():
    gate = BreakerGate("w1")
    gate.update(ControlState())
    assert gate.allowance() is None  # Closed: a batch of 8 is asked for...
    gate.update(half_open(epoch=2, trial_tasks=1))  # ...and HalfOpen starts while it is in flight
    assert gate.admit(8) == (1, 2)
    assert gate.admit(8) == (0, 2)


def test_a_fetch_that_lands_after_the_breaker_opened_still_runs_but_no_new_one_is_asked():
    # Handing the tasks back would cost each a delivery attempt for nothing.
    gate = BreakerGate("w1")
    gate.update(ControlState())
    gate.update(ControlState(breaker=BreakerState.OPEN, epoch=1))
    assert gate.admit(8) == (8, None)
    assert gate.allowance() == 0


def test_tasks_fetched_before_the_trial_do_not_count_as_trial_results():
    gate = BreakerGate("w1")
    gate.update(ControlState())
    _, before = gate.admit(4)
    gate.update(half_open(epoch=2))
    _, trial = gate.admit(1)
    for _ in range(4):
        gate.finished(False, before)
    gate.finished(True, trial)
    assert (gate.trial_succeeded, gate.trial_failed) == (1, 0)


def test_a_trial_of_an_earlier_epoch_does_not_count_in_the_next_one():
    gate = BreakerGate("w1")
    gate.update(half_open(epoch=2))
    _, old = gate.admit(1)
    gate.update(half_open(epoch=3))
    gate.finished(False, old)
    assert (gate.trial_succeeded, gate.trial_failed) == (0, 0)
    assert gate.allowance() == 1


def test_a_trial_task_that_never_reaches_the_handler_gives_its_slot_back():
    gate = BreakerGate("w1")
    gate.update(
        ControlState(breaker=BreakerState.HALF_OPEN, epoch=5, trial_worker="w1", trial_tasks=2)
    )
    _, epoch = gate.admit(2)
    gate.returned(epoch)  # e.g. dead-lettered as expired without running
    assert gate.allowance() == 1
    gate.returned(epoch - 1)  # an earlier epoch's task: nothing to give back
    assert gate.allowance() == 1


async def test_exhausted_tasks_do_not_use_up_the_half_open_trial(nc: NATS, nats_server: NatsServer):
    js = nc.jetstream()
    pool = await make_pool(js, nats_server.url)
    kv = await js.create_key_value(bucket=pool.settings.control_bucket)
    # Tasks delivered more often than retry_max_attempts are dead-lettered unrun; a trial of
    # one must still reach the good task behind them.
    exhausted = [f"x-{uuid.uuid4().hex[:6]}" for _ in range(3)]
    for task_id in exhausted:
        await publish_task(js, pool, task_id)
    sub = await js.pull_subscribe_bind(pool.settings.consumer, stream=pool.settings.stream)
    deliveries: dict[int, int] = {}
    # every one delivered retry_max_attempts times (a fetch may come back before a nak'd
    # task is redeliverable, so count instead of looping a fixed number of rounds)
    while len(deliveries) < 3 or min(deliveries.values()) < pool.settings.retry_max_attempts:
        for msg in await sub.fetch(3, timeout=5):
            deliveries[msg.metadata.sequence.stream] = msg.metadata.num_delivered
            await msg.nak()
    await sub.unsubscribe()
    good = f"g-{uuid.uuid4().hex[:6]}"
    await publish_task(js, pool, good)
    state = ControlState(
        breaker=BreakerState.HALF_OPEN,
        since=datetime.now(UTC),
        epoch=1,
        trial_worker=pool.settings.worker_id,
        trial_tasks=1,
    )
    await kv.put(pool.settings.control_key, state.model_dump_json().encode())
    async with running_worker(pool.settings):
        await eventually(lambda: handlers.DONE[good] == 1)
