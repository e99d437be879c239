"""The trace context travels in NATS headers from the publisher to the worker's span, and the
spans of a publisher, a worker process and its handler reach a real collector as one trace."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from e2e.testbed.jaeger import Jaeger, Span
from e2e.testbed.nats_server import NatsServer
from tests.worker import handlers
from tests.worker.helpers import eventually, make_pool, publish_task, running_worker
from tests.worker.subprocess_worker import done_ids, kill, spawn_worker

pytestmark = pytest.mark.nats


@pytest.fixture(scope="module")
def spans() -> Iterator[InMemorySpanExporter]:
    """An SDK tracer provider recording finished spans (installed once per process)."""
    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter
    exporter.shutdown()


async def test_the_workers_span_continues_the_publishers_trace(
    nc: NATS, nats_server: NatsServer, spans: InMemorySpanExporter
) -> None:
    js = nc.jetstream()
    pool = await make_pool(js, nats_server.url)
    task_id = f"traced-{uuid.uuid4().hex[:8]}"
    tracer = trace.get_tracer("tests.publisher")
    with tracer.start_as_current_span("publish order") as publisher:
        await publish_task(js, pool, task_id)
    published = publisher.get_span_context()

    async with running_worker(pool.settings):
        await eventually(lambda: handlers.DONE[task_id] == 1)

    def worker_span() -> bool:
        return any(
            s.context.trace_id == published.trace_id and s.name != "publish order"
            for s in spans.get_finished_spans()
        )

    await eventually(worker_span)
    span = next(
        s
        for s in spans.get_finished_spans()
        if s.context.trace_id == published.trace_id and s.name != "publish order"
    )
    assert span.parent is not None
    assert span.parent.span_id == published.span_id
    assert span.kind is trace.SpanKind.CONSUMER


@pytest.fixture(scope="module")
def jaeger() -> Iterator[Jaeger]:
    collector = Jaeger().start()
    yield collector
    collector.close()


def otel_env(jaeger: Jaeger) -> dict[str, str]:
    """What a user sets: the collector's OTLP/HTTP endpoint (and a short export delay)."""
    return {"OTEL_EXPORTER_OTLP_ENDPOINT": jaeger.otlp_endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100"}


async def test_a_task_published_by_the_cli_is_one_trace_in_jaeger_down_to_the_handlers_span(
    nc: NATS, nats_server: NatsServer, jaeger: Jaeger, tmp_path: Path
) -> None:
    js = nc.jetstream()
    pool = await make_pool(js, nats_server.url, handler="tests.worker.handlers:traced")
    task_id = f"traced-{uuid.uuid4().hex[:8]}"
    subject = pool.subject("charge")
    cli = Path(sys.executable).parent / "jetpool"
    publisher_env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    publisher_env |= otel_env(jaeger) | {"OTEL_SERVICE_NAME": "orders-api"}
    published = await asyncio.create_subprocess_exec(
        *(str(cli), "publish", subject, "--data", "{}", "--id", task_id),
        *("--nats-url", nats_server.url),
        env=publisher_env,
        stderr=asyncio.subprocess.PIPE,
    )
    _, errors = await asyncio.wait_for(published.communicate(), 60)
    assert published.returncode == 0, errors.decode()

    done = tmp_path / "done"
    worker = spawn_worker(pool.settings, done, tmp_path / "worker.log", otel_env(jaeger))
    try:
        await eventually(lambda: task_id in done_ids(done), within=30, what="the task done")
    finally:
        kill(worker, signal.SIGTERM)  # a graceful stop flushes the last spans

    def whole_trace() -> list[Span]:
        traces = jaeger.trace_ids("orders-api")
        spans = jaeger.trace(traces[0]) if len(traces) == 1 else []
        return spans if len(spans) >= 3 else []

    await eventually(lambda: bool(whole_trace()), within=30, what="three spans in one trace")
    spans = whole_trace()
    by_name = {s.name: s for s in spans}
    assert set(by_name) == {f"create {subject}", "jetpool.task", "charge card"}, spans
    publisher, task, handler = (
        by_name[f"create {subject}"],
        by_name["jetpool.task"],
        by_name["charge card"],
    )
    assert (publisher.service, publisher.kind, publisher.parent_id) == (
        "orders-api",
        "producer",
        None,
    )
    assert (task.service, task.kind, task.parent_id) == (
        "jetpool-worker",
        "consumer",
        publisher.span_id,
    )
    assert task.tags["messaging.message.id"] == task_id
    assert (handler.service, handler.parent_id) == ("jetpool-worker", task.span_id)
