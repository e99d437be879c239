"""The lanes of a pool with priorities or ordered keys: stream subjects, the stream's partition
transform and one consumer per level and ordered partition. Pure.

The subject layout and the consumer names are the protocol's (:mod:`jetpool_protocol.lanes`,
shared with the worker and the client); this module applies them to a spec. A plain pool has
no layout (:func:`layout` returns None) and keeps its one consumer over ``tasks.<ns>.<pool>.>``.

A laned pool's stream captures only the subjects some lane reads (JetStream refuses
overlapping filters on a WorkQueue stream, so every subject belongs to exactly one consumer):

* ``<base>.*``: one-token task names, the default level (consumer ``<consumer>``);
* ``<base>.<level>.>`` for every other level (consumer ``<consumer>-<level>``), and for the
  default level too (also read by ``<consumer>``);
* ``<base>.ordered.*``, stored as ``<base>.ordered.<p>.<key>`` by the stream's transform, read
  by consumer ``<consumer>-ordered-<p>`` with at most one task in flight.

A publish anywhere else under ``<base>`` (``<base>.a.b`` with ``a`` no level) finds no stream:
the publisher gets "no responders" instead of a task nobody would ever read.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from jetpool_operator.api.v1alpha1 import WorkerPoolSpec
from jetpool_protocol.lanes import (
    ORDERED_TOKEN,
    Lane,
    level_consumer,
    level_subject_space,
    ordered_consumer,
    ordered_partition_filter,
    ordered_publish_space,
    ordered_transform,
)
from jetpool_protocol.naming import PoolNames

DEFAULT_LABEL = "default"
"""The label of a laned pool's default lane when it has no priorities (ordered keys only)."""
ORDERED_LABEL = ORDERED_TOKEN
"""The label of every ordered partition's lane (status and metrics sum them)."""


@dataclass(frozen=True, slots=True)
class LaneConsumer:
    """One lane: the consumer the workers pull, and the stream subjects it reads."""

    lane: Lane
    filter_subjects: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.lane.consumer


@dataclass(frozen=True, slots=True)
class Layout:
    stream_subjects: tuple[str, ...]
    transform: tuple[str, str] | None
    """The stream's ``subject_transform`` (source, destination); None without ordered keys."""
    lanes: tuple[LaneConsumer, ...]
    """In the workers' order: the levels highest first, then the ordered partitions. The
    default level's consumer is the pool's ``nats.consumer``."""

    @property
    def worker_lanes(self) -> tuple[Lane, ...]:
        return tuple(lc.lane for lc in self.lanes)


def base_subject(namespace: str, pool: str) -> str:
    """``tasks.<ns>.<pool>``: the pool's default subject space without its ``.>``."""
    return PoolNames(namespace, pool).task_base


def layout(namespace: str, pool: str, consumer: str, spec: WorkerPoolSpec) -> Layout | None:
    """The lanes of ``spec``, or None for a plain pool (one consumer over ``<base>.>``)."""
    if not spec.laned:
        return None
    base = base_subject(namespace, pool)
    lanes: list[LaneConsumer] = []
    subjects: list[str] = [f"{base}.*"]
    if spec.priorities is None:
        lanes.append(LaneConsumer(Lane(consumer, 1, DEFAULT_LABEL), (f"{base}.*",)))
    else:
        for level in spec.priorities.levels:
            space = level_subject_space(base, level.name)
            subjects.append(space)
            if level.name == spec.priorities.default:
                lane = LaneConsumer(Lane(consumer, level.weight, level.name), (f"{base}.*", space))
            else:
                lane = LaneConsumer(
                    Lane(level_consumer(consumer, level.name), level.weight, level.name), (space,)
                )
            lanes.append(lane)
    transform = None
    if spec.ordered is not None:
        subjects.append(ordered_publish_space(base))
        transform = ordered_transform(base, spec.ordered.partitions)
        lanes += (
            LaneConsumer(
                Lane(ordered_consumer(consumer, p), 1, ORDERED_LABEL, True),
                (ordered_partition_filter(base, p),),
            )
            for p in range(spec.ordered.partitions)
        )
    return Layout(tuple(subjects), transform, tuple(lanes))


def backlog_by_label(lanes: Iterable[Lane], backlogs: Mapping[str, int]) -> dict[str, int]:
    """Each lane label's backlog, summing the lanes that share one (the ordered partitions);
    ``backlogs`` maps a consumer name to its backlog. Labels keep the lanes' order."""
    out: dict[str, int] = {}
    for lane in lanes:
        out[lane.label] = out.get(lane.label, 0) + backlogs.get(lane.consumer, 0)
    return out


def scaling_backlog(total: int, by_label: Mapping[str, int] | None, spec: WorkerPoolSpec) -> int:
    """The backlog the autoscaler sizes the pool for. Ordered tasks count only as far as more
    workers can run them: one task per partition at a time, so beyond ``ceil(partitions /
    concurrency)`` workers' worth (``targetBacklogPerReplica`` each) a deeper ordered backlog
    asks for workers that would only wait. ``status.backlog`` keeps the true total."""
    if spec.ordered is None or not by_label:
        return total
    ordered = by_label.get(ORDERED_LABEL, 0)
    useful_workers = math.ceil(spec.ordered.partitions / spec.concurrency)
    return total - ordered + min(ordered, useful_workers * spec.scaling.target_backlog_per_replica)
