"""Test plumbing for worker tests: a pool's NATS resources, settings, an in-process worker."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from nats.aio.client import Client as NATS
from nats.js import api
from nats.js.client import JetStreamContext

from jetpool import Client, TaskPhase
from jetpool_operator.adapters.nats import ensure_plan
from jetpool_operator.api.v1alpha1 import WorkerPoolSpec
from jetpool_operator.core.children import PoolRef, worker_settings
from jetpool_operator.core.nats_resources import MAX_DELIVER_MARGIN, plan
from jetpool_protocol import headers as h
from jetpool_protocol.dead_letter import DeadLetterRecord
from jetpool_protocol.envelope import task_headers
from jetpool_protocol.worker_settings import LogFormat, WorkerSettings
from jetpool_worker.consumer_loop import Worker


@dataclass
class Pool:
    settings: WorkerSettings
    subject_prefix: str

    def subject(self, leaf: str = "work") -> str:
        return f"{self.subject_prefix}.{leaf}"


async def make_pool(
    js: JetStreamContext,
    nats_url: str,
    *,
    ack_wait: float = 5.0,
    max_deliver: int | None = None,
    duplicate_window: float = 120.0,
    replicas: int = 1,
    **overrides: Any,
) -> Pool:
    """Stream (WorkQueue), durable pull consumer and DLQ stream, as the operator would make them."""
    token = uuid.uuid4().hex[:10]
    stream = f"T{token}"
    prefix = f"tasks.{token}"
    dlq_prefix = f"jetpool.dlq.test.{token}"
    await js.add_stream(
        api.StreamConfig(
            name=stream,
            subjects=[f"{prefix}.>"],
            retention=api.RetentionPolicy.WORK_QUEUE,
            duplicate_window=duplicate_window,
            num_replicas=replicas,
        )
    )
    await js.add_stream(name=f"{stream}-dlq", subjects=[f"{dlq_prefix}.>"], num_replicas=replicas)
    fields: dict[str, Any] = {
        "pool_name": token,
        "pool_namespace": "test",
        "worker_id": f"w-{token}",
        "handler": "tests.worker.handlers:handle",
        "nats_url": nats_url,
        "stream": stream,
        "consumer": "workers",
        "dead_letter_stream": f"{stream}-dlq",
        "dead_letter_subject_prefix": dlq_prefix,
        "control_key": f"test.{token}",
        "stats_subject": f"jetpool.stats.test.{token}",
        "metrics_port": 0,
        "log_format": "text",
        "concurrency": 4,
        "retry_initial_seconds": 0.2,
        "retry_max_seconds": 1.0,
        "retry_max_attempts": 3,
        "ack_wait_seconds": ack_wait,
        "task_timeout_seconds": 5.0,
        "shutdown_grace_seconds": 5.0,
    }
    fields.update(overrides)
    settings = WorkerSettings.model_validate(fields)
    await js.add_consumer(
        stream,
        api.ConsumerConfig(
            durable_name="workers",
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=ack_wait,
            max_deliver=max_deliver or settings.retry_max_attempts + MAX_DELIVER_MARGIN,
            max_ack_pending=1000,
        ),
    )
    return Pool(settings=settings, subject_prefix=prefix)


async def publish_task(
    js: JetStreamContext,
    pool: Pool,
    task_id: str,
    body: dict[str, Any] | bytes | None = None,
    *,
    extra_headers: dict[str, str] | None = None,
    ttl: float | None = None,
) -> None:
    payload = body if isinstance(body, bytes) else json.dumps(body or {}).encode()
    hdrs = task_headers(task_id=task_id, created_at=datetime.now(UTC), ttl_seconds=ttl)
    hdrs.update(extra_headers or {})
    await js.publish(pool.subject(), payload, headers=hdrs)


async def eventually(
    check: Callable[[], Awaitable[bool]] | Callable[[], bool],
    within: float = 10.0,
    interval: float = 0.05,
    what: str = "condition",
) -> None:
    """Poll ``check`` until it is true; fail with ``what`` after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(interval)


