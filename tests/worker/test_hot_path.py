"""The per-task fast paths keep the slow paths' behaviour: resumed first steps, reply parsing,
tallies, and the handler call's edge cases."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from nats.aio.msg import Msg
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.exposition import generate_latest

from jetpool_protocol.envelope import Task
from jetpool_worker.consumer_loop import delivery_info
from jetpool_worker.eager import resume
from jetpool_worker.execution import call_handler
from jetpool_worker.handlers import Handler
from jetpool_worker.metrics import DURATION_BUCKETS, Metrics

TASK = Task(id="t", subject="s", payload=b"", headers={})
marker: contextvars.ContextVar[str] = contextvars.ContextVar("marker", default="unset")


async def test_resume_finishes_a_coroutine_whose_first_step_already_ran_keeping_its_context():
    seen: list[str] = []
    gate = asyncio.Event()

    async def slow() -> str:
        marker.set("inside")
        await gate.wait()
        seen.append(marker.get())
        return "result"

    async def owner() -> str:
        coro = slow()
        yielded = coro.send(None)
        return await resume(coro, yielded)

    task = asyncio.create_task(owner())
    await asyncio.sleep(0)
    assert not task.done()
    gate.set()
    assert await asyncio.wait_for(task, 2) == "result"
    assert seen == ["inside"]
    assert marker.get() == "unset"


async def test_cancelling_a_resumed_coroutine_cancels_it_where_it_waits():
    cancelled = asyncio.Event()

    async def forever() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def owner() -> None:
        coro = forever()
        await resume(coro, coro.send(None))

    task = asyncio.create_task(owner())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cancelled.is_set()


@pytest.mark.parametrize("is_async", [True, False], ids=["async", "sync"])
async def test_a_handler_timeout_cancels_the_handler_not_the_caller(
    is_async: bool,
):
    outcomes: list[Any] = []
    executor = concurrent.futures.ThreadPoolExecutor(1)
    release = asyncio.Event()

    async def slow_async(task: Task) -> None:
        await asyncio.sleep(5)

    def slow_sync(task: Task) -> None:
        import time

        time.sleep(0.3)

    handler = Handler.wrap(slow_async if is_async else slow_sync)

    async def process() -> None:
        outcomes.append(await call_handler(handler, TASK, timeout_seconds=0.05, executor=executor))
        release.set()

    task = asyncio.create_task(process())
    await asyncio.wait_for(release.wait(), 2)  # the caller (this test) was not cancelled
    await task
    executor.shutdown(wait=True)
    assert isinstance(outcomes[0].error, TimeoutError)
    assert "exceeded its timeout" in str(outcomes[0].error)


async def test_a_handler_that_returns_at_once_succeeds_with_its_result():
    async def quick(task: Task) -> str:
        return task.id

    outcome = await call_handler(
        Handler.wrap(quick),
        TASK,
        timeout_seconds=1,
        executor=concurrent.futures.ThreadPoolExecutor(1),
    )
    assert outcome.ok
    assert outcome.result == "t"


async def test_a_sync_handler_returning_an_awaitable_has_it_awaited_before_success():
    ran: list[str] = []

    async def work(task: Task) -> str:
        await asyncio.sleep(0)
        ran.append(task.id)
        return "done"

    def wrapper(task: Task) -> Any:  # a decorator that lost the coroutine marker
        return work(task)

    handler = Handler.wrap(wrapper)
    assert not handler.is_async
    outcome = await call_handler(
        handler, TASK, timeout_seconds=1, executor=concurrent.futures.ThreadPoolExecutor(1)
    )
    assert outcome.ok
    assert outcome.result == "done"
    assert ran == ["t"]


async def test_the_awaitable_of_a_sync_handler_is_bound_by_the_task_timeout():
    async def stuck(task: Task) -> None:
        await asyncio.sleep(5)

    def wrapper(task: Task) -> Any:
        return stuck(task)

    outcome = await call_handler(
        Handler.wrap(wrapper),
        TASK,
        timeout_seconds=0.05,
        executor=concurrent.futures.ThreadPoolExecutor(1),
    )
    assert isinstance(outcome.error, TimeoutError)
    assert outcome.lingering is None


async def test_a_failure_in_the_awaitable_of_a_sync_handler_fails_the_task():
    async def broken(task: Task) -> None:
        raise ValueError("inner")

    def wrapper(task: Task) -> Any:
        return broken(task)

    outcome = await call_handler(
        Handler.wrap(wrapper),
        TASK,
        timeout_seconds=1,
        executor=concurrent.futures.ThreadPoolExecutor(1),
    )
    assert isinstance(outcome.error, ValueError)


@pytest.mark.parametrize("waits_first", [False, True], ids=["at-once", "after-a-wait"])
async def test_a_cancelled_error_raised_by_a_handler_is_a_task_failure_not_a_stop(
    waits_first: bool,
):
    async def leaky(task: Task) -> None:
        if waits_first:
            await asyncio.sleep(0)
        raise asyncio.CancelledError("a library's cancel scope leaked")

    outcome = await call_handler(
        Handler.wrap(leaky),
        TASK,
        timeout_seconds=1,
        executor=concurrent.futures.ThreadPoolExecutor(1),
    )
    assert isinstance(outcome.error, asyncio.CancelledError)
    assert outcome.traceback is not None


async def test_cancelling_the_task_running_a_handler_still_cancels_it():
    started = asyncio.Event()

    async def forever(task: Task) -> None:
        started.set()
        await asyncio.Event().wait()

    call = asyncio.create_task(
        call_handler(
            Handler.wrap(forever),
            TASK,
            timeout_seconds=10,
            executor=concurrent.futures.ThreadPoolExecutor(1),
        )
    )
    await asyncio.wait_for(started.wait(), 2)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call


@pytest.mark.parametrize(
    "reply",
    [
        "$JS.ACK.ORDERS.workers.3.1042.77.1700000000123456789.5",
        "$JS.ACK._.ACCHASH.ORDERS.workers.3.1042.77.1700000000123456789.5.rnd",
        "$JS.ACK.hub.ACCHASH.ORDERS.workers.1.9.9.1700000000000000000.0.rnd",
    ],
    ids=["v1", "v2-no-domain", "v2-domain"],
)
def test_delivery_info_reads_the_reply_subject_as_nats_py_metadata_does(reply: str):
    msg = Msg(_client=None, subject="tasks.x", reply=reply)  # type: ignore[arg-type]
    meta = msg.metadata
    stream, sequence, delivered, published_at = delivery_info(msg)
    assert (stream, sequence, delivered) == (
        meta.stream,
        meta.sequence.stream,
        meta.num_delivered,
    )
    # nats-py rounds a float; the worker truncates exactly, as the stream API (get_msg) does.
    assert abs(published_at - meta.timestamp) <= timedelta(microseconds=1)
    tokens = reply.split(".")
    nanos = int(tokens[7] if len(tokens) == 9 else tokens[9])
    assert published_at == datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=nanos // 1000)


def test_delivery_info_of_a_core_message_raises_like_nats_py():
    msg = Msg(_client=None, subject="tasks.x", reply="_INBOX.abc")  # type: ignore[arg-type]
    with pytest.raises(Exception, match="JetStream"):
        delivery_info(msg)


def test_the_task_tally_exposes_the_histogram_prometheus_client_would():
    durations = [0.0005, 0.001, 0.003, 0.2, 2.0, 1000.0]
    metrics = Metrics("p", "ns", "w")
    reference = CollectorRegistry()
    histogram = Histogram(
        "jetpool_task_duration_seconds",
        "Handler run time.",
        ["pool", "namespace", "worker"],
        registry=reference,
        buckets=DURATION_BUCKETS,
    ).labels(pool="p", namespace="ns", worker="w")
    for d in durations:
        metrics.tally.observe(d, ok=d < 1)
        histogram.observe(d)

    def series(text: bytes) -> set[str]:
        return {
            line
            for line in text.decode().splitlines()
            if line.startswith("jetpool_task_duration_seconds_")
            and not line.startswith("jetpool_task_duration_seconds_created")
        }

    assert series(metrics.render()) == series(generate_latest(reference))
    body = metrics.render().decode()
    assert 'jetpool_tasks_processed_total{namespace="ns",pool="p",worker="w"} 6.0' in body
    assert 'jetpool_tasks_succeeded_total{namespace="ns",pool="p",worker="w"} 4.0' in body
