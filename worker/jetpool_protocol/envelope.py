"""The task envelope: what a published message means to a worker.

A task is a JetStream message whose payload is opaque bytes (JSON by convention) and whose
headers carry identity, expiry and tracing. :func:`parse_task` turns a raw message into a
:class:`Task` or raises :class:`InvalidTask` with a reason fit for a dead-letter record.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from opentelemetry import propagate

from jetpool_protocol import headers as h


class CancelFlag:
    """Raised (by the worker's event loop) when the task is cancelled while it runs; read by
    the handler, sync or async. Cheaper than a ``threading.Event``: one per task."""

    __slots__ = ("_set",)

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set


class InvalidTask(ValueError):
    """The message can never be run as a task; it goes to the dead-letter stream as ``invalid``."""


class ExpiredTask(Exception):
    """The task outlived its TTL or deadline; it goes to the dead-letter stream as ``expired``."""


@dataclass(frozen=True, slots=True)
class Task:
    """One task as a handler sees it."""

    id: str
    subject: str
    payload: bytes
    headers: Mapping[str, str]
    attempt: int = 1
    created_at: datetime | None = None
    deadline: datetime | None = None
    stream_sequence: int = 0
    cancellation: CancelFlag | None = field(default=None, repr=False, compare=False)
    """Set when the task is cancelled while it runs (pools that track task state)."""
    _json: Any = field(default=None, repr=False, compare=False)

    @property
    def cancel_requested(self) -> bool:
        """True once ``jetpool task cancel`` reached this run: a sync handler checks it
        between steps and stops (raising ``TaskCancelled``); an async one is cancelled."""
        return self.cancellation is not None and self.cancellation.is_set()

    def json(self) -> Any:
        """The payload decoded as JSON (cached); raises :class:`InvalidTask` if it is not."""
        if self._json is None:
            try:
                object.__setattr__(self, "_json", json.loads(self.payload))
            except ValueError as exc:
                raise InvalidTask(f"payload is not valid JSON: {exc}") from exc
            except RecursionError as exc:  # hostile nesting must not escape as a crash
                raise InvalidTask("payload is not valid JSON: nested too deeply") from exc
        return self._json


def parse_time(value: str) -> datetime:
    """Parse an RFC 3339 timestamp; naive values are taken as UTC."""
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidTask(f"bad timestamp {value!r}: {exc}") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def format_time(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def task_deadline(
    headers: Mapping[str, str], default_ttl_seconds: float | None, published_at: datetime
) -> datetime | None:
    """Absolute expiry of a task: explicit deadline, else created (or published) + TTL."""
    if h.TASK_DEADLINE in headers:
        return parse_time(headers[h.TASK_DEADLINE])
    created = parse_time(headers[h.TASK_CREATED]) if h.TASK_CREATED in headers else published_at
    ttl: float | None = default_ttl_seconds
    if h.TASK_TTL in headers:
        try:
            ttl = float(headers[h.TASK_TTL])
        except ValueError as exc:
            raise InvalidTask(f"bad {h.TASK_TTL} header {headers[h.TASK_TTL]!r}") from exc
        if not math.isfinite(ttl) or ttl <= 0:
            raise InvalidTask(f"{h.TASK_TTL} must be a positive number, got {ttl}")
    if ttl is None:
        return None
    try:
        return created + timedelta(seconds=ttl)
    except OverflowError as exc:  # a TTL of 1e12 s, or a created time near year 9999
        raise InvalidTask(f"deadline out of range: created {created}, TTL {ttl:g}s") from exc


def parse_task(
    *,
    subject: str,
    payload: bytes,
    headers: Mapping[str, str] | None,
    stream_sequence: int,
    attempt: int,
    published_at: datetime,
    now: datetime,
    max_payload_bytes: int,
    default_ttl_seconds: float | None,
    cancellation: CancelFlag | None = None,
) -> Task:
    """Validate a raw message into a :class:`Task`.

    Raises :class:`InvalidTask` for oversize payloads, bad headers or a JSON content type whose
    payload is not JSON, and :class:`ExpiredTask` when the task's deadline has passed.
    """
    hdrs = dict(headers or {})
    if len(payload) > max_payload_bytes:
        raise InvalidTask(f"payload is {len(payload)} bytes, limit is {max_payload_bytes}")
    deadline = task_deadline(hdrs, default_ttl_seconds, published_at)
    created = parse_time(hdrs[h.TASK_CREATED]) if h.TASK_CREATED in hdrs else None
    task = Task(
        id=hdrs.get(h.TASK_ID) or hdrs.get(h.MSG_ID) or f"seq-{stream_sequence}",
        subject=subject,
        payload=payload,
        headers=hdrs,
        attempt=attempt,
        created_at=created,
        deadline=deadline,
        stream_sequence=stream_sequence,
        cancellation=cancellation,
    )
    if hdrs.get(h.CONTENT_TYPE, "").startswith("application/json"):
        task.json()
    if deadline is not None and now >= deadline:
        raise ExpiredTask(f"deadline {format_time(deadline)} passed at {format_time(now)}")
    return task


def task_headers(
    *,
    task_id: str,
    created_at: datetime,
    ttl_seconds: float | None = None,
    content_type: str | None = "application/json",
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Headers a publisher sets; ``Nats-Msg-Id`` = task id makes re-publishing idempotent.

    The current OpenTelemetry context (if the publisher traces) is injected as ``traceparent``
    / ``tracestate``, so the worker's span joins the publisher's trace.
    """
    out = {h.MSG_ID: task_id, h.TASK_ID: task_id, h.TASK_CREATED: format_time(created_at)}
    propagate.inject(out)
    if ttl_seconds is not None:
        out[h.TASK_TTL] = f"{ttl_seconds:g}"
    if content_type:
        out[h.CONTENT_TYPE] = content_type
    out.update(extra or {})
    return out
