"""The dead-letter record: everything needed to understand and replay a failed task."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_serializer, field_validator

from jetpool_protocol import headers as h
from jetpool_protocol.naming import dead_letter_subject

TRACEBACK_LIMIT = 8192
"""Tracebacks are cut to their last bytes: the innermost frames say the most."""
ERROR_MESSAGE_LIMIT = 4096
"""Error messages are cut to their first characters: an exception's str() can be any size, and a
record too big for the server could never be stored."""


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class DeadLetterReason(StrEnum):
    INVALID = "invalid"
    EXPIRED = "expired"
    NON_RETRYABLE = "non_retryable"
    MAX_ATTEMPTS = "max_attempts"


class DeadLetterRecord(BaseModel):
    """JSON body of one message in a pool's dead-letter stream."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    version: int = 1
    task_id: str
    pool: str
    namespace: str
    reason: DeadLetterReason
    error_type: str
    error_message: str
    traceback: str | None = None
    attempts: int
    """Times the handler ran (a delivery handed back without running is not an attempt)."""
    deliveries: int | None = None
    """JetStream deliveries, hand-backs included (None in records of older workers)."""
    original_subject: str
    original_stream: str
    original_sequence: int
    headers: dict[str, str] = Field(default_factory=dict)
    payload: bytes
    payload_truncated: bool = False
    """True when the payload is only a prefix of the task's: the whole record would not fit
    the server's max_payload. Such a record cannot be replayed as is."""
    first_failure_at: datetime
    last_failure_at: datetime
    worker: str

    @field_validator("traceback")
    @classmethod
    def _bound_traceback(cls, value: str | None) -> str | None:
        if value is None or len(value) <= TRACEBACK_LIMIT:
            return value
        return "...(truncated)...\n" + value[-TRACEBACK_LIMIT:]

    @field_validator("error_message")
    @classmethod
    def _bound_error_message(cls, value: str) -> str:
        if len(value) <= ERROR_MESSAGE_LIMIT:
            return value
        return value[:ERROR_MESSAGE_LIMIT] + "...(truncated)"

    @field_validator("payload", mode="before")
    @classmethod
    def _decode_payload(cls, value: object) -> object:
        return base64.b64decode(value) if isinstance(value, str) else value

    @field_serializer("payload")
    def _encode_payload(self, value: bytes) -> str:
        return base64.b64encode(value).decode("ascii")

    def subject(self, prefix: str) -> str:
        """Where the record goes: per-subject counts give stats by reason and error type."""
        return dead_letter_subject(prefix, self.reason, self.error_type)

    @staticmethod
    def dedup_id(stream: str, sequence: int, published_at: datetime) -> str:
        """``<stream>:<seq>:<unix-microseconds of the task's publish time>``.

        The same for every delivery of one stored message, and different for a new message
        that reuses the sequence after its stream was re-created. Microseconds, truncated,
        because that is what the stream's message API (``get_msg().time``) gives: the worker
        (reply subject, nanoseconds) and the operator (stranded tasks) must agree.
        """
        micros = (published_at - _EPOCH) // timedelta(microseconds=1)
        return f"{stream}:{sequence}:{micros}"

    def publish_headers(self, dedup_id: str) -> dict[str, str]:
        """Headers of the record's message; ``dedup_id`` (:meth:`dedup_id`) makes a second
        publish of the same task's record a duplicate the DLQ stream drops."""
        return {
            h.MSG_ID: dedup_id,
            h.DLQ_REASON: str(self.reason),
            h.DLQ_ERROR_TYPE: self.error_type,
            h.DLQ_POOL: f"{self.namespace}/{self.pool}",
            h.CONTENT_TYPE: "application/json",
        }
