"""NATS header names used by jetpool. Publishers set the ``TASK_*`` ones."""

from typing import Final

MSG_ID: Final = "Nats-Msg-Id"
"""Idempotency key: JetStream drops a duplicate with the same id inside the stream's window."""

TASK_ID: Final = "Jetpool-Task-Id"
TASK_CREATED: Final = "Jetpool-Created"
"""RFC 3339 timestamp set by the publisher; with the TTL it defines the task's expiry."""
TASK_TTL: Final = "Jetpool-Ttl"
"""Seconds after creation after which the task is dead-lettered as ``expired`` instead of run."""
TASK_DEADLINE: Final = "Jetpool-Deadline"
"""Absolute RFC 3339 expiry; wins over ``Jetpool-Ttl`` when both are present."""
CONTENT_TYPE: Final = "Content-Type"
TASK_SCHEMA: Final = "Jetpool-Schema"
"""Optional schema name/version the handler expects (checked when the handler declares one)."""
SIGNATURE: Final = "Jetpool-Signature"
KEY_ID: Final = "Jetpool-Key-Id"
"""Id of the keyring key that made ``Jetpool-Signature`` (covered by the signature)."""
ENCRYPTION: Final = "Jetpool-Encryption"
ENCRYPTION_KEY_ID: Final = "Jetpool-Encryption-Key-Id"
"""Id of the keyring key that encrypted the payload (signed, and bound as associated data)."""
TRACEPARENT: Final = "traceparent"
TRACESTATE: Final = "tracestate"

REPLAYED_FROM: Final = "Jetpool-Replayed-From"
"""Audit header on a task re-published from the dead-letter stream: ``<dlq-stream>:<seq>``."""
REPLAYED_AT: Final = "Jetpool-Replayed-At"
REPLAYED_BY: Final = "Jetpool-Replayed-By"

DLQ_REASON: Final = "Jetpool-Dlq-Reason"
DLQ_ERROR_TYPE: Final = "Jetpool-Dlq-Error-Type"
DLQ_POOL: Final = "Jetpool-Dlq-Pool"
