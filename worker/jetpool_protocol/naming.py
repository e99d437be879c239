"""Names of the NATS resources that belong to one WorkerPool.

Stream and consumer names may not contain ``.``, ``*``, ``>`` or whitespace, while
Kubernetes names may contain ``.``; every derived name goes through :func:`nats_token`.

Default names are injective over valid (namespace, pool) pairs, so two pools never share a
stream, subject space, stats subject or control key. The argument: a namespace is a DNS-1123
label (``[a-z0-9-]``), a pool a DNS-1123 subdomain (``[a-z0-9.-]``, no ``..``, no leading or
trailing ``.``/``-``). :func:`nats_token` maps only ``.`` to ``_``, a character neither name can
hold, so it is injective on both; in the stream name ``jetpool-<ns>_<pool>-tasks`` the first
``_`` ends the namespace, every task stream ends in ``-tasks`` and every dead-letter stream in
``-tasks-dlq``, and ``__`` (which no token can contain) marks the hashed form of names that
would exceed JetStream's 255 characters. The inbox prefix ``_INBOX_<ns>_<pool>`` decodes the
same way (the first ``_`` after ``_INBOX_`` ends the namespace).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

CONTROL_BUCKET = "jetpool-control"
"""KV bucket holding one control-state entry per pool (key: :meth:`PoolNames.control_key`)."""

STATS_SUBJECT_PREFIX = "jetpool.stats"
"""Workers publish :class:`~jetpool_protocol.stats.WorkerStats` on ``<prefix>.<ns>.<pool>``."""

DLQ_SUBJECT_PREFIX = "jetpool.dlq"
"""Dead letters go to ``<prefix>.<ns>.<pool>.<reason>.<error_type>``."""

SCHEDULE_SUBJECT_PREFIX = "jetpool.schedules"
"""Delayed and periodic tasks wait as server-side message schedules on
``<prefix>.<ns>.<pool>.<name>``, a subject of the pool's task stream that no consumer reads."""

RATE_LIMIT_SUBJECT_PREFIX = "jetpool.ratelimit"
"""A rate-limited pool counts its task starts per window on ``<prefix>.<ns>.<pool>.<window>``
(counter subjects of the pool's ``<stream>-rate`` stream)."""

KV_STREAM_PREFIX = "KV_"
TASK_STATE_SUFFIX = "-state"
RATE_LIMIT_SUFFIX = "-rate"
KEY_LEASE_SUFFIX = "-leases"

INBOX_ROOT = "_INBOX"
"""nats-py's default inbox prefix; a pool's workers use ``<root>_<ns>_<pool>`` instead."""

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")

