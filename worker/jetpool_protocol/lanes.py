"""Lanes: the consumers a pool with priorities or ordered keys splits its tasks over.

A plain pool has one consumer (``workers``) over ``tasks.<ns>.<pool>.>``. A pool with
``spec.priorities`` or ``spec.ordered`` is *laned*: its subject space is cut into
non-overlapping pieces, one durable consumer each (JetStream refuses overlapping filters on a
WorkQueue stream), and every worker pulls from all of them (``jetpool_worker.lanes``):

* ``tasks.<ns>.<pool>.<name>`` (one token): the default level, consumer ``<consumer>``;
* ``tasks.<ns>.<pool>.<level>.>``: priority level ``level``, consumer ``<consumer>-<level>``
  (the default level's own subjects go to ``<consumer>`` too);
* ``tasks.<ns>.<pool>.ordered.<key>``: ordered tasks. The stream maps the key onto one of P
  partitions (``subject_transform`` with ``{{partition(P,1)}}``, FNV-1a of the key, the same for
  every publisher) and stores ``...ordered.<p>.<key>``; partition ``p`` has consumer
  ``<consumer>-ordered-<p>`` with ``max_ack_pending: 1``, so its tasks run one at a time, in
  stream order, across the pool.

Shared by the operator (plans the consumers), the worker (pulls them) and the client
(publishes on them): one home for the layout.
"""

from __future__ import annotations

from dataclasses import dataclass

ORDERED_TOKEN = "ordered"
"""The subject token under which ordered tasks are published; no level may be called so."""

LANE_SEPARATOR = ":"
"""``JETPOOL_LANES`` entries are ``<consumer>:<weight>:<label>``."""


@dataclass(frozen=True, slots=True)
class Lane:
    """One consumer a worker pulls from, with its share of freed slots under contention."""

    consumer: str
    weight: int
    label: str
    """The level's name, or ``ordered`` (metrics and logs)."""
    single: bool = False
    """At most one task in flight pool-wide (an ordered partition)."""

    def encode(self) -> str:
        kind = "1" if self.single else "0"
        return LANE_SEPARATOR.join((self.consumer, str(self.weight), self.label, kind))

    @classmethod
    def decode(cls, text: str) -> Lane:
        """Raises ``ValueError`` for anything but ``<consumer>:<weight>:<label>:<0|1>``."""
        parts = text.split(LANE_SEPARATOR)
        if len(parts) != 4 or not parts[0] or not parts[2] or parts[3] not in ("0", "1"):
            raise ValueError(f"lane {text!r} is not <consumer>:<weight>:<label>:<0|1>")
        weight = int(parts[1])
        if weight < 1:
            raise ValueError(f"lane {text!r}: weight must be at least 1")
        return cls(parts[0], weight, parts[2], parts[3] == "1")


def level_consumer(consumer: str, level: str) -> str:
    return f"{consumer}-{level}"


def ordered_consumer(consumer: str, partition: int) -> str:
    return f"{consumer}-{ORDERED_TOKEN}-{partition}"


def level_subject_space(base: str, level: str) -> str:
    """``base`` is ``tasks.<ns>.<pool>`` (no trailing dot)."""
    return f"{base}.{level}.>"


def level_subject(base: str, level: str, name: str) -> str:
    return f"{base}.{level}.{name}"


def ordered_subject(base: str, key_token: str) -> str:
    """What a publisher uses; the stream stores it as :func:`ordered_stored_subject`."""
    return f"{base}.{ORDERED_TOKEN}.{key_token}"


def ordered_publish_space(base: str) -> str:
    return f"{base}.{ORDERED_TOKEN}.*"


def ordered_partition_filter(base: str, partition: int) -> str:
    return f"{base}.{ORDERED_TOKEN}.{partition}.*"


def ordered_transform(base: str, partitions: int) -> tuple[str, str]:
    """The stream's ``subject_transform`` (source, destination)."""
    return (
        ordered_publish_space(base),
        f"{base}.{ORDERED_TOKEN}.{{{{partition({partitions},1)}}}}.{{{{wildcard(1)}}}}",
    )


def encode_lanes(lanes: tuple[Lane, ...]) -> tuple[str, ...]:
    return tuple(lane.encode() for lane in lanes)


def decode_lanes(entries: tuple[str, ...]) -> tuple[Lane, ...]:
    return tuple(Lane.decode(entry) for entry in entries)


def published_subject(stored: str, base: str) -> str:
    """The subject an ordered task was published on, from the one the stream stored it under
    (``<base>.ordered.<p>.<key>`` → ``<base>.ordered.<key>``): what its signature covers and
    what a replay from the dead-letter queue publishes again. Any other subject (e.g.
    ``<base>.high.ordered.2024.report``) comes back unchanged."""
    prefix = f"{base}.{ORDERED_TOKEN}."
    if not stored.startswith(prefix):
        return stored
    partition, _, key = stored[len(prefix) :].partition(".")
    if not partition.isdigit() or not key or "." in key:
        return stored
    return f"{prefix}{key}"
