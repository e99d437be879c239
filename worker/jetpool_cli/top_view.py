"""PURE: what ``jetpool top`` shows, folded from the workers' stats and per-pool readings.

Workers publish cumulative counters every second (``jetpool_protocol.stats.WorkerStats``); a
rate is the growth of the pool's counters over the last ``window`` seconds, summed per worker
so a worker that leaves or restarts never makes a rate negative. The I/O (NATS subscription,
stream and KV reads, the terminal) is ``jetpool_cli.top``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from jetpool_protocol.stats import WorkerStats

PoolKey = tuple[str, str]
"""(namespace, pool)."""


@dataclass(frozen=True, slots=True)
class PoolReading:
    """What one refresh read about a pool besides the workers' stats (None: unreadable)."""

    backlog: int | None = None
    dead_letters: int | None = None
    breaker: str = "?"


@dataclass(frozen=True, slots=True)
class PoolRow:
    namespace: str
    pool: str
    workers: int
    in_flight: int
    slots: int
    backlog: int | None
    rate: float | None
    """Tasks succeeded per second over the window; None before two samples."""
    error_rate: float | None
    """Failed / finished over the window; None when nothing finished."""
    breaker: str
    dead_letters: int | None
    dead_letter_growth: int | None
    """New dead letters over the window."""
    paused: int
    """Workers not fetching (breaker, memory guard, draining)."""


@dataclass(frozen=True, slots=True)
class WorkerRow:
    worker: str
    in_flight: int
    slots: int
    rate: float | None
    failed: int
    state: str
    """``fetching`` or why not (``memory``, ``breaker_open``, ``draining``, ...)."""
    pulled_ago: float | None
    lingering: int


@dataclass
class _Sample:
    at: float
    succeeded: int
    failed: int
    dead_letters: int | None


@dataclass
class _Pool:
    succeeded: int = 0
    """Counted since the view started, summed over worker increments."""
    failed: int = 0
    reading: PoolReading = field(default_factory=PoolReading)
    samples: deque[_Sample] = field(default_factory=deque)


@dataclass
class _Worker:
    stats: WorkerStats
    seen: float
    succeeded_at: deque[tuple[float, int]] = field(default_factory=deque)


class TopModel:
    def __init__(self, window: float = 10.0, stale_after: float = 5.0) -> None:
        self.window = window
        self.stale_after = stale_after
        self._pools: dict[PoolKey, _Pool] = {}
        self._workers: dict[PoolKey, dict[str, _Worker]] = {}

    def saw(self, stats: WorkerStats, now: float) -> None:
        """A worker's snapshot arrived at ``now`` (the viewer's clock)."""
        key = (stats.namespace, stats.pool)
        pool = self._pools.setdefault(key, _Pool())
        workers = self._workers.setdefault(key, {})
        known = workers.get(stats.worker)
        if known is not None and (stats.started_at, stats.at) < (
            known.stats.started_at,
            known.stats.at,
        ):
            return  # a late snapshot
        if known is not None:  # a worker first seen brings counts from before the view
            restarted = stats.started_at != known.stats.started_at
            before = (0, 0) if restarted else (known.stats.succeeded, known.stats.failed)
            pool.succeeded += max(0, stats.succeeded - before[0])
            pool.failed += max(0, stats.failed - before[1])
        entry = _Worker(stats, now) if known is None else known
        entry.stats, entry.seen = stats, now
        entry.succeeded_at.append((now, stats.succeeded))
        while entry.succeeded_at and entry.succeeded_at[0][0] < now - self.window:
            entry.succeeded_at.popleft()
        workers[stats.worker] = entry

    def known(self) -> list[PoolKey]:
        """Every pool seen so far (from its workers' stats or a reading)."""
        return sorted(self._pools)

    def read(self, key: PoolKey, reading: PoolReading) -> None:
        self._pools.setdefault(key, _Pool()).reading = reading
        self._workers.setdefault(key, {})

    def tick(self, now: float) -> None:
        """Take a sample of every pool's counters (once per refresh)."""
        for pool in self._pools.values():
            pool.samples.append(
                _Sample(now, pool.succeeded, pool.failed, pool.reading.dead_letters)
            )
            while len(pool.samples) > 2 and pool.samples[1].at <= now - self.window:
                pool.samples.popleft()

    def pools(self, now: float) -> list[PoolRow]:
        rows = []
        for key in sorted(self._pools):
            pool = self._pools[key]
            live = self._live(key, now)
            first, last = (pool.samples[0], pool.samples[-1]) if pool.samples else (None, None)
            span = last.at - first.at if first and last else 0.0
            rate = error_rate = growth = None
            if first and last and span > 0:
                succeeded, failed = last.succeeded - first.succeeded, last.failed - first.failed
                rate = succeeded / span
                error_rate = failed / (succeeded + failed) if succeeded + failed else None
                if first.dead_letters is not None and last.dead_letters is not None:
                    growth = max(0, last.dead_letters - first.dead_letters)
            rows.append(
                PoolRow(
                    namespace=key[0],
                    pool=key[1],
                    workers=len(live),
                    in_flight=sum(w.stats.in_flight for w in live),
                    slots=sum(w.stats.concurrency for w in live),
                    backlog=pool.reading.backlog,
                    rate=rate,
                    error_rate=error_rate,
                    breaker=pool.reading.breaker,
                    dead_letters=pool.reading.dead_letters,
                    dead_letter_growth=growth,
                    paused=sum(1 for w in live if not w.stats.fetching),
                )
            )
        return rows

    def workers(self, key: PoolKey, now: float) -> list[WorkerRow]:
        rows = []
        for entry in sorted(self._live(key, now), key=lambda w: w.stats.worker):
            s = entry.stats
            points = entry.succeeded_at
            span = points[-1][0] - points[0][0] if len(points) > 1 else 0.0
            rows.append(
                WorkerRow(
                    worker=s.worker,
                    in_flight=s.in_flight,
                    slots=s.concurrency,
                    rate=(points[-1][1] - points[0][1]) / span if span > 0 else None,
                    failed=s.failed,
                    state=s.paused_reason or "fetching",
                    pulled_ago=s.pulled_ago_seconds,
                    lingering=s.lingering_threads,
                )
            )
        return rows

    def _live(self, key: PoolKey, now: float) -> list[_Worker]:
        workers = self._workers.get(key, {})
        return [w for w in workers.values() if now - w.seen <= self.stale_after]
