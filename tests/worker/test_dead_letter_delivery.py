"""A task that must be dead-lettered always ends in the dead-letter stream: whatever its size,
through a dead-letter outage, and even when its stream sequence was used before."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from nats.aio.client import Client as NATS

from e2e.testbed.nats_server import NatsServer
from jetpool_protocol import headers as h
from jetpool_protocol.dead_letter import (
    ERROR_MESSAGE_LIMIT,
    DeadLetterReason,
    DeadLetterRecord,
)
from jetpool_worker import consumer_loop
from jetpool_worker.dead_letter import fit_record, header_bytes
from tests.worker import handlers
from tests.worker.helpers import (
    dead_letters,
    eventually,
    make_pool,
    publish_task,
    running_worker,
    stream_messages,
)

NOW = datetime(2030, 1, 1, tzinfo=UTC)


def tid() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


def record(payload: bytes, message: str = "boom") -> DeadLetterRecord:
    return DeadLetterRecord(
        task_id="t",
        pool="p",
        namespace="ns",
        reason=DeadLetterReason.NON_RETRYABLE,
        error_type="ValueError",
        error_message=message,
        traceback="Traceback ...",
        attempts=1,
        original_subject="tasks.ns.p.x",
        original_stream="S",
        original_sequence=7,
        headers={"X-Custom": "kept"},
        payload=payload,
        first_failure_at=NOW,
        last_failure_at=NOW,
        worker="w",
    )


def wire_size(r: DeadLetterRecord) -> int:
    return len(r.model_dump_json().encode()) + header_bytes(r.publish_headers("S:7:1"))


def test_a_record_that_fits_is_published_unchanged():
    small = record(b"x" * 1000)
    assert fit_record(small, "S:7:1", 1_048_576) is small


@pytest.mark.parametrize("size", [800_000, 1_048_576, 5_000_000])
def test_a_record_over_max_payload_is_cut_to_fit_and_says_so(size: int):
    payload = bytes(range(256)) * (size // 256)
    cut = fit_record(record(payload), "S:7:1", 1_048_576)
    assert cut.payload_truncated
    assert wire_size(cut) <= 1_048_576
    assert payload.startswith(cut.payload)
    assert len(cut.payload) > 700_000  # cut to fit, not dropped
    assert (cut.error_message, cut.traceback, cut.headers) == (
        "boom",
        "Traceback ...",
        {"X-Custom": "kept"},
    )


def test_an_error_message_is_capped():
    capped = record(b"", message="e" * 1_000_000)
    assert len(capped.error_message) <= ERROR_MESSAGE_LIMIT + len("...(truncated)")
    assert capped.error_message.startswith("eeee")


def test_a_truncated_record_reads_back_with_its_flag_and_old_records_default_to_whole():
    cut = fit_record(record(b"y" * 2_000_000), "S:7:1", 1_048_576)
    assert DeadLetterRecord.model_validate_json(cut.model_dump_json()).payload_truncated
    legacy = record(b"z").model_dump(mode="json")
    del legacy["payload_truncated"]
    assert not DeadLetterRecord.model_validate(legacy).payload_truncated


@pytest.mark.nats
async def test_a_failing_task_too_big_to_dead_letter_whole_is_stored_with_its_payload_cut(
    nc: NATS, nats_server: NatsServer
):
    js = nc.jetstream()
    pool = await make_pool(js, nats_server.url, non_retryable=("ValueError",))
    task_id = tid()
    body = b'{"raise": "ValueError", "pad": "' + b"p" * 900_000 + b'"}'
    async with running_worker(pool.settings):
        await publish_task(js, pool, task_id, body)
        await eventually(lambda: _dead_lettered(js, pool), what="dead letter")
    [(_, stored)] = await dead_letters(js, pool)
    assert stored.payload_truncated
    assert body.startswith(stored.payload)
    assert stored.error_type == "ValueError"
    assert stored.traceback is not None
    assert await stream_messages(js, pool) == 0


@pytest.mark.nats
async def test_a_dead_letter_outage_keeps_the_task_in_flight_until_the_record_is_stored(
    nc: NATS, nats_server: NatsServer, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(consumer_loop, "DLQ_RETRY_INITIAL_SECONDS", 0.05)
    monkeypatch.setattr(consumer_loop, "DLQ_RETRY_MAX_SECONDS", 0.2)
    js = nc.jetstream()
    pool = await make_pool(
        js,
        nats_server.url,
        ack_wait=1.0,
        max_deliver=2,
        heartbeat_seconds=0.2,
        non_retryable=("ValueError",),
    )
    await js.delete_stream(pool.settings.dead_letter_stream)
    task_id = tid()
    async with running_worker(pool.settings) as worker:
        await publish_task(js, pool, task_id, {"raise": "ValueError"})
        # Outage for well over max_deliver x ack wait: a nak-and-wait would strand the task.
        started = time.monotonic()
        await eventually(
            lambda: worker.dead_letter_publish_failures >= 5 and time.monotonic() - started > 3,
            what="a long dead-letter outage",
        )
        await js.add_stream(
            name=pool.settings.dead_letter_stream,
            subjects=[f"{pool.settings.dead_letter_subject_prefix}.>"],
        )
        await eventually(lambda: _dead_lettered(js, pool), what="dead letter after the outage")
    [(_, stored)] = await dead_letters(js, pool)
    assert stored.task_id == task_id
    assert stored.attempts == 1
    assert stored.error_type == "ValueError"
    assert stored.traceback is not None
    assert len(handlers.ATTEMPT_TIMES[task_id]) == 1
    assert await stream_messages(js, pool) == 0


@pytest.mark.nats
async def test_stopping_during_a_dead_letter_outage_hands_the_task_back_at_once(
    nc: NATS, nats_server: NatsServer
):
    js = nc.jetstream()
    pool = await make_pool(
        js, nats_server.url, ack_wait=30.0, retry_max_seconds=10.0, non_retryable=("ValueError",)
    )
    await js.delete_stream(pool.settings.dead_letter_stream)
    task_id = tid()
    async with running_worker(pool.settings) as worker:
        await publish_task(js, pool, task_id, {"raise": "ValueError"})
        await eventually(lambda: worker.dead_letter_publish_failures >= 1, what="a failed publish")
        stopping = time.monotonic()
    assert time.monotonic() - stopping < pool.settings.shutdown_grace_seconds
    # Handed back within about a second: neither the 30 s ack wait nor a retry backoff.
    sub = await js.pull_subscribe_bind("workers", stream=pool.settings.stream)
    [again] = await sub.fetch(1, timeout=3.0)
    assert again.headers is not None
    assert again.headers[h.TASK_ID] == task_id
    await again.nak()


@pytest.mark.nats
async def test_the_dedup_id_is_the_one_the_operator_derives_from_the_stream_api(
    nc: NATS, nats_server: NatsServer
):
    js = nc.jetstream()
    pool = await make_pool(js, nats_server.url, non_retryable=("ValueError",))
    await publish_task(js, pool, tid(), {"raise": "ValueError"})
    stored = await js.get_msg(pool.settings.stream, 1)
    assert stored.time is not None
    async with running_worker(pool.settings):
        await eventually(lambda: _dead_lettered(js, pool), what="dead letter")
    [(hdrs, _)] = await dead_letters(js, pool)
    assert hdrs[h.MSG_ID] == DeadLetterRecord.dedup_id(pool.settings.stream, 1, stored.time)


@pytest.mark.nats
async def test_a_recreated_task_stream_reusing_a_sequence_is_still_dead_lettered(
    nc: NATS, nats_server: NatsServer
):
    js = nc.jetstream()
    pool = await make_pool(js, nats_server.url, non_retryable=("ValueError",))
    first, second = tid(), tid()
    async with running_worker(pool.settings):
        await publish_task(js, pool, first, {"raise": "ValueError"})
        await eventually(lambda: _dead_lettered(js, pool), what="first dead letter")
    config = (await js.stream_info(pool.settings.stream)).config
    consumer = (await js.consumer_info(pool.settings.stream, "workers")).config
    await js.delete_stream(pool.settings.stream)
    await js.add_stream(config)
    await js.add_consumer(pool.settings.stream, consumer)
    async with running_worker(pool.settings):
        await publish_task(js, pool, second, {"raise": "ValueError"})
        await eventually(lambda: _dead_lettered(js, pool, 2), what="second dead letter")
    records = [r for _, r in await dead_letters(js, pool)]
    assert [r.task_id for r in records] == [first, second]
    assert [r.original_sequence for r in records] == [1, 1]


async def _dead_lettered(js: Any, pool: Any, count: int = 1) -> bool:
    return len(await dead_letters(js, pool)) >= count
