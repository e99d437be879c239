"""Fake clock and builders shared by the policy tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from jetpool_protocol.stats import WorkerStats

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    """The fake clock: ``seconds`` after T0."""
    return T0 + timedelta(seconds=seconds)


def snapshot(
    worker: str,
    taken: float,
    *,
    started: float = 0.0,
    succeeded: int = 0,
    failed: int = 0,
    dead_lettered: int = 0,
    in_flight: int = 0,
    oldest: float = 0.0,
    fetching: bool = True,
    epoch: int = 0,
    trial_succeeded: int = 0,
    trial_failed: int = 0,
) -> WorkerStats:
    return WorkerStats(
        worker=worker,
        pool="pool",
        namespace="ns",
        at=at(taken),
        started_at=at(started),
        succeeded=succeeded,
        failed=failed,
        dead_lettered=dead_lettered,
        in_flight=in_flight,
        oldest_in_flight_seconds=oldest,
        fetching=fetching,
        control_epoch=epoch,
        trial_succeeded=trial_succeeded,
        trial_failed=trial_failed,
    )
