"""PURE: what the workers' own stats say is wrong with them, for the pool's health.

A worker can be Ready (connected, consuming) and still do nothing useful: paused by its memory
guard, obeying a breaker state it can no longer read, holding threads of handlers that overran
their timeout, or not asking for tasks although it has free slots. Only the worker knows; its
stats snapshot (``jetpool_protocol.stats.WorkerStats``) says so, and this module turns the
live workers' snapshots into the worker ids health names (``core/health.py``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from jetpool_protocol.stats import WorkerStats

MEMORY_PAUSE = "memory"


@dataclass(frozen=True)
class SignalLimits:
    control_stale_seconds: float = 30.0
    """A worker that has not read the control state for this long (its watch rereads it at
    least every 5 s) obeys a breaker state that may be out of date."""
    not_pulling_seconds: float = 60.0
    """A fetching worker with free slots that has not asked for tasks for this long (it asks
    at least every 2 s) is wedged."""


DEFAULT_LIMITS = SignalLimits()


@dataclass(frozen=True)
class WorkerSignals:
    memory_paused: tuple[str, ...] = ()
    control_unknown: tuple[str, ...] = ()
    """Workers that cannot tell the breaker's state (never read, or not for a while)."""
    lingering: tuple[tuple[str, int], ...] = ()
    """(worker, threads of overrun sync handlers it still holds)."""
    not_pulling: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(
            self.memory_paused or self.control_unknown or self.lingering or self.not_pulling
        )


def read_signals(
    snapshots: Iterable[WorkerStats], limits: SignalLimits = DEFAULT_LIMITS
) -> WorkerSignals:
    """From the live workers' latest snapshots (sorted by worker id in the result)."""
    snaps = sorted(snapshots, key=lambda s: s.worker)
    return WorkerSignals(
        memory_paused=tuple(s.worker for s in snaps if s.paused_reason == MEMORY_PAUSE),
        control_unknown=tuple(s.worker for s in snaps if _control_unknown(s, limits)),
        lingering=tuple((s.worker, s.lingering_threads) for s in snaps if s.lingering_threads),
        not_pulling=tuple(s.worker for s in snaps if _not_pulling(s, limits)),
    )


def _control_unknown(snap: WorkerStats, limits: SignalLimits) -> bool:
    age = snap.control_read_ago_seconds
    if age is None:
        # Never read: normal for a moment after the start, a problem once it lasts. (Stats of
        # workers older than this field have no concurrency either: they say nothing.)
        up = (snap.at - snap.started_at).total_seconds()
        return snap.concurrency > 0 and up > limits.control_stale_seconds
    return age > limits.control_stale_seconds


def _not_pulling(snap: WorkerStats, limits: SignalLimits) -> bool:
    if not snap.fetching or snap.concurrency <= snap.in_flight:
        return False  # paused on purpose, or every slot busy: no reason to ask
    ago = snap.pulled_ago_seconds
    if ago is None:
        ago = (snap.at - snap.started_at).total_seconds()
    return ago > limits.not_pulling_seconds


def named(workers: Iterable[str], most: int = 5) -> str:
    """``a, b, c`` or ``a, b, c, d, e and 3 more``: ids for a status message."""
    ids = list(workers)
    shown = ", ".join(ids[:most])
    return shown if len(ids) <= most else f"{shown} and {len(ids) - most} more"
