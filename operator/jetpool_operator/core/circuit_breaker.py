"""The pool's circuit breaker: Closed -> Open -> HalfOpen -> Closed, as a pure state machine.

Why it is shaped this way:

* It protects what the handlers call (and the dead-letter stream) from a pool that fails most
  of its tasks: when the error rate over ``windowSeconds`` reaches ``errorRateThreshold`` with
  at least ``minTasks`` attempts, every worker stops fetching (Open). Backlog stays in the
  stream instead of being burned into the dead-letter stream.
* Open always lasts at least ``openSeconds``; then one deterministic trial worker may run up
  to a few tasks (HalfOpen). ``halfOpenTasks`` successes close it, failures beyond the
  tolerated ratio (default: any failure) reopen it.
* A Closed period is judged only on tasks that finished *after* it began
  (:func:`observe` clips the window at ``since``), so the failures that tripped the breaker,
  or preceded a manual reset, cannot trip it again right away.
* A manual reset is an annotation value (``jetpool.dev/reset-breaker: <token>``). The state
  remembers the last honoured token, so a token resets at most once and a stale annotation
  left on the object can never reset a later trip. Any *new* token forces Closed.
* ``epoch`` increments on every transition: workers key their per-state counters (trial
  budget, trial results) on it, so counts of an older HalfOpen never leak into a newer one.

The whole state is :class:`Breaker` (stored in ``status.circuitBreaker``); each tick calls
:func:`observe` then :func:`step`, publishes :func:`control_state` to the control KV and turns
a returned :class:`Transition` into a Kubernetes Event.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from jetpool_operator.core.worker_stats import PoolStats, StatsMemory, pick_trial_worker
from jetpool_protocol.control import BreakerState, ControlState

RESET_ANNOTATION = "jetpool.dev/reset-breaker"
"""Set it to a new value (e.g. a timestamp) to force the breaker Closed once."""

# Transition reasons (CamelCase, used as Kubernetes Event reasons).
ERROR_RATE_EXCEEDED = "ErrorRateExceeded"
TRIAL_STARTED = "TrialStarted"
TRIAL_SUCCEEDED = "TrialSucceeded"
TRIAL_FAILED = "TrialFailed"
MANUAL_RESET = "ManualReset"
BREAKER_DISABLED = "BreakerDisabled"


@dataclass(frozen=True)
class BreakerConfig:
    """Mirrors ``spec.circuitBreaker``."""

    enabled: bool = True
    error_rate_threshold: float = 0.5
    """Trip when failed / finished attempts in the window reaches this."""
    min_tasks: int = 20
    """Do not judge a window holding fewer finished attempts than this."""
    window_seconds: float = 60.0
    open_seconds: float = 30.0
    """Minimum time Open before a trial."""
    half_open_tasks: int = 5
    """Trial successes needed to close."""
    half_open_failure_ratio: float = 0.0
    """Share of ``half_open_tasks`` that may fail without reopening (0: any failure reopens)."""
    settle_seconds: float = 2.0
    """Stats that arrive this soon after a transition still describe the previous state
    (workers report every second): a Closed period is judged only on what comes later, so a
    manual reset is not re-tripped by failures that happened before it."""

    def __post_init__(self) -> None:
        if not 0 < self.error_rate_threshold <= 1:
            raise ValueError("error_rate_threshold must be in (0, 1]")
        if self.min_tasks < 1 or self.half_open_tasks < 1:
            raise ValueError("min_tasks and half_open_tasks must be at least 1")
        if self.window_seconds <= 0 or self.open_seconds < 0:
            raise ValueError("window_seconds must be positive and open_seconds not negative")
        if not 0 <= self.half_open_failure_ratio < 1:
            raise ValueError("half_open_failure_ratio must be in [0, 1)")

    @property
    def tolerated_trial_failures(self) -> int:
        return math.floor(self.half_open_failure_ratio * self.half_open_tasks)

    @property
    def trial_tasks(self) -> int:
        """The trial worker's task budget per HalfOpen epoch."""
        return self.half_open_tasks + self.tolerated_trial_failures


@dataclass(frozen=True)
class Breaker:
    """The breaker's whole state (``status.circuitBreaker``)."""

    state: BreakerState = BreakerState.CLOSED
    since: datetime | None = None
    reason: str = ""
    message: str = ""
    trips: int = 0
    """Times the breaker opened (from Closed or HalfOpen); never decreases."""
    epoch: int = 0
    last_reset_token: str | None = None
    trial_worker: str | None = None
    """The worker allowed to fetch while HalfOpen."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "since": None if self.since is None else self.since.isoformat(),
            "reason": self.reason,
            "message": self.message,
            "trips": self.trips,
            "epoch": self.epoch,
            "lastResetToken": self.last_reset_token,
            "trialWorker": self.trial_worker,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Breaker:
        """Inverse of :meth:`to_dict`; missing or unreadable data yields a Closed breaker."""
        if not data:
            return cls()
        try:
            since = data.get("since")
            return cls(
                state=BreakerState(data.get("state", BreakerState.CLOSED.value)),
                since=None if since is None else datetime.fromisoformat(str(since)),
                reason=str(data.get("reason", "")),
                message=str(data.get("message", "")),
                trips=int(data.get("trips", 0)),
                epoch=int(data.get("epoch", 0)),
                last_reset_token=_opt_str(data.get("lastResetToken")),
                trial_worker=_opt_str(data.get("trialWorker")),
            )
        except (TypeError, ValueError):
            return cls()


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


@dataclass(frozen=True)
class BreakerObservation:
    """What the breaker looks at on one tick."""

    succeeded: int = 0
    """Attempts that succeeded in the window (since the current Closed period began)."""
    failed: int = 0
    trial_succeeded: int = 0
    """Trial results reported for the breaker's current epoch."""
    trial_failed: int = 0
    live_workers: Sequence[str] = ()
    reset_token: str | None = None
    """Current value of the reset annotation (None or "" when absent)."""

    @property
    def total(self) -> int:
        return self.succeeded + self.failed

    @property
    def error_rate(self) -> float:
        return self.failed / self.total if self.total else 0.0

    def error_rate_if(self, min_tasks: int) -> float | None:
        """The error rate when at least ``min_tasks`` attempts finished, else None.

        This is the rate to hand to the autoscaler's scale-up hold: like the breaker, it only
        counts the current Closed period, so a recovered pool is not held back by the
        failures that tripped it.
        """
        return self.error_rate if self.total >= max(1, min_tasks) else None


