"""Pool health: turn one tick's observations into ``status.health`` issues.

Why it is shaped this way:

* Each issue type is a plain predicate over the observation. Most problems only matter when
  they persist, so :class:`HealthMemory` remembers when each predicate first became true;
  the issue is reported once it held for its grace period and keeps that ``since`` across
  ticks (and operator restarts), so ``status.health`` does not churn.
* Starvation is measured from the later of "work became available" and "last task
  finished", so a pool that makes no progress is flagged exactly ``starvationSeconds``
  after it stopped, whether or not it ever had ready replicas.
* Dead-letter growth is judged on the dead-letter stream's message count, sampled only when
  it changes (a few numbers in memory), so purges and max-age expiry do not look like growth.
* ``healthy`` is false while any issue exists (the API's ``status.health.healthy``);
  severity tells how urgent it is. Issues are ordered Critical first, then by type, so equal
  inputs give equal status.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from jetpool_operator.core.worker_signals import WorkerSignals, named
from jetpool_protocol.control import BreakerState


class Severity(StrEnum):
    WARNING = "Warning"
    CRITICAL = "Critical"


class IssueType(StrEnum):
    STARVATION = "Starvation"
    STUCK_TASKS = "StuckTasks"
    DEAD_LETTER_GROWTH = "DeadLetterGrowth"
    HIGH_ERROR_RATE = "HighErrorRate"
    UNAVAILABLE_REPLICAS = "UnavailableReplicas"
    NATS_UNREACHABLE = "NatsUnreachable"
    BREAKER_OPEN = "BreakerOpen"
    WORKERS_MEMORY_PAUSED = "WorkersMemoryPaused"
    WORKERS_CONTROL_UNKNOWN = "WorkersControlUnknown"
    LINGERING_HANDLERS = "LingeringHandlers"
    WORKERS_NOT_FETCHING = "WorkersNotFetching"


@dataclass(frozen=True)
class HealthConfig:
    starvation_seconds: float = 60.0
    """Work waiting and nothing finishing for this long is Starvation."""
    task_timeout_seconds: float = 300.0
    """``spec.task.timeoutSeconds``."""
    stuck_task_factor: float = 2.0
    """A task in flight longer than this multiple of the timeout is stuck."""
    dead_letter_growth: int = 10
    """More than this many new dead letters within the window is DeadLetterGrowth."""
    dead_letter_window_seconds: float = 300.0
    high_error_rate: float = 0.25
    """Window error rate at or above this is HighErrorRate."""
    unavailable_seconds: float = 120.0
    """Fewer ready than desired replicas for this long is UnavailableReplicas."""
    nats_unreachable_seconds: float = 5.0
    """Consumer info failing for this long is NatsUnreachable."""

    @property
    def stuck_after_seconds(self) -> float:
        return self.task_timeout_seconds * self.stuck_task_factor


@dataclass(frozen=True)
class HealthObservation:
    pending: int | None
    """Consumer ``num_pending``: tasks no worker has received yet; None when NATS could not
    be read. (Ack-pending is left out on purpose: it holds tasks waiting out a retry delay,
    which must not look like starvation.)"""
    desired_replicas: int
    ready_replicas: int
    in_flight: int = 0
    oldest_in_flight_seconds: float = 0.0
    last_progress_at: datetime | None = None
    """When any task last finished (``PoolStats.last_progress_at``)."""
    error_rate: float | None = None
    """Window error rate, None when too few tasks to judge."""
    dead_letters: int | None = None
    """Messages in the dead-letter stream; None when unknown."""
    nats_reachable: bool = True
    breaker: BreakerState = BreakerState.CLOSED
    breaker_since: datetime | None = None
    paused: bool = False
    workers: WorkerSignals = field(default_factory=WorkerSignals)
    """What the live workers report is wrong with them, by worker id."""


@dataclass(frozen=True)
class Issue:
    type: IssueType
    severity: Severity
    message: str
    since: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type.value,
            "severity": self.severity.value,
            "message": self.message,
            "since": self.since.isoformat(),
        }


@dataclass(frozen=True)
class Health:
    healthy: bool
    issues: tuple[Issue, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"healthy": self.healthy, "issues": [i.to_dict() for i in self.issues]}


@dataclass(frozen=True)
class HealthMemory:
    """When each predicate first held, and the dead-letter count's recent change points."""

    since: tuple[tuple[str, float], ...] = ()
    dead_letter_samples: tuple[tuple[float, int], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            # A list, not a map: a JSON merge patch replaces lists whole, while a key missing
            # from a map would linger on the server.
            "since": [[k, v] for k, v in self.since],
            "deadLetterSamples": [[t, n] for t, n in self.dead_letter_samples],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> HealthMemory:
        """Inverse of :meth:`to_dict`; unreadable data yields an empty memory."""
        if not data:
            return cls()
        try:
            return cls(
                since=tuple(sorted((str(k), float(v)) for k, v in data.get("since", []))),
                dead_letter_samples=tuple(
                    (float(t), int(n)) for t, n in data.get("deadLetterSamples", [])
                ),
            )
        except (TypeError, ValueError, AttributeError):
            return cls()


@dataclass
class _Tracker:
    """Collects predicates of one tick against the remembered first-true times."""

    t: float
    previous: dict[str, float]
    current: dict[str, float] = field(default_factory=dict)

    def held_since(self, key: str, condition: bool) -> float | None:
        """First time ``condition`` held in its current run, None when it does not hold."""
        if not condition:
            return None
        first = self.previous.get(key, self.t)
        self.current[key] = first
        return first


def _dt(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


_MAX_DEAD_LETTER_SAMPLES = 32


def _dead_letter_samples(
    samples: tuple[tuple[float, int], ...], t: float, count: int | None, window: float
) -> tuple[tuple[float, int], ...]:
    """Keep change points within the window plus the last one before it (the baseline)."""
    kept = [s for s in samples if s[0] <= t]
    if count is not None and (not kept or kept[-1][1] != count):
        kept.append((t, count))
    inside = [s for s in kept if s[0] > t - window]
    before = [s for s in kept if s[0] <= t - window]
    result = ([before[-1]] if before else []) + inside
    return tuple(result[-_MAX_DEAD_LETTER_SAMPLES:])


def assess(
    obs: HealthObservation, memory: HealthMemory, now: datetime, config: HealthConfig
) -> tuple[Health, HealthMemory]:
    """Issues of this tick and the memory for the next one."""
    t = now.timestamp()
    track = _Tracker(t, dict(memory.since))
    issues: list[Issue] = []

    def add(kind: IssueType, severity: Severity, message: str, since: float) -> None:
        issues.append(Issue(kind, severity, message, _dt(since)))

    unreachable = track.held_since("nats", not obs.nats_reachable)
    if unreachable is not None and t - unreachable >= config.nats_unreachable_seconds:
        add(
            IssueType.NATS_UNREACHABLE,
            Severity.CRITICAL,
            "consumer info unavailable (see NatsReady)",
            unreachable,
        )

    if obs.breaker is not BreakerState.CLOSED:
        opened = obs.breaker_since.timestamp() if obs.breaker_since else t
        open_ = obs.breaker is BreakerState.OPEN
        add(
            IssueType.BREAKER_OPEN,
            Severity.CRITICAL if open_ else Severity.WARNING,
            "circuit breaker is Open: workers are not fetching"
            if open_
            else "circuit breaker is HalfOpen: one worker is running trial tasks",
            opened,
        )

    working = not obs.paused and obs.breaker is BreakerState.CLOSED
    waiting = track.held_since(
        "work", working and obs.pending is not None and obs.pending > 0 and obs.in_flight == 0
    )
    if waiting is not None:
        progress = obs.last_progress_at.timestamp() if obs.last_progress_at else waiting
        stalled = max(waiting, progress)
        if t - stalled >= config.starvation_seconds:
            detail = (
                "no ready replicas"
                if obs.ready_replicas == 0
                else f"{obs.ready_replicas} ready replicas take nothing"
            )
            add(
                IssueType.STARVATION,
                Severity.CRITICAL,
                f"tasks waiting, none finishing ({detail})",
                stalled,
            )

    stuck = track.held_since(
        "stuck", obs.in_flight > 0 and obs.oldest_in_flight_seconds > config.stuck_after_seconds
    )
    if stuck is not None:
        add(
            IssueType.STUCK_TASKS,
            Severity.WARNING,
            f"a task has been in flight for over {config.stuck_task_factor:g} x its timeout "
            f"of {config.task_timeout_seconds:g}s",
            stuck,
        )

    samples = _dead_letter_samples(
        memory.dead_letter_samples, t, obs.dead_letters, config.dead_letter_window_seconds
    )
    growth = obs.dead_letters - min(n for _, n in samples) if obs.dead_letters is not None else 0
    growing = track.held_since("deadLetters", growth > config.dead_letter_growth)
    if growing is not None:
        add(
            IssueType.DEAD_LETTER_GROWTH,
            Severity.WARNING,
            f"more than {config.dead_letter_growth} new dead letters within "
            f"{config.dead_letter_window_seconds:g}s",
            growing,
        )

    failing = track.held_since(
        "errorRate", obs.error_rate is not None and obs.error_rate >= config.high_error_rate
    )
    if failing is not None and obs.error_rate is not None:
        add(
            IssueType.HIGH_ERROR_RATE,
            Severity.WARNING,
            f"at least {config.high_error_rate:.0%} of attempts fail",
            failing,
        )

    short = track.held_since(
        "unavailable", not obs.paused and obs.ready_replicas < obs.desired_replicas
    )
    if short is not None and t - short >= config.unavailable_seconds:
        add(
            IssueType.UNAVAILABLE_REPLICAS,
            Severity.WARNING,
            f"fewer replicas ready than desired for over {config.unavailable_seconds:g}s",
            short,
        )

    for kind, severity, message in _worker_issues(obs.workers):
        since = track.held_since(kind.value, True)
        assert since is not None
        add(kind, severity, message, since)

    order = {Severity.CRITICAL: 0, Severity.WARNING: 1}
    issues.sort(key=lambda i: (order[i.severity], i.type.value))
    health = Health(healthy=not issues, issues=tuple(issues))
    return health, HealthMemory(
        since=tuple(sorted(track.current.items())), dead_letter_samples=samples
    )


def _worker_issues(signals: WorkerSignals) -> list[tuple[IssueType, Severity, str]]:
    """Issues the workers report themselves, each naming the workers (shown at once: the
    workers already waited out their own thresholds)."""
    out = []
    if signals.memory_paused:
        out.append(
            (
                IssueType.WORKERS_MEMORY_PAUSED,
                Severity.WARNING,
                f"paused by their memory guard (RSS above memoryLimitBytes), taking no "
                f"tasks: {named(signals.memory_paused)}",
            )
        )
    if signals.control_unknown:
        out.append(
            (
                IssueType.WORKERS_CONTROL_UNKNOWN,
                Severity.WARNING,
                f"cannot read the breaker state (control watch lost), so may not follow "
                f"the breaker: {named(signals.control_unknown)}",
            )
        )
    if signals.lingering:
        out.append(
            (
                IssueType.LINGERING_HANDLERS,
                Severity.WARNING,
                "sync handlers past their timeout still hold threads and slots: "
                + named(f"{worker} ({count})" for worker, count in signals.lingering),
            )
        )
    if signals.not_pulling:
        out.append(
            (
                IssueType.WORKERS_NOT_FETCHING,
                Severity.CRITICAL,
                f"ready with free slots but not asking NATS for tasks: "
                f"{named(signals.not_pulling)}",
            )
        )
    return out
