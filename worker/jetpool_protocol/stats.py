"""Stats each worker publishes periodically; the operator's control loop aggregates them.

Counters are cumulative since the worker started, so a lost message costs nothing: the
operator computes rates from the difference between two snapshots of the same worker.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict


class WorkerStats(BaseModel):
    model_config = ConfigDict(frozen=True)

    worker: str
    pool: str
    namespace: str
    at: datetime
    started_at: datetime
    succeeded: int = 0
    failed: int = 0
    """Handler failures of any kind (each retried attempt counts once)."""
    retried: int = 0
    dead_lettered: int = 0
    in_flight: int = 0
    oldest_in_flight_seconds: float = 0.0
    """How long the oldest running handler has run (waiting to start does not count)."""
    fetching: bool = True
    """False while the worker holds back (breaker, memory guard, draining)."""
    paused_reason: str = ""
    """Why not: ``breaker``, ``memory`` or ``draining``."""
    concurrency: int = 0
    """The worker's slots (0 from workers older than this field)."""
    lingering_threads: int = 0
    """Sync handlers that overran their timeout and still hold a thread."""
    pulled_ago_seconds: float | None = None
    """Since the worker last asked NATS for tasks or got one; None: not yet."""
    control_read_ago_seconds: float | None = None
    """Since the worker last read the pool's control (breaker) state; None: never."""
    control_epoch: int = 0
    trial_succeeded: int = 0
    """Successes during the current HalfOpen epoch (only the trial worker has these)."""
    trial_failed: int = 0
