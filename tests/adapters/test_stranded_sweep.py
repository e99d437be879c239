"""Tasks that reached maxDeliver while no operator watched are found by a sweep, once."""

from __future__ import annotations

import asyncio
import contextlib

import nats.errors
import pytest
from nats.aio.client import Client as NATS

from e2e.testbed.nats_server import NatsServer
from jetpool_operator.adapters.nats import StrandedTaskTarget, sweep_stranded_tasks
from jetpool_operator.core.stranded import sweep_plan
from tests.worker.helpers import Pool, dead_letters, make_pool, publish_task

pytestmark = pytest.mark.nats

ACK_WAIT = 0.5


def _target(pool: Pool) -> StrandedTaskTarget:
    s = pool.settings
    return StrandedTaskTarget(
        stream=s.stream,
        consumer=s.consumer,
        dead_letter_prefix=s.dead_letter_subject_prefix,
        namespace=s.pool_namespace,
        pool=s.pool_name,
    )


async def _exhaust(nc: NATS, pool: Pool, count: int, max_deliver: int) -> list[int]:
    """Workers that crash on every delivery: ``count`` tasks delivered ``max_deliver`` times
    and never answered, while no operator runs (nobody hears the advisories)."""
    sub = await nc.jetstream().pull_subscribe_bind(pool.settings.consumer, pool.settings.stream)
    sequences: set[int] = set()
    for _ in range(max_deliver):
        for msg in await sub.fetch(count, timeout=2):
            sequences.add(msg.metadata.sequence.stream)
        await asyncio.sleep(ACK_WAIT + 0.3)
    # the workers keep pulling: the server gives up on the tasks only when it next delivers
    with contextlib.suppress(nats.errors.TimeoutError):
        await sub.fetch(1, timeout=0.5)
    await asyncio.sleep(0.7)  # the empty pull request has expired
    await sub.unsubscribe()
    return sorted(sequences)


async def test_stranded_tasks_are_dead_lettered_once_and_leave_the_stream(
    nats_server: NatsServer, nc: NATS
) -> None:
    js = nc.jetstream()
    pool = await make_pool(js, nats_server.url, ack_wait=ACK_WAIT, max_deliver=2)
    for task_id in ("stuck-1", "stuck-2", "stuck-3"):
        await publish_task(js, pool, task_id)
    stranded = await _exhaust(nc, pool, 3, max_deliver=2)
    await publish_task(js, pool, "not-yet-delivered")
    assert (await js.stream_info(pool.settings.stream)).state.messages == 4

    moved = await sweep_stranded_tasks(nc, _target(pool))
    again = await sweep_stranded_tasks(nc, _target(pool))

    assert moved == stranded
    assert again == []
    records = [record for _, record in await dead_letters(js, pool)]
    assert sorted(r.task_id for r in records) == ["stuck-1", "stuck-2", "stuck-3"]
    assert {r.error_type for r in records} == {"MaxDeliveriesExceeded"}
    assert {r.attempts for r in records} == {2}
    state = (await js.stream_info(pool.settings.stream)).state
    assert state.messages == 1  # only the task no worker has seen yet
    info = await js.consumer_info(pool.settings.stream, pool.settings.consumer)
    assert info.num_pending == 1


async def test_a_sweep_leaves_everything_alone_while_a_task_is_in_flight(
    nats_server: NatsServer, nc: NATS
) -> None:
    js = nc.jetstream()
    pool = await make_pool(js, nats_server.url, ack_wait=ACK_WAIT, max_deliver=2)
    await publish_task(js, pool, "stuck")
    await _exhaust(nc, pool, 1, max_deliver=2)
    await publish_task(js, pool, "running")
    sub = await js.pull_subscribe_bind(pool.settings.consumer, pool.settings.stream)
    [running] = await sub.fetch(1, timeout=2)
    await running.in_progress()

    assert await sweep_stranded_tasks(nc, _target(pool)) == []
    assert await dead_letters(js, pool) == []

    await running.ack()
    await asyncio.sleep(0.1)
    assert len(await sweep_stranded_tasks(nc, _target(pool))) == 1
    assert [r.task_id for _, r in await dead_letters(js, pool)] == ["stuck"]
    await sub.unsubscribe()


def test_a_sweep_is_planned_only_when_nothing_is_ack_pending() -> None:
    assert sweep_plan(1, 10, []) is None
    assert sweep_plan(0, 0, []) is None
    plan = sweep_plan(0, 10, [])
    assert plan is not None
    assert plan.up_to_sequence == 10
    assert plan.subjects == (">",)
    filtered = sweep_plan(0, 3, ["tasks.a.x.>", "tasks.a.y.>"])
    assert filtered is not None
    assert filtered.subjects == ("tasks.a.x.>", "tasks.a.y.>")
