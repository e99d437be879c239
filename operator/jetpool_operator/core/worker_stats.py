"""Aggregate per-worker ``WorkerStats`` snapshots into pool-wide rates.

Why it is shaped this way:

* Workers publish *cumulative* counters, so a lost stats message costs nothing: a rate is the
  difference between two snapshots of the same worker incarnation. A restart resets the
  counters; it is detected by a new ``started_at`` (or a counter going backwards) and the new
  incarnation's counters are then counted whole.
* The control loop is level-based and the operator may restart at any time, so everything
  needed between ticks lives in :class:`StatsMemory`, a small JSON-serializable value stored in
  the WorkerPool status: the last counters per worker plus a short ring of time buckets
  (at most ``StatsConfig.max_buckets`` of them, empty ones not stored).
* Liveness is judged on the operator's clock (when a *new* snapshot was first seen), never by
  comparing a worker's clock with the operator's, so clock skew cannot evict a healthy worker.

Entry points: :func:`aggregate` once per tick, :meth:`StatsMemory.window` for error-rate
windows clipped to a breaker state, :func:`pick_trial_worker` for HalfOpen.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from jetpool_operator.core.worker_signals import WorkerSignals, read_signals
from jetpool_protocol.stats import WorkerStats


@dataclass(frozen=True)
class StatsConfig:
    """How snapshots are windowed and when a silent worker counts as gone."""

    window_seconds: float = 60.0
    """Sliding window for rates and error rate (``circuitBreaker.windowSeconds``)."""
    stats_interval_seconds: float = 1.0
    """How often workers publish (``WorkerSettings.stats_interval_seconds``)."""
    stale_after_intervals: int = 5
    """A worker with no new snapshot for this many intervals is evicted."""
    max_buckets: int = 30
    """Upper bound on stored buckets; bucket width grows with the window to respect it."""

    def __post_init__(self) -> None:
        if self.window_seconds <= 0 or self.stats_interval_seconds <= 0:
            raise ValueError("window_seconds and stats_interval_seconds must be positive")
        if self.stale_after_intervals < 1 or self.max_buckets < 1:
            raise ValueError("stale_after_intervals and max_buckets must be at least 1")

    @property
    def stale_after_seconds(self) -> float:
        return self.stats_interval_seconds * self.stale_after_intervals

    @property
    def bucket_seconds(self) -> int:
        return max(1, math.ceil(self.window_seconds / self.max_buckets))

    @property
    def forget_after_seconds(self) -> float:
        """Evicted workers are remembered this long so a cached old snapshot cannot revive them."""
        return max(self.window_seconds, 10 * self.stale_after_seconds)


@dataclass(frozen=True)
class WorkerMark:
    """The last snapshot seen from one worker (times are unix seconds)."""

    worker: str
    started_at: float
    """Worker clock: identifies the incarnation."""
    at: float
    """Worker clock: when the worker took the snapshot (orders snapshots)."""
    seen: float
    """Operator clock: when this snapshot was first observed (drives staleness)."""
    succeeded: int = 0
    failed: int = 0
    dead_lettered: int = 0


@dataclass(frozen=True)
class Bucket:
    """Completions observed in ``[start, start + bucket_seconds)`` on the operator clock."""

    start: int
    succeeded: int = 0
    failed: int = 0
    dead_lettered: int = 0


@dataclass(frozen=True)
class WindowCounts:
    """Counts of one window and the span (seconds) they cover."""

    succeeded: int = 0
    failed: int = 0
    dead_lettered: int = 0
    seconds: float = 0.0

    @property
    def total(self) -> int:
        """Handler attempts that finished (each retried attempt counts once)."""
        return self.succeeded + self.failed

    @property
    def error_rate(self) -> float:
        """Failed attempts / finished attempts; 0 when nothing finished."""
        return self.failed / self.total if self.total else 0.0

    def error_rate_if(self, min_tasks: int) -> float | None:
        """The error rate, or None when fewer than ``min_tasks`` attempts make it meaningless."""
        return self.error_rate if self.total >= max(1, min_tasks) else None

    @property
    def throughput(self) -> float:
        """Succeeded tasks per second."""
        return self.succeeded / self.seconds if self.seconds > 0 else 0.0

    @property
    def attempt_rate(self) -> float | None:
        """Finished attempts per second; None before the window spans any time."""
        return self.total / self.seconds if self.seconds > 0 else None

    @property
    def failure_rate(self) -> float:
        """Failed attempts per second."""
        return self.failed / self.seconds if self.seconds > 0 else 0.0


def _ts(moment: datetime) -> float:
    return moment.timestamp()


def _dt(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, tz=UTC)


@dataclass(frozen=True)
class StatsMemory:
    """Everything :func:`aggregate` needs from the previous tick. The operator keeps it in
    memory: after a restart the window simply refills from the workers' cumulative counters."""

    workers: tuple[WorkerMark, ...] = ()
    buckets: tuple[Bucket, ...] = ()
    observing_since: float | None = None
    """Operator clock of the first tick: rates over a young memory use the shorter span."""
    last_progress_at: float | None = None
    """Operator clock of the last tick that saw any task finish."""
    bucket_seconds: int = 1

    def window(
        self, now: datetime, window_seconds: float, not_before: datetime | None = None
    ) -> WindowCounts:
        """Sum the buckets of the last ``window_seconds`` (whole buckets, newest included).

        ``not_before`` drops buckets that started before it, e.g. the breaker's ``since`` so
        the failures that tripped the breaker do not count against the next Closed period.
        """
        t = _ts(now)
        width = self.bucket_seconds
        first = math.floor(t / width) * width - window_seconds + width
        start_of_span = t - window_seconds
        if self.observing_since is not None:
            start_of_span = max(start_of_span, self.observing_since)
        if not_before is not None:
            first = max(first, _ts(not_before))
            start_of_span = max(start_of_span, _ts(not_before))
        picked = [b for b in self.buckets if b.start >= first]
        return WindowCounts(
            succeeded=sum(b.succeeded for b in picked),
            failed=sum(b.failed for b in picked),
            dead_lettered=sum(b.dead_lettered for b in picked),
            seconds=min(window_seconds, max(1.0, t - start_of_span)),
        )


