"""Names of the NATS resources that belong to one WorkerPool.

Stream and consumer names may not contain ``.``, ``*``, ``>`` or whitespace, while
Kubernetes names may contain ``.``; every derived name goes through :func:`nats_token`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

CONTROL_BUCKET = "jetpool-control"
"""KV bucket holding one control-state entry per pool (key: :meth:`PoolNames.control_key`)."""

STATS_SUBJECT_PREFIX = "jetpool.stats"
"""Workers publish :class:`~jetpool_protocol.stats.WorkerStats` on ``<prefix>.<ns>.<pool>``."""

DLQ_SUBJECT_PREFIX = "jetpool.dlq"
"""Dead letters go to ``<prefix>.<ns>.<pool>.<reason>.<error_type>``."""

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def nats_token(value: str) -> str:
    """Map any string to a single subject token / stream-name-safe string."""
    cleaned = _UNSAFE.sub("_", value)
    return cleaned or "_"


@dataclass(frozen=True, slots=True)
class PoolNames:
    """Default NATS names for a pool; the WorkerPool spec may override stream/consumer/DLQ."""

    namespace: str
    pool: str

    @property
    def stream(self) -> str:
        return nats_token(f"jetpool-{self.namespace}-{self.pool}")

    @property
    def consumer(self) -> str:
        return "workers"

    @property
    def dead_letter_stream(self) -> str:
        return f"{self.stream}-dlq"

    @property
    def default_subjects(self) -> list[str]:
        return [f"tasks.{nats_token(self.namespace)}.{nats_token(self.pool)}.>"]

    @property
    def dead_letter_subject_prefix(self) -> str:
        return f"{DLQ_SUBJECT_PREFIX}.{nats_token(self.namespace)}.{nats_token(self.pool)}"

    @property
    def stats_subject(self) -> str:
        return f"{STATS_SUBJECT_PREFIX}.{nats_token(self.namespace)}.{nats_token(self.pool)}"

    @property
    def control_key(self) -> str:
        return f"{nats_token(self.namespace)}.{nats_token(self.pool)}"


def dead_letter_subject(prefix: str, reason: str, error_type: str) -> str:
    """Subject of one dead letter: per-subject counts give stats by reason and error type."""
    return f"{prefix}.{nats_token(reason)}.{nats_token(error_type)}"
