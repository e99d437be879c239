"""Publishing tasks: envelope headers, sealing, and bounded-concurrency JetStream publishes.

Building a task is pure (:func:`build_task`); :func:`publish_tasks` is the only I/O. Every task
carries ``Nats-Msg-Id`` = task id, so JetStream drops a re-publish inside the stream's duplicate
window and says so in the PubAck (``duplicate``), which is what the report counts.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
)
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime

import nats.errors
import nats.js.errors
from nats.js.client import JetStreamContext
from opentelemetry import trace

from jetpool_cli.errors import ClientError, CliError, describe
from jetpool_protocol.envelope import task_headers
from jetpool_protocol.keyring import Keyring
from jetpool_protocol.security import seal
from jetpool_protocol.telemetry import tracing_enabled

log = logging.getLogger(__name__)
_tracer = trace.get_tracer("jetpool_cli")

JSON_CONTENT_TYPE = "application/json"
MAX_REPORTED_ERRORS = 5


@dataclass(frozen=True, slots=True)
class TaskOptions:
    """How every task of one publish run is dressed: TTL, content type, extra headers, keys."""

    ttl_seconds: float | None = None
    content_type: str | None = JSON_CONTENT_TYPE
    extra_headers: Mapping[str, str] = field(default_factory=dict)
    signing_keys: Keyring | None = None
    """Signs with its current key (``Jetpool-Key-Id`` names it)."""
    encryption_keys: Keyring | None = None


@dataclass(frozen=True, slots=True)
class OutgoingTask:
    task_id: str
    subject: str
    payload: bytes
    headers: dict[str, str]


def is_json_content_type(content_type: str | None) -> bool:
    return bool(content_type) and str(content_type).split(";")[0].strip() == JSON_CONTENT_TYPE


def check_json(payload: bytes, what: str) -> None:
    """Fail before publishing anything a worker would dead-letter as ``invalid``."""
    try:
        json.loads(payload)
    except ValueError as exc:
        raise CliError(
            f"{what} is not valid JSON ({exc}); pass --content-type for other payloads",
            exit_code=2,
        ) from exc


def creation_span(subject: str, task_id: str) -> AbstractContextManager[object]:
    if not tracing_enabled():
        return nullcontext()
    return _tracer.start_as_current_span(
        f"create {subject}",
        kind=trace.SpanKind.PRODUCER,
        attributes={
            "messaging.system": "nats",
            "messaging.operation.type": "create",
            "messaging.destination.name": subject,
            "messaging.message.id": task_id,
        },
    )


def build_task(
    subject: str, payload: bytes, task_id: str, *, created_at: datetime, options: TaskOptions
) -> OutgoingTask:
    """Envelope headers, then encrypt-and-sign; the result is exactly what goes on the wire.

    When the process traces, the task is created inside a producer span (the messaging
    conventions' ``create`` operation), whose context the headers carry to the worker's span.
    """
    with creation_span(subject, task_id):
        headers = task_headers(
            task_id=task_id,
            created_at=created_at,
            ttl_seconds=options.ttl_seconds,
            content_type=options.content_type,
            extra=options.extra_headers,
        )
    sealed, sealed_headers = seal(
        payload,
        headers,
        subject=subject,
        signing_keys=options.signing_keys,
        encryption_keys=options.encryption_keys,
    )
    return OutgoingTask(task_id=task_id, subject=subject, payload=sealed, headers=sealed_headers)


def task_ids(
    count: int | None,
    *,
    task_id: str | None = None,
    id_prefix: str | None = None,
    new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
) -> Iterator[str]:
    """Ids for ``count`` tasks (endless when ``None``).

    ``--id-prefix P`` gives ``P-1, P-2, ...``: deterministic, so re-running the same command is
    deduplicated by JetStream instead of publishing twice. Without one, ids are random.
    """
    if task_id is not None:
        if count is not None and count != 1:
            raise CliError("--id names exactly one task; use --id-prefix for many", exit_code=2)
        yield task_id
        return
    index = 0
    while count is None or index < count:
        index += 1
        yield f"{id_prefix}-{index}" if id_prefix is not None else new_id()


@dataclass
class PublishReport:
    published: int = 0
    duplicates: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    elapsed_seconds: float = 0.0
    aborted: str | None = None
    """Why publishing stopped early (a failure every further task would hit too)."""

    @property
    def attempted(self) -> int:
        return self.published + self.duplicates + self.failed

    def as_dict(self) -> dict[str, object]:
        return {
            "published": self.published,
            "duplicates": self.duplicates,
            "failed": self.failed,
            "errors": self.errors,
            "aborted": self.aborted,
            "elapsed_seconds": round(self.elapsed_seconds, 3),
        }


class _AbortError(Exception):
    """A failure that every further publish would repeat (no stream, wrong stream)."""


async def _aiter(
    tasks: Iterable[OutgoingTask] | AsyncIterable[OutgoingTask],
) -> AsyncIterator[OutgoingTask]:
    if isinstance(tasks, AsyncIterable):
        async for task in tasks:
            yield task
    else:
        for task in tasks:
            yield task


async def publish_tasks(
    js: JetStreamContext,
    tasks: Iterable[OutgoingTask] | AsyncIterable[OutgoingTask],
    *,
    concurrency: int = 64,
    expected_stream: str | None = None,
    request_timeout: float = 5.0,
    on_progress: Callable[[int], None] | None = None,
    send: Callable[[OutgoingTask], Awaitable[bool]] | None = None,
) -> PublishReport:
    """Publish with at most ``concurrency`` PubAcks outstanding; never raises for one task.

    ``send`` publishes one task and says whether it was a duplicate (the client's, which
    also records the task's first state or schedules it); default: a plain JetStream publish.

    A missing stream or a stream mismatch stops the run (``report.aborted``): every further task
    would fail the same way. Other failures (timeouts) are counted and the run goes on.
    """
    if concurrency < 1:
        raise CliError("--concurrency must be at least 1", exit_code=2)
    report = PublishReport()
    started = time.monotonic()
    source = _aiter(tasks)
    source_lock = asyncio.Lock()

    async def next_task() -> OutgoingTask | None:
        async with source_lock:
            try:
                return await anext(source, None)
            except CliError as exc:  # e.g. a stdin line that is not JSON
                raise _AbortError(exc.message) from exc

    async def plain(task: OutgoingTask) -> bool:
        ack = await js.publish(
            task.subject,
            task.payload,
            timeout=request_timeout,
            stream=expected_stream,
            headers=dict(task.headers),
        )
        return bool(ack.duplicate)

    publish = send or plain

    async def one(task: OutgoingTask) -> None:
        try:
            duplicate = await publish(task)
        except ClientError as exc:
            raise _AbortError(exc.message) from exc
        except nats.js.errors.NoStreamResponseError as exc:
            raise _AbortError(f"no JetStream stream captures subject {task.subject!r}") from exc
        except nats.js.errors.APIError as exc:
            if exc.err_code == 10060:  # expected stream does not match
                raise _AbortError(
                    f"subject {task.subject!r} is not in stream {expected_stream!r}"
                ) from exc
            _failed(task, exc)
            return
        except (TimeoutError, nats.errors.Error) as exc:
            _failed(task, exc)
            return
        if duplicate:
            report.duplicates += 1
        else:
            report.published += 1

    def _failed(task: OutgoingTask, exc: BaseException) -> None:
        report.failed += 1
        log.debug("publish of %s failed: %r", task.task_id, exc)
        if len(report.errors) < MAX_REPORTED_ERRORS:
            report.errors.append(f"{task.task_id}: {describe(exc)}")

    async def worker() -> None:
        while (task := await next_task()) is not None:
            await one(task)
            if on_progress is not None:
                on_progress(report.attempted)

    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(concurrency):
                group.create_task(worker())
    except* _AbortError as abort:
        report.aborted = str(abort.exceptions[0])
    report.elapsed_seconds = time.monotonic() - started
    return report
