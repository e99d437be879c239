"""Crashes, signals and server restarts lose no task."""

from __future__ import annotations

import asyncio
import random
import signal
import uuid
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NATS

from e2e.testbed.nats_server import NatsServer
from tests.worker import handlers
from tests.worker.helpers import (
    dead_letter_ids,
    eventually,
    make_pool,
    publish_task,
    running_worker,
    stream_messages,
)
from tests.worker.subprocess_worker import done_ids, kill, spawn_worker

pytestmark = pytest.mark.nats


async def _ack_pending(js, pool) -> int:
    return int((await js.consumer_info(pool.settings.stream, "workers")).num_ack_pending)


async def test_a_task_of_a_sigkilled_worker_is_redelivered_and_completed_by_another(
    nc: NATS, nats_server: NatsServer, tmp_path: Path
):
    js = nc.jetstream()
    pool = await make_pool(js, nats_server.url, ack_wait=1.5, task_timeout_seconds=30)
    task_id = f"kill-{uuid.uuid4().hex[:8]}"
    proc = spawn_worker(pool.settings, tmp_path / "done", tmp_path / "worker.log")
    try:
        await publish_task(js, pool, task_id, {"sleep": 20})
        await eventually(lambda: _is(_ack_pending(js, pool), 1), what="task taken by the process")
    finally:
        kill(proc, signal.SIGKILL)
    other = pool.settings.model_copy(update={"worker_id": "survivor"})
    # The survivor's handler returns at once and records which attempt it saw.
    async with running_worker(other, handler=_fast_handler()):
        await eventually(lambda: _FAST_DONE.get(task_id) == 2, within=10, what="redelivery")
    assert await stream_messages(js, pool) == 0


_FAST_DONE: dict[str, int] = {}


def _fast_handler():
    from jetpool_worker.handlers import Handler

    async def fast(task):
        _FAST_DONE[task.id] = task.attempt

    return Handler.wrap(fast)


def _wait(proc, seconds: float) -> int | None:
    try:
        return proc.wait(seconds)
    except Exception:
        return None


async def _is(coro, value) -> bool:
    return await coro == value


async def test_sigterm_finishes_in_flight_work_hands_back_the_rest_and_exits_zero(
    nc: NATS, nats_server: NatsServer, tmp_path: Path
):
    js = nc.jetstream()
    pool = await make_pool(
        js,
        nats_server.url,
        ack_wait=30,
        task_timeout_seconds=60,
        shutdown_grace_seconds=1.5,
        log_level="DEBUG",
    )
    quick, slow = f"quick-{uuid.uuid4().hex[:8]}", f"slow-{uuid.uuid4().hex[:8]}"
    proc = spawn_worker(pool.settings, tmp_path / "done", tmp_path / "worker.log")
    try:
        await publish_task(js, pool, quick, {"sleep": 0.8})
        await publish_task(js, pool, slow, {"sleep": 30})
        await eventually(lambda: _is(_ack_pending(js, pool), 2), what="both tasks taken")
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(_wait, proc, 15)
    finally:
        kill(proc)
    assert code == 0, (tmp_path / "worker.log").read_text()
    assert done_ids(tmp_path / "done") == [quick]
    # The unfinished task was nak'ed: it is available again long before the 30 s ack wait.
    sub = await js.pull_subscribe_bind("workers", stream=pool.settings.stream)
    [msg] = await sub.fetch(1, timeout=2)
    assert msg.headers["Jetpool-Task-Id"] == slow
    assert msg.metadata.num_delivered == 2
    await msg.ack()


async def test_the_worker_reconnects_after_a_nats_restart_and_loses_nothing(
    private_nats_server: NatsServer,
):
    client = await nats.connect(
        private_nats_server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2
    )
    js = client.jetstream()
    pool = await make_pool(js, private_nats_server.url, ack_wait=3)
    before = [f"pre-{uuid.uuid4().hex[:8]}" for _ in range(40)]
    after = [f"post-{uuid.uuid4().hex[:8]}" for _ in range(40)]
    async with running_worker(pool.settings) as worker:
        for task_id in before:
            await publish_task(js, pool, task_id, {"sleep": 0.05})
        await eventually(lambda: sum(handlers.DONE[i] for i in before) >= 5, what="some done")
        await asyncio.to_thread(private_nats_server.restart)
        await eventually(lambda: worker.connected and client.is_connected, what="reconnect")
        for task_id in after:
            await publish_task(js, pool, task_id)
        await eventually(
            lambda: all(handlers.DONE[i] >= 1 for i in before + after),
            within=20,
            what="every task done after the restart",
        )
        await eventually(lambda: _is(stream_messages(js, pool), 0), what="stream empty")
    await client.close()


async def test_nothing_is_lost_across_random_failures_and_a_worker_crash(
    nc: NATS, nats_server: NatsServer, tmp_path: Path
):
    js = nc.jetstream()
    pool = await make_pool(
        js,
        nats_server.url,
        ack_wait=2,
        concurrency=8,
        retry_max_attempts=5,
        retry_initial_seconds=0.05,
        retry_max_seconds=0.2,
        non_retryable=("ValueError",),
    )
    rng = random.Random(7)
    expect_dlq: set[str] = set()
    ids = []
    for n in range(300):
        task_id = f"n{n}-{uuid.uuid4().hex[:6]}"
        roll = rng.random()
        body: dict[str, object] = {"sleep": 0.01}
        if roll < 0.1:
            body["raise"] = "ValueError"
            expect_dlq.add(task_id)
        elif roll < 0.4:
            body["fail_times"] = rng.randint(1, 2)
        ids.append((task_id, body))
    done_file = tmp_path / "done"
    first = spawn_worker(pool.settings, done_file, tmp_path / "w1.log")
    try:
        for task_id, body in ids:
            await publish_task(js, pool, task_id, body)
        await eventually(lambda: len(done_ids(done_file)) >= 80, within=30, what="80 done")
    finally:
        kill(first, signal.SIGKILL)
    assert len(set(done_ids(done_file))) < len(ids), "the crash came too late to matter"
    second = spawn_worker(pool.settings, done_file, tmp_path / "w2.log")
    try:
        await eventually(lambda: _is(stream_messages(js, pool), 0), within=60, what="stream empty")
    finally:
        kill(second, signal.SIGTERM)
    done = set(done_ids(done_file))
    dlq = await dead_letter_ids(js, pool)
    assert len(dlq) == len(set(dlq)), "a task was dead-lettered twice"
    all_ids = {i for i, _ in ids}
    assert done | set(dlq) == all_ids
    assert not done & set(dlq)
    assert set(dlq) == expect_dlq
