"""Moving a task that cannot succeed to the pool's dead-letter stream.

Order matters: the record is published with JetStream (and its PubAck awaited) BEFORE the task
is terminated, and the publish carries ``Nats-Msg-Id = <stream>:<seq>:<publish time>``
(``DeadLetterRecord.dedup_id``). A crash between the two steps redelivers the task; the second
dead-letter publish is then dropped by the dead-letter stream's duplicate window, so a task is
dead-lettered at most once. The publish time keeps a re-created stream's reused sequence
numbers from being taken for duplicates (which would drop the new task's record).

``first_failure_at``: a redelivered message cannot carry new headers, so the worker remembers
the first failure of each stream sequence it saw fail (bounded, in memory). When another
worker (or an earlier process) saw the first failure, the task's publish time is used: the
earliest moment the first failure could have happened.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from jetpool_protocol import headers as h
from jetpool_protocol.dead_letter import DeadLetterReason, DeadLetterRecord
from jetpool_protocol.worker_settings import WorkerSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RawTask:
    """What the worker knows about a delivered message, valid or not."""

    subject: str
    stream: str
    sequence: int
    payload: bytes
    headers: Mapping[str, str]
    attempt: int
    published_at: datetime

    @property
    def task_id(self) -> str:
        """Same rule as ``parse_task``, usable when the message failed validation."""
        return self.headers.get(h.TASK_ID) or self.headers.get(h.MSG_ID) or f"seq-{self.sequence}"

    @property
    def dedup_id(self) -> str:
        return DeadLetterRecord.dedup_id(self.stream, self.sequence, self.published_at)


class FirstFailures:
    """Bounded memory of when each stream sequence first failed on this worker."""

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._seen: OrderedDict[int, datetime] = OrderedDict()

    def record(self, sequence: int, at: datetime) -> datetime:
        """Remember ``at`` unless an earlier failure is known; return the first failure time."""
        first = self._seen.get(sequence)
        if first is None:
            self._seen[sequence] = first = at
            if len(self._seen) > self.capacity:
                self._seen.popitem(last=False)
        return first

    def first(self, sequence: int, fallback: datetime) -> datetime:
        return self._seen.get(sequence, fallback)

    def forget(self, sequence: int) -> None:
        self._seen.pop(sequence, None)


def build_record(
    raw: RawTask,
    *,
    settings: WorkerSettings,
    worker: str,
    reason: DeadLetterReason,
    error_type: str,
    error_message: str,
    traceback: str | None,
    first_failure_at: datetime,
    last_failure_at: datetime,
    runs: int | None = None,
) -> DeadLetterRecord:
    """``runs``: the handler's runs, when known (else every delivery counts as one)."""
    return DeadLetterRecord(
        task_id=raw.task_id,
        pool=settings.pool_name,
        namespace=settings.pool_namespace,
        reason=reason,
        error_type=error_type,
        error_message=error_message,
        traceback=traceback,
        attempts=raw.attempt if runs is None else runs,
        deliveries=raw.attempt,
        original_subject=raw.subject,
        original_stream=raw.stream,
        original_sequence=raw.sequence,
        headers=dict(raw.headers),
        payload=raw.payload,
        first_failure_at=min(first_failure_at, last_failure_at),
        last_failure_at=last_failure_at,
        worker=worker,
    )


class JetStreamPublisher(Protocol):
    async def publish(
        self,
        subject: str,
        payload: bytes = b"",
        timeout: float | None = None,  # noqa: ASYNC109 - mirrors nats-py's signature
        stream: str | None = None,
        headers: dict[str, Any] | None = None,
    ) -> Any: ...


HEADER_MARGIN_BYTES = 256
"""Room kept for the ``NATS/1.0`` line, separators and what the client adds to the headers."""


def header_bytes(headers: Mapping[str, str]) -> int:
    return HEADER_MARGIN_BYTES + sum(
        len(k.encode()) + len(v.encode()) + 4 for k, v in headers.items()
    )


def fit_record(record: DeadLetterRecord, dedup_id: str, max_payload: int) -> DeadLetterRecord:
    """PURE: ``record``, or a copy whose payload is cut so the message fits ``max_payload``.

    The base64 payload makes a record a third bigger than its task: without this, a failing
    task near the server's limit could never be dead-lettered. The cut keeps every field but
    the payload's tail, and says so in ``payload_truncated``.
    """
    overhead = header_bytes(record.publish_headers(dedup_id))
    if len(record.model_dump_json().encode()) + overhead <= max_payload:
        return record
    empty = record.model_copy(update={"payload": b"", "payload_truncated": True})
    room = max_payload - overhead - len(empty.model_dump_json().encode())
    keep = max(0, room) // 4 * 3  # base64: 4 characters per 3 bytes
    return record.model_copy(update={"payload": record.payload[:keep], "payload_truncated": True})


async def publish_record(
    js: JetStreamPublisher,
    settings: WorkerSettings,
    record: DeadLetterRecord,
    dedup_id: str,
    *,
    max_payload: int | None = None,
) -> DeadLetterRecord:
    """Publish and wait for the dead-letter stream's PubAck; raises if it was not stored.

    With ``max_payload`` (the server's), an oversized record is cut to fit first; returns the
    record as published.
    """
    if max_payload is not None:
        record = fit_record(record, dedup_id, max_payload)
        if record.payload_truncated:
            log.warning(
                "dead-letter record of task %s is over the server's max_payload of %d bytes; "
                "storing it with its payload cut to %d bytes",
                record.task_id,
                max_payload,
                len(record.payload),
            )
    await js.publish(
        record.subject(settings.dead_letter_subject_prefix),
        record.model_dump_json().encode(),
        timeout=5.0,
        stream=settings.dead_letter_stream,
        headers=record.publish_headers(dedup_id),
    )
    return record