MAX_STREAM_NAME = 255
"""nats-server: 'stream name is too long, maximum allowed is 255'."""
STREAM_PREFIX = "jetpool-"
STREAM_SUFFIX = "-tasks"
DLQ_SUFFIX = "-dlq"
_HASH_CHARS = 32
"""128 bits of SHA-256 for names too long to spell out."""


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
        """``jetpool-<ns>_<pool>-tasks``; pairs too long for JetStream keep a prefix plus
        ``__<hash>``. The fixed ``-tasks`` ending keeps ``<stream>-dlq`` from ever being
        another pool's task stream (a pool may be called ``x-dlq``)."""
        full = f"{STREAM_PREFIX}{nats_token(self.namespace)}_{nats_token(self.pool)}"
        if len(full) + len(STREAM_SUFFIX) + len(DLQ_SUFFIX) <= MAX_STREAM_NAME:
            return f"{full}{STREAM_SUFFIX}"
        digest = hashlib.sha256(f"{self.namespace}/{self.pool}".encode()).hexdigest()
        keep = MAX_STREAM_NAME - len(DLQ_SUFFIX) - len(STREAM_SUFFIX) - 2 - _HASH_CHARS
        return f"{full[:keep]}__{digest[:_HASH_CHARS]}{STREAM_SUFFIX}"

    @property
    def legacy_stream(self) -> str:
        """The default of earlier jetpool versions (``jetpool-<ns>-<pool>``, not injective:
        ``a-b``/``c`` and ``a``/``b-c`` shared it); kept for pools whose status records it."""
        return nats_token(f"jetpool-{self.namespace}-{self.pool}")

    @property
    def consumer(self) -> str:
        return "workers"

    @property
    def dead_letter_stream(self) -> str:
        return f"{self.stream}{DLQ_SUFFIX}"

    @property
    def task_state_bucket(self) -> str:
        """KV bucket of the pool's task states and results: ``<stream>-state``, hashed like
        the stream when ``KV_<bucket>`` would pass JetStream's 255 characters."""
        return self._beside_stream(TASK_STATE_SUFFIX, len(KV_STREAM_PREFIX))

    @property
    def rate_limit_stream(self) -> str:
        """Counter stream of the pool's rate limit: ``<stream>-rate`` (hashed likewise)."""
        return self._beside_stream(RATE_LIMIT_SUFFIX)

    def _beside_stream(self, suffix: str, prefix_length: int = 0) -> str:
        name = f"{self.stream}{suffix}"
        if prefix_length + len(name) <= MAX_STREAM_NAME:
            return name
        digest = hashlib.sha256(f"{self.namespace}/{self.pool}".encode()).hexdigest()
        return f"{STREAM_PREFIX}_{digest[:_HASH_CHARS]}{STREAM_SUFFIX}{suffix}"

    @property
    def key_lease_bucket(self) -> str:
        """KV bucket of the keys' running-task leases: ``<stream>-leases`` (hashed likewise)."""
        return self._beside_stream(KEY_LEASE_SUFFIX, len(KV_STREAM_PREFIX))

    @property
    def rate_limit_subject_prefix(self) -> str:
        return f"{RATE_LIMIT_SUBJECT_PREFIX}.{nats_token(self.namespace)}.{nats_token(self.pool)}"

    @property
    def schedule_subject_prefix(self) -> str:
        return f"{SCHEDULE_SUBJECT_PREFIX}.{nats_token(self.namespace)}.{nats_token(self.pool)}"

    @property
    def subject_space(self) -> str:
        """Every task subject of the namespace's pools starts with this (``tasks.<ns>.``)."""
        return f"tasks.{nats_token(self.namespace)}."

    @property
    def task_base(self) -> str:
        """``tasks.<ns>.<pool>``: the pool's default subject space without its ``.>``."""
        return f"tasks.{nats_token(self.namespace)}.{nats_token(self.pool)}"

    @property
    def default_subjects(self) -> list[str]:
        return [f"{self.task_base}.>"]

    @property
    def dead_letter_subject_prefix(self) -> str:
        return f"{DLQ_SUBJECT_PREFIX}.{nats_token(self.namespace)}.{nats_token(self.pool)}"

    @property
    def stats_subject(self) -> str:
        return f"{STATS_SUBJECT_PREFIX}.{nats_token(self.namespace)}.{nats_token(self.pool)}"

    @property
    def control_key(self) -> str:
        return f"{nats_token(self.namespace)}.{nats_token(self.pool)}"

    @property
    def inbox_prefix(self) -> str:
        """``_INBOX_<ns>_<pool>``: the workers' inboxes (replies, pulled tasks, KV watch
        deliveries) are ``<prefix>.<id>``, so a per-pool user may subscribe to ``<prefix>.>``
        only. One subject token (no ``.``, ``*``, ``>``), so ``<prefix>.>`` matches no other
        pool's inboxes and no default ``_INBOX.`` inbox; at most 324 characters (63 + 253 +
        8), far below nats-server's 4096-byte protocol line."""
        return f"{INBOX_ROOT}_{nats_token(self.namespace)}_{nats_token(self.pool)}"


def dead_letter_subject(prefix: str, reason: str, error_type: str) -> str:
    """Subject of one dead letter: per-subject counts give stats by reason and error type."""
    return f"{prefix}.{nats_token(reason)}.{nats_token(error_type)}"
