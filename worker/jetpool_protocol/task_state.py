"""A task's lifecycle as stored by id: the record workers and publishers write, and its keys.

Each pool has one JetStream KV bucket (:attr:`~jetpool_protocol.naming.PoolNames.task_state_bucket`)
whose entries expire after the pool's ``tracking.ttlSeconds``:

* ``state.<key>``: a :class:`TaskState`, rewritten at each step of the task's life;
* ``result.<key>``: a :class:`TaskResult` (the handler's return value or final error) when the
  pool keeps results;
* ``cancel.<key>``: a :class:`CancelRequest`; every worker watches these.

``<key>`` is the task id when it is a safe KV token, else its base64url form (:func:`id_key`).

Run counting lives here too (:func:`runs_before`): a JetStream delivery count includes
deliveries a worker handed back without running them, so the record says how many times the
handler really ran and how many deliveries there were.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue

STATE_PREFIX = "state"
RESULT_PREFIX = "result"
CANCEL_PREFIX = "cancel"
_SAFE_ID = re.compile(r"[A-Za-z0-9_-]{1,200}")
_ENCODED = "b64-"
"""Marks an encoded id; a safe id never starts with it (it is encoded too, to stay injective)."""
ERROR_LIMIT = 4096


class TaskPhase(StrEnum):
    SCHEDULED = "scheduled"
    """Published for later (``--delay``/``--at``); the server releases it at ``runAt``."""
    QUEUED = "queued"
    """In the task stream, waiting for a worker (also after a hand-back)."""
    RUNNING = "running"
    RETRYING = "retrying"
    """The handler failed; the task waits for its next attempt at ``nextAttemptAt``."""
    SUCCEEDED = "succeeded"
    DEAD_LETTERED = "dead_lettered"
    EXPIRED = "expired"
    """Dead-lettered because its TTL or deadline passed before it could run."""
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self in FINAL_PHASES


FINAL_PHASES = frozenset(
    {TaskPhase.SUCCEEDED, TaskPhase.DEAD_LETTERED, TaskPhase.EXPIRED, TaskPhase.CANCELLED}
)


class TaskError(BaseModel):
    model_config = ConfigDict(frozen=True)

    type: str
    message: str = Field(max_length=ERROR_LIMIT + 20)

    @classmethod
    def of(cls, error_type: str, message: str) -> TaskError:
        if len(message) > ERROR_LIMIT:
            message = message[:ERROR_LIMIT] + "...(truncated)"
        return cls(type=error_type, message=message)


class TaskState(BaseModel):
    """One task's latest known step (camelCase JSON, like the Kubernetes status)."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, alias_generator=None)

    id: str
    phase: TaskPhase
    since: datetime
    """When the task entered this phase."""
    runs: int = 0
    """Times the handler has been started for this task (a run cut short by a crash counts)."""
    deliveries: int = 0
    """JetStream deliveries this record accounts for (runs plus hand-backs)."""
    worker: str | None = None
    next_attempt_at: datetime | None = Field(None, alias="nextAttemptAt")
    run_at: datetime | None = Field(None, alias="runAt")
    """When a scheduled task is released to the workers."""
    reason: str | None = None
    """Why it ended this way: a dead-letter reason, ``cancelled by <who>``, a hand-back cause."""
    error: TaskError | None = None
    stream_sequence: int | None = Field(None, alias="streamSequence")
    has_result: bool = Field(False, alias="hasResult")

    def to_bytes(self) -> bytes:
        return self.model_dump_json(by_alias=True, exclude_none=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> TaskState:
        return cls.model_validate_json(data)


class TaskResult(BaseModel):
    """What a finished task left behind: its handler's return value, or its final error."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    ok: bool
    value: JsonValue = None
    error: TaskError | None = None
    omitted: str | None = None
    """Why ``value`` is missing although the task succeeded (too large, not JSON)."""

    def to_bytes(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> TaskResult:
        return cls.model_validate_json(data)


class CancelRequest(BaseModel):
    model_config = ConfigDict(frozen=True)

    at: datetime
    by: str = "jetpool"

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> CancelRequest:
        return cls.model_validate_json(data)


NO_VALUE_RESULT = b'{"ok":true}'
"""``TaskResult(ok=True).to_bytes()``: what a handler returning None leaves."""


def succeeded_state_bytes(
    task_id: str,
    since: datetime,
    runs: int,
    deliveries: int,
    worker_json: str,
    stream_sequence: int,
    has_result: bool,
) -> bytes:
    """The JSON of a succeeded :class:`TaskState`, written by hand: it is the one state
    every task writes, on the worker's hot path, where building and dumping the model costs
    several times more. ``worker_json``: the worker's name as a JSON string (encoded once).
    ``TaskState.from_bytes`` reads it back equal to the model's own."""
    quoted = f'"{task_id}"' if _SAFE_ID.fullmatch(task_id) else json.dumps(task_id)
    return (
        f'{{"id":{quoted},"phase":"succeeded","since":"{since.isoformat()}","runs":{runs},'
        f'"deliveries":{deliveries},"worker":{worker_json},"streamSequence":{stream_sequence},'
        f'"hasResult":{"true" if has_result else "false"}}}'
    ).encode()


def success_result(value: Any, max_bytes: int) -> TaskResult:
    """A handler's return value as stored: JSON, at most ``max_bytes``, else said why not."""
    if value is None:
        return TaskResult(ok=True)
    try:
        encoded = json.dumps(value, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        return TaskResult(ok=True, omitted=f"the return value is not JSON-serializable: {exc}")
    if len(encoded.encode()) > max_bytes:
        return TaskResult(
            ok=True,
            omitted=f"the return value is {len(encoded.encode())} bytes as JSON, "
            f"the pool keeps at most {max_bytes}",
        )
    return TaskResult(ok=True, value=json.loads(encoded))


def error_result(error_type: str, message: str) -> TaskResult:
    return TaskResult(ok=False, error=TaskError.of(error_type, message))


def id_key(task_id: str) -> str:
    """A task id as one KV key token: itself when safe, else ``b64-<base64url>``."""
    if _SAFE_ID.fullmatch(task_id) and not task_id.startswith(_ENCODED):
        return task_id
    return _ENCODED + base64.urlsafe_b64encode(task_id.encode()).decode().rstrip("=")


def key_id(key: str) -> str:
    """The task id behind :func:`id_key`'s token."""
    if not key.startswith(_ENCODED):
        return key
    body = key[len(_ENCODED) :]
    try:
        return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise ValueError(f"not a task key: {key!r}") from exc


def state_key(task_id: str) -> str:
    return f"{STATE_PREFIX}.{id_key(task_id)}"


def result_key(task_id: str) -> str:
    return f"{RESULT_PREFIX}.{id_key(task_id)}"


def cancel_key(task_id: str) -> str:
    return f"{CANCEL_PREFIX}.{id_key(task_id)}"


def runs_before(previous: TaskState | None, delivery: int, sequence: int) -> int:
    """How many times the handler already ran before delivery number ``delivery`` of the
    message at stream ``sequence``.

    Deliveries the record accounts for are runs or hand-backs; any other earlier delivery left
    no record (its worker was killed, or lost its connection before writing) and counts as a
    run: a handler may have run, and a task that kills its worker must still run out of
    attempts. Without a record of this very message (none, or one about another message with
    the same id, e.g. before a replay) every earlier delivery counts, which is all JetStream
    alone knows.
    """
    earlier = max(0, delivery - 1)
    if previous is None or previous.stream_sequence != sequence:
        return earlier
    return previous.runs + max(0, earlier - previous.deliveries)
