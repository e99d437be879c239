"""The per-task fast paths keep the slow paths' behaviour: eager starts, reply parsing, tallies."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
from typing import Any

import pytest
from nats.aio.msg import Msg
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.exposition import generate_latest

from jetpool_protocol.envelope import Task
from jetpool_worker.consumer_loop import delivery_info
from jetpool_worker.eager import start_eagerly
from jetpool_worker.execution import call_handler
from jetpool_worker.handlers import Handler
from jetpool_worker.metrics import DURATION_BUCKETS, Metrics

TASK = Task(id="t", subject="s", payload=b"", headers={})
marker: contextvars.ContextVar[str] = contextvars.ContextVar("marker", default="unset")


async def test_a_coroutine_that_never_waits_runs_to_the_end_without_a_task():
    ran: list[str] = []

    async def quick() -> None:
        ran.append("done")

    assert start_eagerly(quick()) is None
    assert ran == ["done"]


async def test_a_coroutine_that_waits_continues_in_a_task_keeping_its_context():
    seen: list[str] = []
    gate = asyncio.Event()

    async def slow() -> None:
        marker.set("inside")
        await gate.wait()
        seen.append(marker.get())

    task = start_eagerly(slow())
    assert task is not None
    assert not task.done()
    assert marker.get() == "unset"  # the first step did not leak into the caller's context
    gate.set()
    await asyncio.wait_for(task, 2)
    assert seen == ["inside"]


async def test_cancelling_the_continuation_cancels_the_coroutine_where_it_waits():
    cancelled = asyncio.Event()

    async def forever() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    task = start_eagerly(forever())
    assert task is not None
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cancelled.is_set()


@pytest.mark.parametrize("is_async", [True, False], ids=["async", "sync"])
async def test_a_handler_timeout_after_an_eager_start_cancels_the_handler_not_the_caller(
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

    task = start_eagerly(process())
    assert task is not None
    await asyncio.wait_for(release.wait(), 2)  # the caller (this test) was not cancelled
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
    assert delivery_info(msg) == (
        meta.stream,
        meta.sequence.stream,
        meta.num_delivered,
        meta.timestamp,
    )


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