@dataclass(frozen=True)
class PoolStats:
    """The pool as seen through its workers' stats at one tick."""

    live_workers: tuple[str, ...] = ()
    """Workers with a fresh snapshot, sorted."""
    stale_workers: tuple[str, ...] = ()
    """Workers evicted for silence (still remembered so an old cached snapshot cannot revive
    them); the caller should drop them from its snapshot cache."""
    fetching_workers: int = 0
    in_flight: int = 0
    oldest_in_flight_seconds: float = 0.0
    window: WindowCounts = field(default_factory=WindowCounts)
    trial_succeeded: int = 0
    """Trial successes reported for the breaker epoch passed to :func:`aggregate`."""
    trial_failed: int = 0
    last_progress_at: datetime | None = None
    signals: WorkerSignals = field(default_factory=WorkerSignals)
    """What the live workers report is wrong with them (``core/worker_signals.py``)."""

    @property
    def throughput(self) -> float:
        return self.window.throughput

    @property
    def failure_rate(self) -> float:
        return self.window.failure_rate

    @property
    def error_rate(self) -> float:
        return self.window.error_rate


def _delta(prev: WorkerMark | None, snap: WorkerStats, young: bool) -> tuple[int, int, int] | None:
    """Counter increase since ``prev``; None when the snapshot is old news and must be ignored."""
    cur = (snap.succeeded, snap.failed, snap.dead_lettered)
    if prev is None:
        return cur if young else (0, 0, 0)
    started = _ts(snap.started_at)
    if started < prev.started_at:
        return None  # a late snapshot of an earlier incarnation
    if started > prev.started_at:
        return cur  # restarted: everything the new incarnation did is new
    if _ts(snap.at) <= prev.at:
        return None  # duplicate or out of order
    before = (prev.succeeded, prev.failed, prev.dead_lettered)
    if any(c < b for c, b in zip(cur, before, strict=True)):
        return cur  # counters went backwards without a new started_at: treat as a reset
    return (cur[0] - before[0], cur[1] - before[1], cur[2] - before[2])


