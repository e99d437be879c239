"""What happens to a task: success, retries with backoff, dead letters, timeouts, batches."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import time
import uuid

import pytest
from nats.aio.client import Client as NATS

from e2e.testbed.nats_server import NatsServer
from jetpool_protocol import headers as h
from jetpool_protocol.dead_letter import DeadLetterReason
from jetpool_protocol.keyring import Keyring
from jetpool_protocol.security import seal
from tests.worker import handlers
from tests.worker.helpers import (
    dead_letters,
    eventually,
    make_pool,
    publish_task,
    running_worker,
    stream_messages,
)

pytestmark = pytest.mark.nats


def tid() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


async def test_a_successful_task_is_acked_and_leaves_the_stream(nc: NATS, nats_server: NatsServer):
    js = nc.jetstream()
    pool = await make_pool(js, nats_server.url)
    ids = [tid() for _ in range(10)]
    async with running_worker(pool.settings) as worker:
        for task_id in ids:
            await publish_task(js, pool, task_id)
        await eventually(lambda: all(handlers.DONE[i] == 1 for i in ids), what="all tasks done")
        await eventually(lambda: worker.counters.succeeded == len(ids), what="success counter")
    assert await stream_messages(js, pool) == 0
    assert await dead_letters(js, pool) == []


async def test_a_failing_task_is_retried_with_delays_inside_the_backoff_bounds(
    nc: NATS, nats_server: NatsServer
):
    js = nc.jetstream()
    pool = await make_pool(
        js,
        nats_server.url,
        retry_initial_seconds=0.4,
        retry_multiplier=2.0,
        retry_max_seconds=1.0,
        retry_jitter="equal",
        retry_max_attempts=4,
    )
    task_id = tid()
    async with running_worker(pool.settings):
        await publish_task(js, pool, task_id, {"fail_times": 3})
        await eventually(lambda: handlers.DONE[task_id] == 1, what="task done after retries")
    times = handlers.ATTEMPT_TIMES[task_id]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(gaps) == 3
    # Equal jitter: attempt n waits in [backoff/2, backoff], backoff = min(0.4 * 2^(n-1), 1.0).
    for attempt, gap in enumerate(gaps, start=1):
        backoff = min(0.4 * 2 ** (attempt - 1), 1.0)
        assert backoff / 2 - 0.05 <= gap <= backoff + 0.5, (attempt, gap)
    assert await dead_letters(js, pool) == []


async def test_a_non_retryable_error_is_dead_lettered_at_once(nc: NATS, nats_server: NatsServer):
    js = nc.jetstream()
    pool = await make_pool(
        js, nats_server.url, non_retryable=("tests.worker.handlers.PermanentError",)
    )
    rejected, permanent = tid(), tid()
    async with running_worker(pool.settings):
        await publish_task(js, pool, rejected, {"reject": "bad order"})
        await publish_task(js, pool, permanent, {"raise": "PermanentError"})
        await eventually(lambda: _count(dead_letters(js, pool), 2), what="two dead letters")
    records = {r.task_id: (hdrs, r) for hdrs, r in await dead_letters(js, pool)}
    assert len(handlers.ATTEMPT_TIMES[rejected]) == 1
    assert len(handlers.ATTEMPT_TIMES[permanent]) == 1
    hdrs, record = records[rejected]
    assert record.reason is DeadLetterReason.NON_RETRYABLE
    assert record.error_type == "Reject"
    assert record.error_message == "bad order"
    assert hdrs[h.DLQ_REASON] == "non_retryable"
    assert records[permanent][1].error_type == "PermanentError"
    assert await stream_messages(js, pool) == 0


async def _count(records_coro, n: int) -> bool:
    return len(await records_coro) >= n


async def test_a_task_failing_every_attempt_is_dead_lettered_with_full_metadata(
    nc: NATS, nats_server: NatsServer
):
    js = nc.jetstream()
    pool = await make_pool(js, nats_server.url, retry_max_attempts=3, retry_jitter="none")
    task_id = tid()
    async with running_worker(pool.settings) as worker:
        await publish_task(
            js, pool, task_id, {"raise": "ValueError"}, extra_headers={"X-Custom": "kept"}
        )
        await eventually(lambda: _count(dead_letters(js, pool), 1), what="dead letter")
    [(hdrs, record)] = await dead_letters(js, pool)
    assert len(handlers.ATTEMPT_TIMES[task_id]) == 3
    assert record.reason is DeadLetterReason.MAX_ATTEMPTS
    assert record.task_id == task_id
    assert record.attempts == 3
    assert record.error_type == "ValueError"
    assert f"told to raise for {task_id}" in record.error_message
    assert record.traceback is not None
    assert "ValueError" in record.traceback
    assert record.original_subject == pool.subject()
    assert record.original_stream == pool.settings.stream
    assert record.original_sequence == 1
    assert record.headers["X-Custom"] == "kept"
    assert json.loads(record.payload) == {"raise": "ValueError"}
    assert record.pool == pool.settings.pool_name
    assert record.namespace == "test"
    assert record.worker == worker.worker_id
    # first failure = attempt 1, last = attempt 3: apart by at least the two backoffs (0.2+0.4).
    assert (record.last_failure_at - record.first_failure_at).total_seconds() >= 0.55
    assert hdrs[h.MSG_ID].startswith(f"{pool.settings.stream}:1:")
    assert hdrs[h.DLQ_ERROR_TYPE] == "ValueError"
    assert hdrs[h.DLQ_POOL] == f"test/{pool.settings.pool_name}"
    assert await stream_messages(js, pool) == 0


@pytest.mark.parametrize(
    ("case", "error_fragment"),
    [
        ("malformed_json", "not valid JSON"),
        ("oversize", "limit is 64"),
        ("bad_signature", "signature does not match"),
        ("unsigned", "not signed"),
    ],
)
async def test_an_invalid_task_is_dead_lettered_without_running(
    nc: NATS, nats_server: NatsServer, tmp_path, case: str, error_fragment: str
):
    key = os.urandom(32)
    key_file = tmp_path / "signing.key"
    key_file.write_text(base64.b64encode(key).decode())
    js = nc.jetstream()
    pool = await make_pool(
        js,
        nats_server.url,
        max_payload_bytes=64,
        signing_key_file=str(key_file),
        require_signed=True,
    )
    task_id = tid()
    keys = Keyring.single(key)
    subject = pool.subject()
    payload, hdrs = seal(
        b'{"ok": true}',
        {h.TASK_ID: task_id, h.TASK_CREATED: "2030-01-01T00:00:00Z"},
        subject=subject,
        signing_keys=keys,
    )
    if case == "malformed_json":
        payload, hdrs = seal(
            b"{not json",
            {h.TASK_ID: task_id, h.CONTENT_TYPE: "application/json"},
            subject=subject,
            signing_keys=keys,
        )
    elif case == "oversize":
        payload, hdrs = seal(b"x" * 65, {h.TASK_ID: task_id}, subject=subject, signing_keys=keys)
    elif case == "bad_signature":
        hdrs[h.SIGNATURE] = "0" * 64
    elif case == "unsigned":
        del hdrs[h.SIGNATURE]
    async with running_worker(pool.settings):
        await js.publish(subject, payload, headers=hdrs)
        await eventually(lambda: _count(dead_letters(js, pool), 1), what="dead letter")
    [(dl_headers, record)] = await dead_letters(js, pool)
    assert record.reason is DeadLetterReason.INVALID
    assert error_fragment in record.error_message
    assert record.payload == payload
    assert dl_headers[h.DLQ_REASON] == "invalid"
    assert task_id not in handlers.ATTEMPT_TIMES


async def test_a_correctly_signed_task_runs(nc: NATS, nats_server: NatsServer, tmp_path):
    key = os.urandom(32)
    (tmp_path / "k").write_text(base64.b64encode(key).decode())
    js = nc.jetstream()
    pool = await make_pool(
        js,
        nats_server.url,
        signing_key_file=str(tmp_path / "k"),
        require_signed=True,
        encryption_key_file=str(tmp_path / "k"),
    )
    task_id = tid()
    payload, hdrs = seal(
        b"{}",
        {h.TASK_ID: task_id, h.CONTENT_TYPE: "application/json"},
        subject=pool.subject(),
        signing_keys=Keyring.single(key),
        encryption_keys=Keyring.single(key),
    )
    async with running_worker(pool.settings):
        await js.publish(pool.subject(), payload, headers=hdrs)
        await eventually(lambda: handlers.DONE[task_id] == 1, what="signed task done")


async def test_an_expired_task_is_dead_lettered_and_not_run(nc: NATS, nats_server: NatsServer):
    js = nc.jetstream()
    pool = await make_pool(js, nats_server.url)
    expired, fresh = tid(), tid()
    await publish_task(js, pool, expired, extra_headers={h.TASK_DEADLINE: "2000-01-01T00:00:00Z"})
    await publish_task(js, pool, fresh, ttl=60)
    async with running_worker(pool.settings):
        await eventually(lambda: handlers.DONE[fresh] == 1, what="fresh task done")
        await eventually(lambda: _count(dead_letters(js, pool), 1), what="dead letter")
    [(_, record)] = await dead_letters(js, pool)
    assert record.task_id == expired
    assert record.reason is DeadLetterReason.EXPIRED
    assert expired not in handlers.ATTEMPT_TIMES


@pytest.mark.parametrize("handler", ["handle", "handle_sync"])
async def test_a_task_over_its_timeout_fails_with_timeout_error_and_is_retried(
    nc: NATS, nats_server: NatsServer, handler: str
):
    js = nc.jetstream()
    pool = await make_pool(
        js,
        nats_server.url,
        handler=f"tests.worker.handlers:{handler}",
        task_timeout_seconds=0.3,
        retry_max_attempts=2,
        retry_jitter="none",
    )
    task_id = tid()
    async with running_worker(pool.settings) as worker:
        await publish_task(js, pool, task_id, {"sleep": 1.0})
        await eventually(lambda: _count(dead_letters(js, pool), 1), what="dead letter")
        assert worker.counters.retried == 1
    [(_, record)] = await dead_letters(js, pool)
    assert record.error_type == "TimeoutError"
    assert record.reason is DeadLetterReason.MAX_ATTEMPTS
    assert "exceeded its timeout of 0.3s" in record.error_message


async def test_a_timeout_scope_inside_an_async_handler_fails_that_task_not_the_fetch_loop(
    nc: NATS, nats_server: NatsServer
):
    js = nc.jetstream()
    pool = await make_pool(js, nats_server.url, retry_max_attempts=2, retry_jitter="none")
    scoped, later = tid(), tid()
    async with running_worker(pool.settings) as worker:
        await publish_task(js, pool, scoped, {"inner_timeout": 0.1})
        await eventually(lambda: _count(dead_letters(js, pool), 1), what="dead letter")
        await publish_task(js, pool, later)
        await eventually(lambda: handlers.DONE[later] == 1, what="later task done")
        assert worker.consuming
    [(_, record)] = await dead_letters(js, pool)
    assert record.task_id == scoped
    assert record.error_type == "TimeoutError"
    assert record.reason is DeadLetterReason.MAX_ATTEMPTS


async def test_an_async_handlers_first_step_runs_in_a_task_of_its_own(
    nc: NATS, nats_server: NatsServer
):
    js = nc.jetstream()
    pool = await make_pool(js, nats_server.url)
    task_id = tid()
    async with running_worker(pool.settings):
        await publish_task(js, pool, task_id)
        await eventually(lambda: handlers.DONE[task_id] == 1, what="task done")
    owner = handlers.FIRST_STEP_TASKS[task_id]
    assert owner is not None
    assert owner.get_coro().__qualname__ == "Worker._process_one"  # type: ignore[union-attr]


async def test_a_batch_handler_settles_each_task_on_its_own(nc: NATS, nats_server: NatsServer):
    js = nc.jetstream()
    pool = await make_pool(
        js,
        nats_server.url,
        handler="tests.worker.handlers:handle_batch",
        concurrency=10,
        non_retryable=("ValueError",),
    )
    good = [tid() for _ in range(7)]
    bad = tid()
    for task_id in good:
        await publish_task(js, pool, task_id)
    await publish_task(js, pool, bad, {"raise": "ValueError"})
    before = len(handlers.BATCH_SIZES)
    async with running_worker(pool.settings):
        await eventually(lambda: all(handlers.DONE[i] == 1 for i in good), what="good done")
        await eventually(lambda: _count(dead_letters(js, pool), 1), what="bad dead-lettered")
    assert max(handlers.BATCH_SIZES[before:]) <= 5
    assert max(handlers.BATCH_SIZES[before:]) > 1
    assert [r.task_id for _, r in await dead_letters(js, pool)] == [bad]
    assert await stream_messages(js, pool) == 0


async def test_a_batch_waits_for_its_fill_timeout_to_collect_tasks_published_apart(
    nc: NATS, nats_server: NatsServer
) -> None:
    js = nc.jetstream()
    pool = await make_pool(
        js, nats_server.url, handler="tests.worker.handlers:fill_batch", concurrency=20
    )
    async with running_worker(pool.settings):
        first_at = time.monotonic()
        trickle = [tid() for _ in range(3)]
        for task_id in trickle:  # 100 ms apart: each arrives on its own
            await publish_task(js, pool, task_id)
            await asyncio.sleep(0.1)
        await eventually(lambda: any(ids == trickle for _, ids in handlers.FILLED))
        [(ran_at, _)] = [(t, ids) for t, ids in handlers.FILLED if ids == trickle]
        assert ran_at - first_at >= 0.45  # held for the fill timeout, run as one batch
        burst = [tid() for _ in range(25)]
        await asyncio.gather(*(publish_task(js, pool, i) for i in burst))
        await eventually(
            lambda: (
                sorted(i for _, ids in handlers.FILLED for i in ids if i in burst) == sorted(burst)
            ),
            what="the burst",
        )
    sizes = sorted(len(ids) for _, ids in handlers.FILLED if set(ids) <= set(burst))
    # full batches as soon as they are full, the rest after the timeout ([5, 10, 10] unless
    # the burst's first arrivals came alone)
    assert sum(sizes) == 25
    assert max(sizes) == 10
    assert await stream_messages(js, pool) == 0


async def test_republishing_a_task_id_inside_the_duplicate_window_is_dropped(
    nc: NATS, nats_server: NatsServer
):
    js = nc.jetstream()
    pool = await make_pool(js, nats_server.url, duplicate_window=60)
    task_id = tid()
    await publish_task(js, pool, task_id)
    await publish_task(js, pool, task_id)
    assert await stream_messages(js, pool) == 1
    async with running_worker(pool.settings) as worker:
        await eventually(lambda: handlers.DONE[task_id] == 1, what="task done")
        await publish_task(js, pool, task_id)  # after it ran: still inside the window
        await eventually(lambda: worker.counters.succeeded == 1, what="ack")
    assert await stream_messages(js, pool) == 0
    assert handlers.DONE[task_id] == 1


async def test_a_task_longer_than_the_ack_wait_is_kept_alive_by_heartbeats(
    nc: NATS, nats_server: NatsServer
):
    js = nc.jetstream()
    pool = await make_pool(
        js, nats_server.url, ack_wait=1.0, heartbeat_seconds=0.3, task_timeout_seconds=10
    )
    other = pool.settings.model_copy(update={"worker_id": "second"})
    task_id = tid()
    async with running_worker(pool.settings), running_worker(other):
        await publish_task(js, pool, task_id, {"sleep": 2.5})
        await eventually(lambda: handlers.DONE[task_id] == 1, what="long task done")
    # Without heartbeats the second worker would have got a redelivery after 1 s.
    assert len(handlers.ATTEMPT_TIMES[task_id]) == 1
    assert await stream_messages(js, pool) == 0


async def test_a_sync_handler_past_its_timeout_is_reported_as_a_lingering_thread_until_it_ends(
    nc: NATS, nats_server: NatsServer
):
    js = nc.jetstream()
    pool = await make_pool(
        js,
        nats_server.url,
        handler="tests.worker.handlers:handle_sync",
        task_timeout_seconds=0.2,
        retry_max_attempts=1,
    )
    async with running_worker(pool.settings) as worker:
        await publish_task(js, pool, tid(), {"sleep": 1.5})
        await eventually(lambda: worker.stats().lingering_threads == 1, within=5)
        await eventually(lambda: worker.stats().lingering_threads == 0, within=5)