@dataclass(frozen=True)
class Transition:
    """A state change, for a Kubernetes Event and the CircuitOpen condition."""

    from_state: BreakerState
    to_state: BreakerState
    reason: str
    message: str
    at: datetime


@dataclass(frozen=True)
class BreakerStep:
    breaker: Breaker
    transition: Transition | None = None


def observe(
    breaker: Breaker,
    memory: StatsMemory,
    stats: PoolStats,
    now: datetime,
    config: BreakerConfig,
    *,
    reset_token: str | None = None,
) -> BreakerObservation:
    """Build the observation from the stats aggregation of this tick.

    The error window is clipped at ``breaker.since`` so a Closed period is judged only on
    its own tasks (see the module docstring).
    """
    since = breaker.since
    not_before = None if since is None else since + timedelta(seconds=config.settle_seconds)
    window = memory.window(now, config.window_seconds, not_before=not_before)
    return BreakerObservation(
        succeeded=window.succeeded,
        failed=window.failed,
        trial_succeeded=stats.trial_succeeded,
        trial_failed=stats.trial_failed,
        live_workers=stats.live_workers,
        reset_token=reset_token,
    )


def _move(
    breaker: Breaker, to: BreakerState, reason: str, message: str, now: datetime, **changes: Any
) -> BreakerStep:
    moved = replace(
        breaker,
        state=to,
        since=now,
        reason=reason,
        message=message,
        epoch=breaker.epoch + 1,
        trips=breaker.trips + (1 if to is BreakerState.OPEN else 0),
        trial_worker=None,
        **changes,
    )
    return BreakerStep(moved, Transition(breaker.state, to, reason, message, now))


def step(
    breaker: Breaker, observation: BreakerObservation, now: datetime, config: BreakerConfig
) -> BreakerStep:
    """Advance the breaker by one tick. At most one transition per tick."""
    token = observation.reset_token or None
    if token is not None and token != breaker.last_reset_token:
        if breaker.state is BreakerState.CLOSED:
            # Remember it so the same annotation cannot reset a later trip.
            return BreakerStep(replace(breaker, last_reset_token=token))
        return _move(
            breaker,
            BreakerState.CLOSED,
            MANUAL_RESET,
            f"reset by annotation {RESET_ANNOTATION}={token}",
            now,
            last_reset_token=token,
        )

    if not config.enabled:
        if breaker.state is BreakerState.CLOSED:
            return BreakerStep(breaker)
        return _move(
            breaker, BreakerState.CLOSED, BREAKER_DISABLED, "circuit breaker disabled", now
        )

    if breaker.state is BreakerState.CLOSED:
        if (
            observation.total >= config.min_tasks
            and observation.error_rate >= config.error_rate_threshold
        ):
            return _move(
                breaker,
                BreakerState.OPEN,
                ERROR_RATE_EXCEEDED,
                f"{observation.failed} of {observation.total} attempts failed "
                f"({observation.error_rate:.0%} >= {config.error_rate_threshold:.0%}) "
                f"within {config.window_seconds:g}s",
                now,
            )
        return BreakerStep(breaker)

    if breaker.state is BreakerState.OPEN:
        opened = breaker.since or now
        if now - opened >= timedelta(seconds=config.open_seconds):
            trial = pick_trial_worker(observation.live_workers)
            step_ = _move(
                breaker,
                BreakerState.HALF_OPEN,
                TRIAL_STARTED,
                f"open for {config.open_seconds:g}s; trying up to {config.trial_tasks} tasks on "
                f"{trial or 'the next worker to report'}",
                now,
            )
            return BreakerStep(replace(step_.breaker, trial_worker=trial), step_.transition)
        return BreakerStep(breaker)

    # HalfOpen
    trials = observation.trial_succeeded + observation.trial_failed
    if observation.trial_failed > config.tolerated_trial_failures:
        return _move(
            breaker,
            BreakerState.OPEN,
            TRIAL_FAILED,
            f"{observation.trial_failed} of {trials} trial attempts failed "
            f"(tolerated: {config.tolerated_trial_failures})",
            now,
        )
    if observation.trial_succeeded >= config.half_open_tasks:
        return _move(
            breaker,
            BreakerState.CLOSED,
            TRIAL_SUCCEEDED,
            f"{observation.trial_succeeded} trial tasks succeeded",
            now,
        )
    trial = pick_trial_worker(observation.live_workers, breaker.trial_worker)
    if trial != breaker.trial_worker and trial is not None:
        return BreakerStep(replace(breaker, trial_worker=trial))
    return BreakerStep(breaker)


def control_state(breaker: Breaker, config: BreakerConfig) -> ControlState:
    """What workers must do, for the control KV key of the pool."""
    half_open = breaker.state is BreakerState.HALF_OPEN
    return ControlState(
        breaker=breaker.state,
        since=breaker.since,
        reason=breaker.reason,
        epoch=breaker.epoch,
        trial_worker=breaker.trial_worker if half_open else None,
        trial_tasks=config.trial_tasks if half_open else 0,
    )