async def dead_letters(
    js: JetStreamContext, pool: Pool
) -> list[tuple[dict[str, str], DeadLetterRecord]]:
    info = await js.stream_info(pool.settings.dead_letter_stream)
    out = []
    if info.state.messages == 0:
        return out
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        with contextlib.suppress(Exception):
            msg = await js.get_msg(pool.settings.dead_letter_stream, seq)
            out.append((dict(msg.headers or {}), DeadLetterRecord.model_validate_json(msg.data)))
    return out


async def dead_letter_ids(js: JetStreamContext, pool: Pool) -> list[str]:
    return [r.task_id for _, r in await dead_letters(js, pool)]


async def stream_messages(js: JetStreamContext, pool: Pool) -> int:
    return int((await js.stream_info(pool.settings.stream)).state.messages)


@contextlib.asynccontextmanager
async def running_worker(settings: WorkerSettings, **kwargs: Any) -> AsyncIterator[Worker]:
    """An in-process worker on the test's event loop; stopped gracefully on exit."""
    worker = Worker(settings, **kwargs)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        await eventually(
            lambda: worker.consuming or task.done(), within=10, what="worker to consume"
        )
        if task.done():
            task.result()
        yield worker
    finally:
        stop.set()
        await asyncio.wait_for(task, settings.shutdown_grace_seconds + 10)


@contextlib.asynccontextmanager
async def running_workers(
    settings: WorkerSettings, count: int, first: int = 0
) -> AsyncIterator[list[Worker]]:
    """``count`` in-process workers (ids ``w<first>``...), stopped gracefully on exit."""
    async with contextlib.AsyncExitStack() as stack:
        workers = []
        for i in range(first, first + count):
            one = settings.model_copy(update={"worker_id": f"w{i}"})
            workers.append(await stack.enter_async_context(running_worker(one)))
        yield workers


@dataclass
class TrackedPool:
    namespace: str
    name: str
    settings: WorkerSettings
    client: Client


async def make_tracked_pool(
    nc: NATS,
    url: str,
    handler: str = "tests.worker.handlers:lifecycle",
    settings: dict[str, Any] | None = None,
    **spec: Any,
) -> TrackedPool:
    """A pool whose stream, consumer, dead-letter stream, task-state bucket and schedules are
    made by the operator's own plan, with the worker settings the operator would render."""
    namespace, name = "lifecycle", f"p{uuid.uuid4().hex[:8]}"
    body = {
        "image": "unused",
        "handler": handler,
        "nats": {"url": url},
        "retry": {"maxAttempts": 2, "backoff": {"initialSeconds": 0.1, "maxSeconds": 0.2}},
        "tracking": {"results": {"enabled": True}},
        **spec,
    }
    parsed = WorkerPoolSpec.model_validate(body)
    await ensure_plan(nc, plan(namespace, name, parsed))
    settings = worker_settings(PoolRef(name, namespace, uid=""), parsed).model_copy(
        update={
            "nats_url": url,
            "metrics_port": 0,
            "log_format": LogFormat.TEXT,
            "nats_credentials_file": None,
            "worker_id": f"w-{name}",
            "shutdown_grace_seconds": 5.0,
            **(settings or {}),
        }
    )
    return TrackedPool(namespace, name, settings, Client(nc, namespace=namespace, pool=name))


async def every_task_succeeded(pool: TrackedPool, ids: list[str]) -> bool:
    """Whether each task's state (read by id) says it succeeded."""
    states = await asyncio.gather(*(pool.client.status(i) for i in ids))
    return all(s is not None and s.phase is TaskPhase.SUCCEEDED for s in states)


def header(msg_headers: dict[str, str], name: str) -> str:
    return msg_headers[name]


__all__ = [
    "Pool",
    "TrackedPool",
    "dead_letters",
    "eventually",
    "every_task_succeeded",
    "h",
    "make_pool",
    "make_tracked_pool",
    "publish_task",
    "running_worker",
    "running_workers",
]
