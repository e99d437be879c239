"""The trace context travels in NATS headers from the publisher to the worker's span."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from nats.aio.client import Client as NATS
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from e2e.testbed.nats_server import NatsServer
from tests.worker import handlers
from tests.worker.helpers import eventually, make_pool, publish_task, running_worker

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