def aggregate(
    memory: StatsMemory,
    snapshots: Iterable[WorkerStats],
    now: datetime,
    config: StatsConfig,
    *,
    epoch: int = 0,
) -> tuple[PoolStats, StatsMemory]:
    """Fold the latest snapshot per worker into the memory and summarize the pool.

    ``snapshots`` is the latest known snapshot of each worker (re-sending an unchanged one is
    harmless). ``epoch`` is the breaker's current epoch: trial counts of other epochs are
    ignored. Returns the pool summary and the memory for the next tick.
    """
    t = _ts(now)
    observing = memory.observing_since is not None
    latest: dict[str, WorkerStats] = {}
    for snap in snapshots:
        kept = latest.get(snap.worker)
        if kept is None or (snap.started_at, snap.at) > (kept.started_at, kept.at):
            latest[snap.worker] = snap

    marks = {m.worker: m for m in memory.workers}
    added = [0, 0, 0]
    for name, snap in latest.items():
        prev = marks.get(name)
        young = observing and (
            (snap.at - snap.started_at).total_seconds() <= config.stale_after_seconds
        )
        delta = _delta(prev, snap, young)
        if delta is None:
            continue
        for i, d in enumerate(delta):
            added[i] += d
        marks[name] = WorkerMark(
            worker=name,
            started_at=_ts(snap.started_at),
            at=_ts(snap.at),
            seen=t,
            succeeded=snap.succeeded,
            failed=snap.failed,
            dead_lettered=snap.dead_lettered,
        )

    live = sorted(n for n, m in marks.items() if t - m.seen <= config.stale_after_seconds)
    kept_marks = tuple(
        marks[n] for n in sorted(marks) if t - marks[n].seen <= config.forget_after_seconds
    )
    stale = tuple(m.worker for m in kept_marks if m.worker not in live)

    same_width = memory.bucket_seconds == config.bucket_seconds
    buckets = _add_to_buckets(memory.buckets if same_width else (), t, added, config)
    progressed = any(added)
    new_memory = StatsMemory(
        workers=kept_marks,
        buckets=buckets,
        observing_since=memory.observing_since if observing else t,
        last_progress_at=t if progressed else memory.last_progress_at,
        bucket_seconds=config.bucket_seconds,
    )

    live_snaps = [latest[n] for n in live if n in latest]
    stats = PoolStats(
        live_workers=tuple(live),
        stale_workers=stale,
        fetching_workers=sum(1 for s in live_snaps if s.fetching),
        in_flight=sum(s.in_flight for s in live_snaps),
        oldest_in_flight_seconds=max(
            (s.oldest_in_flight_seconds for s in live_snaps if s.in_flight), default=0.0
        ),
        window=new_memory.window(now, config.window_seconds),
        trial_succeeded=sum(s.trial_succeeded for s in live_snaps if s.control_epoch == epoch),
        trial_failed=sum(s.trial_failed for s in live_snaps if s.control_epoch == epoch),
        last_progress_at=_dt(new_memory.last_progress_at),
        signals=read_signals(live_snaps),
    )
    return stats, new_memory


def _add_to_buckets(
    buckets: tuple[Bucket, ...], t: float, added: Sequence[int], config: StatsConfig
) -> tuple[Bucket, ...]:
    width = config.bucket_seconds
    start = math.floor(t / width) * width
    oldest = start - config.window_seconds + width
    kept = [b for b in buckets if b.start >= oldest]
    if any(added):
        if kept and kept[-1].start == start:
            last = kept[-1]
            kept[-1] = replace(
                last,
                succeeded=last.succeeded + added[0],
                failed=last.failed + added[1],
                dead_lettered=last.dead_lettered + added[2],
            )
        else:
            kept.append(Bucket(start, added[0], added[1], added[2]))
    return tuple(kept[-config.max_buckets :])


def pick_trial_worker(live_workers: Iterable[str], current: str | None = None) -> str | None:
    """The worker that runs HalfOpen trials: keep ``current`` while it is live, else the
    lexicographically smallest live worker (deterministic across operator restarts)."""
    live = sorted(set(live_workers))
    if current is not None and current in live:
        return current
    return live[0] if live else None
