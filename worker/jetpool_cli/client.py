"""``jetpool.Client``: publish tasks to a pool and follow them by id.

The ``jetpool`` command is a thin layer over this class; programs use it directly::

    async with await Client.connect("nats://nats:4222", namespace="team-a", pool="orders") as c:
        task = await c.publish({"order": 42})
        print((await task.result(timeout=30)).value)

Every call speaks plain NATS: tasks are JetStream publishes on the pool's subjects, states and
results are entries of the pool's task-state KV bucket, cancellations are entries the workers
watch, and delayed or periodic tasks are nats-server message schedules
(:mod:`jetpool_cli.scheduling`). docs/tasks.md lists the headers for publishers in other
languages.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Self

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.js.client import JetStreamContext

from jetpool_cli import scheduling
from jetpool_cli.connection import ConnectOptions, connect
from jetpool_cli.errors import ClientError
from jetpool_cli.publishing import JSON_CONTENT_TYPE, OutgoingTask, TaskOptions, build_task
from jetpool_protocol import lanes
from jetpool_protocol.naming import KV_STREAM_PREFIX, PoolNames, nats_token
from jetpool_protocol.schedules import ScheduleError, ScheduleInfo, check_cron, check_every
from jetpool_protocol.task_state import (
    CancelRequest,
    TaskPhase,
    TaskResult,
    TaskState,
    cancel_key,
    result_key,
    state_key,
)

EXPECTED_LAST_SUBJECT_SEQUENCE = "Nats-Expected-Last-Subject-Sequence"
WRONG_LAST_SEQUENCE = 10071
RESULT_POLL_SECONDS = 0.2

log = logging.getLogger(__name__)


class CancelOutcome(StrEnum):
    CANCELLED = "cancelled"
    """A scheduled task taken off its schedule: it will never be released."""
    REQUESTED = "requested"
    """Queued or running: a queued task never runs (the worker that takes it settles it as
    cancelled); a running one's handler is told (an async one is cancelled, a sync one sees
    ``task.cancel_requested``) and it settles as cancelled."""
    ALREADY_FINISHED = "already_finished"
    UNKNOWN = "unknown_task"
    """No state is recorded under this id (never published through a tracking client, or
    its state expired); the cancellation still stops it if a worker takes it later."""


@dataclass(frozen=True, slots=True)
class Cancellation:
    outcome: CancelOutcome
    state: TaskState | None


@dataclass(frozen=True, slots=True)
class TaskHandle:
    """A published task: its id, and the way to ask about it."""

    id: str
    client: Client = field(repr=False)
    sequence: int | None = None
    """Stream sequence of the task (or of its schedule, for a delayed task)."""
    duplicate: bool = False
    """JetStream dropped this publish: a task with the same id is already in the stream."""

    async def status(self) -> TaskState | None:
        return await self.client.status(self.id)

    async def result(self, timeout: float | None = None) -> TaskResult:  # noqa: ASYNC109
        return await self.client.result(self.id, timeout=timeout)

    async def cancel(self) -> Cancellation:
        return await self.client.cancel(self.id)


class Client:
    """One pool's tasks, over one NATS connection (``Client.connect``, or wrap your own)."""

    def __init__(
        self,
        nc: NatsClient,
        *,
        namespace: str,
        pool: str,
        options: TaskOptions | None = None,
        request_timeout: float = 5.0,
        identity: str = "jetpool",
    ) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream(timeout=request_timeout)
        self.names = PoolNames(namespace, pool)
        self.options = options or TaskOptions()
        self.request_timeout = request_timeout
        self.identity = identity
        """Who cancels: recorded in the cancellation and the task's state."""
        self._owned: Any = None

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        namespace: str,
        pool: str,
        credentials_file: str | None = None,
        tls_ca_file: str | None = None,
        tls_cert_file: str | None = None,
        tls_key_file: str | None = None,
        options: TaskOptions | None = None,
    ) -> Client:
        connect_options = ConnectOptions(
            url=url,
            credentials_file=credentials_file,
            tls_ca_file=tls_ca_file,
            tls_cert_file=tls_cert_file,
            tls_key_file=tls_key_file,
        )
        context = connect(connect_options)
        nc = await context.__aenter__()
        client = cls(nc, namespace=namespace, pool=pool, options=options)
        client._owned = context
        return client

    async def close(self) -> None:
        if self._owned is not None:
            context, self._owned = self._owned, None
            await context.__aexit__(None, None, None)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ names

    @property
    def bucket(self) -> str:
        return self.names.task_state_bucket

    def default_subject(self, name: str = "task") -> str:
        """``tasks.<ns>.<pool>.<name>``: a subject of the pool's default subject space."""
        return self.names.default_subjects[0].removesuffix(">") + name

    def task_subject(
        self,
        subject: str | None = None,
        *,
        priority: str | None = None,
        ordered_key: str | None = None,
    ) -> str:
        """Where a task goes: ``subject``, or a priority level's subject
        (``tasks.<ns>.<pool>.<level>.task``), or an ordered key's (``...ordered.<key>``, run one
        at a time in publish order per key), or the default subject. docs/flow-control.md."""
        chosen = [
            name
            for name, v in (
                ("subject", subject),
                ("priority", priority),
                ("ordered_key", ordered_key),
            )
            if v is not None
        ]
        if len(chosen) > 1:
            raise ClientError(f"give one of subject, priority, ordered_key (got {chosen})")
        base = self.names.task_base
        if priority is not None:
            return lanes.level_subject(base, nats_token(priority), "task")
        if ordered_key is not None:
            return lanes.ordered_subject(base, nats_token(ordered_key))
        return subject or self.default_subject()

    def _kv_subject(self, key: str) -> str:
        return f"$KV.{self.bucket}.{key}"

    # ------------------------------------------------------------------ publishing

    def build(
        self,
        payload: Any,
        *,
        subject: str | None = None,
        task_id: str | None = None,
        headers: Mapping[str, str] | None = None,
        created_at: datetime | None = None,
        priority: str | None = None,
        ordered_key: str | None = None,
    ) -> OutgoingTask:
        """The task exactly as it goes on the wire (headers, signature, encryption).
        ``created_at`` (default now) starts its TTL: a delayed task's is its release time."""
        options = self.options
        if headers:
            options = dataclasses.replace(
                options, extra_headers={**options.extra_headers, **headers}
            )
        if isinstance(payload, bytes):
            body = payload
        else:
            if options.content_type != JSON_CONTENT_TYPE:
                raise ClientError("only bytes can be sent with a non-JSON content type")
            body = json.dumps(payload, separators=(",", ":")).encode()
        return build_task(
            self.task_subject(subject, priority=priority, ordered_key=ordered_key),
            body,
            task_id or uuid.uuid4().hex,
            created_at=created_at or datetime.now(UTC),
            options=options,
        )

    async def publish(
        self,
        payload: Any,
        *,
        subject: str | None = None,
        task_id: str | None = None,
        headers: Mapping[str, str] | None = None,
        delay: timedelta | float | None = None,
        at: datetime | None = None,
        track: bool = True,
        priority: str | None = None,
        ordered_key: str | None = None,
    ) -> TaskHandle:
        """Publish one task (JSON-encoded unless ``payload`` is bytes). ``delay``/``at``
        hold it back until then (a server-side schedule). ``track`` records it as queued
        (or scheduled) so its status reads back at once. ``priority`` (a level of the pool's
        ``spec.priorities``) or ``ordered_key`` (``spec.ordered``) pick its lane."""
        run_at = _run_at(delay, at)
        task = self.build(
            payload,
            subject=subject,
            task_id=task_id,
            headers=headers,
            created_at=run_at,
            priority=priority,
            ordered_key=ordered_key,
        )
        try:
            return await self.publish_built(task, at=run_at, track=track)
        except nats.js.errors.NoStreamResponseError as exc:
            if priority is None and ordered_key is None:
                raise
            lane = f"level {priority!r} in spec.priorities" if priority else "spec.ordered"
            raise ClientError(
                f"no stream takes {task.subject}: the pool has no {lane} (docs/flow-control.md)"
            ) from exc

    async def publish_built(
        self,
        task: OutgoingTask,
        *,
        delay: timedelta | float | None = None,
        at: datetime | None = None,
        track: bool = True,
        stream: str | None = None,
    ) -> TaskHandle:
        """``stream``: refuse a task whose subject another stream captures."""
        run_at = _run_at(delay, at)
        if run_at is not None:
            scheduled = await scheduling.publish_delayed(self, task, run_at)
            if track and not scheduled.duplicate:
                await self._record_first(task.task_id, TaskPhase.SCHEDULED, scheduled.seq, run_at)
            return TaskHandle(task.task_id, self, scheduled.seq, bool(scheduled.duplicate))
        ack = await self.js.publish(
            task.subject,
            task.payload,
            headers=dict(task.headers),
            timeout=self.request_timeout,
            stream=stream,
        )
        if track and not ack.duplicate:
            await self._record_first(task.task_id, TaskPhase.QUEUED, ack.seq, None)
        return TaskHandle(task.task_id, self, ack.seq, bool(ack.duplicate))

    async def publish_batch(
        self,
        payloads: Iterable[Any],
        *,
        subject: str | None = None,
        concurrency: int = 64,
        track: bool = True,
        priority: str | None = None,
    ) -> list[TaskHandle]:
        """Publish many tasks with up to ``concurrency`` acknowledgements outstanding; the
        handles come back in the order of ``payloads``. A failure cancels the rest and is
        raised (inside an ``ExceptionGroup``); tasks published before it stay published."""
        tasks = [self.build(p, subject=subject, priority=priority) for p in payloads]
        handles: list[TaskHandle | None] = [None] * len(tasks)
        gate = asyncio.Semaphore(max(1, concurrency))

        async def one(index: int, task: OutgoingTask) -> None:
            async with gate:
                handles[index] = await self.publish_built(task, track=track)

        async with asyncio.TaskGroup() as group:
            for index, task in enumerate(tasks):
                group.create_task(one(index, task))
        return [h for h in handles if h is not None]

    async def _record_first(
        self, task_id: str, phase: TaskPhase, sequence: int, run_at: datetime | None
    ) -> None:
        """The first state of a task, only if no worker wrote one already (a fast worker may
        finish the task before this write arrives)."""
        state = TaskState(
            id=task_id,
            phase=phase,
            since=datetime.now(UTC),
            stream_sequence=sequence,
            run_at=run_at,
        )
        try:
            await self.js.publish(
                self._kv_subject(state_key(task_id)),
                state.to_bytes(),
                headers={EXPECTED_LAST_SUBJECT_SEQUENCE: "0"},
                timeout=self.request_timeout,
            )
        except nats.js.errors.APIError as exc:
            if exc.err_code != WRONG_LAST_SEQUENCE:  # that one: a worker was faster
                log.warning("task %s is published; recording its state failed: %s", task_id, exc)
        except nats.js.errors.NoStreamResponseError:
            pass  # the pool tracks no task state (spec.tracking.enabled: false)
        except (TimeoutError, nats.errors.Error) as exc:
            # e.g. a producer user without publish rights on the bucket: the task itself is
            # stored, so this is not a failed publish (use track=False to skip the write)
            log.warning("task %s is published; recording its state failed: %s", task_id, exc)

    # ------------------------------------------------------------------ reading

    async def _get(self, key: str) -> bytes | None:
        try:
            msg = await self.js.get_last_msg(
                f"{KV_STREAM_PREFIX}{self.bucket}", self._kv_subject(key), direct=True
            )
        except nats.js.errors.NotFoundError:
            return None
        except nats.errors.NoRespondersError as exc:
            raise ClientError(
                f"the pool {self.names.namespace}/{self.names.pool} has no task-state bucket "
                f"{self.bucket!r} (spec.tracking.enabled: false, or not reconciled yet)"
            ) from exc
        return msg.data or None

    async def status(self, task_id: str) -> TaskState | None:
        """The task's latest recorded step, or None (unknown id, or its state expired)."""
        data = await self._get(state_key(task_id))
        return None if data is None else TaskState.from_bytes(data)

    async def result(self, task_id: str, *, timeout: float | None = None) -> TaskResult:  # noqa: ASYNC109
        """The finished task's result (its return value, or its final error). Waits up to
        ``timeout`` seconds for the task to finish; raises :class:`TimeoutError` if it has
        not (``timeout=None``: ask once), :class:`ClientError` if the pool keeps no
        results."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            data = await self._get(result_key(task_id))
            if data is not None:
                return TaskResult.from_bytes(data)
            state = await self.status(task_id)
            if state is not None and state.phase.final and not state.has_result:
                why = (
                    "it never ran"
                    if state.runs == 0 and state.phase is TaskPhase.CANCELLED
                    else "spec.tracking.results.enabled is false"
                )
                raise ClientError(
                    f"task {task_id} is {state.phase.value} and has no result ({why})"
                )
            if deadline is None or time.monotonic() >= deadline:
                phase = "unknown" if state is None else state.phase.value
                raise TimeoutError(f"task {task_id} has no result yet (it is {phase})")
            await asyncio.sleep(min(RESULT_POLL_SECONDS, max(0.0, deadline - time.monotonic())))

    # ------------------------------------------------------------------ schedules

    async def schedule(
        self,
        name: str,
        payload: Any = None,
        *,
        every: str | None = None,
        cron: str | None = None,
        time_zone: str | None = None,
        subject: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> int:
        """Create or replace the periodic schedule ``name`` (``every="30s"`` or a 6-field
        ``cron``); each firing is a task on ``subject`` (default ``tasks.<ns>.<pool>.<name>``)
        with id ``seq-<stream sequence>``. Returns the schedule's stream sequence."""
        if (every is None) == (cron is None):
            raise ClientError("give exactly one of every or cron")
        try:
            pattern = check_every(every) if every is not None else check_cron(cron or "")
        except ScheduleError as exc:
            raise ClientError(str(exc)) from exc
        return await scheduling.schedule_periodic(
            self,
            name,
            pattern,
            {} if payload is None else payload,
            subject=subject,
            time_zone=time_zone,
            headers=headers,
        )

    async def schedules(self) -> list[ScheduleInfo]:
        """Every schedule of the pool: periodic ones and delayed tasks not yet released."""
        return await scheduling.list_schedules(self)

    async def delete_schedule(self, name: str) -> bool:
        return await scheduling.delete_schedule(self, name)

    # ------------------------------------------------------------------ cancelling

    async def cancel(self, task_id: str) -> Cancellation:
        """Cancel a task: a queued or scheduled one never runs, a running one is told.
        Racing with its end, a task may still finish first (then ``ALREADY_FINISHED``).
        A finished task gets no cancellation, so a later task with its id is not hit."""
        state = await self.status(task_id)
        if state is not None and state.phase.final:
            return Cancellation(CancelOutcome.ALREADY_FINISHED, state)
        request = CancelRequest(at=datetime.now(UTC), by=self.identity)
        await self.js.publish(
            self._kv_subject(cancel_key(task_id)), request.to_bytes(), timeout=self.request_timeout
        )
        if (state is None or state.phase is TaskPhase.SCHEDULED) and (
            await scheduling.unschedule_task(self, task_id)
        ):
            cancelled = TaskState(
                id=task_id,
                phase=TaskPhase.CANCELLED,
                since=request.at,
                reason=f"cancelled by {request.by} before it ran",
                stream_sequence=None if state is None else state.stream_sequence,
                run_at=None if state is None else state.run_at,
            )
            await self.js.publish(
                self._kv_subject(state_key(task_id)),
                cancelled.to_bytes(),
                timeout=self.request_timeout,
            )
            return Cancellation(CancelOutcome.CANCELLED, cancelled)
        if state is None:
            return Cancellation(CancelOutcome.UNKNOWN, None)
        return Cancellation(CancelOutcome.REQUESTED, state)


def _run_at(delay: timedelta | float | None, at: datetime | None) -> datetime | None:
    if delay is not None and at is not None:
        raise ClientError("give a delay or a time, not both")
    if delay is not None:
        seconds = delay.total_seconds() if isinstance(delay, timedelta) else float(delay)
        if seconds < 0:
            raise ClientError("a delay must not be negative")
        return datetime.now(UTC) + timedelta(seconds=seconds)
    if at is not None:
        return at if at.tzinfo else at.replace(tzinfo=UTC)
    return None
