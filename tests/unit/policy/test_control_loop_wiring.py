"""The four policies wired together the way the operator's tick uses them."""

from __future__ import annotations

from dataclasses import dataclass, field

from jetpool_operator.core.autoscaler import (
    ScalerMemory,
    ScalingObservation,
    ScalingPolicy,
    decide,
)
from jetpool_operator.core.circuit_breaker import (
    Breaker,
    BreakerConfig,
    control_state,
    observe,
    step,
)
from jetpool_operator.core.health import HealthConfig, HealthMemory, HealthObservation, assess
from jetpool_operator.core.worker_stats import StatsConfig, StatsMemory, aggregate
from jetpool_protocol.control import BreakerState
from jetpool_protocol.stats import WorkerStats

from .support import at, snapshot

BREAKER = BreakerConfig(min_tasks=10, window_seconds=30, open_seconds=10, half_open_tasks=2)
STATS = StatsConfig(window_seconds=30)
POLICY = ScalingPolicy(max_replicas=8)


@dataclass
class Pool:
    """All memory the operator keeps in status, plus the simulated world."""

    stats: StatsMemory = field(default_factory=StatsMemory)
    breaker: Breaker = field(default_factory=Breaker)
    scaler: ScalerMemory = field(default_factory=ScalerMemory)
    health: HealthMemory = field(default_factory=HealthMemory)
    replicas: int = 1
    events: list[str] = field(default_factory=list)

    def state(self) -> BreakerState:
        return self.breaker.state

    def tick(self, t: float, snaps: list[WorkerStats], backlog: int) -> None:
        now = at(t)
        stats, self.stats = aggregate(self.stats, snaps, now, STATS, epoch=self.breaker.epoch)
        seen = observe(self.breaker, self.stats, stats, now, BREAKER)
        result = step(self.breaker, seen, now, BREAKER)
        self.breaker = result.breaker
        if result.transition:
            self.events.append(result.transition.reason)
        decision = decide(
            POLICY,
            ScalingObservation(
                current_replicas=self.replicas,
                ready_replicas=self.replicas,
                backlog=backlog,
                in_flight=stats.in_flight,
                error_rate=seen.error_rate_if(BREAKER.min_tasks),
                breaker=self.breaker.state,
            ),
            self.scaler,
            now,
        )
        self.replicas, self.scaler = decision.replicas, decision.memory
        _, self.health = assess(
            HealthObservation(
                pending=backlog,
                desired_replicas=self.replicas,
                ready_replicas=self.replicas,
                last_progress_at=stats.last_progress_at,
                breaker=self.breaker.state,
                breaker_since=self.breaker.since,
            ),
            self.health,
            now,
            HealthConfig(),
        )


def test_a_failing_pool_trips_holds_its_size_then_recovers_through_a_trial() -> None:
    pool = Pool()
    pool.tick(0, [snapshot("w-a", 0)], backlog=10)
    pool.tick(1, [snapshot("w-a", 1, succeeded=2, failed=12)], backlog=500)
    assert pool.state() is BreakerState.OPEN
    assert pool.replicas == 1  # 500 tasks waiting, but no scale-up into a failing dependency

    pool.tick(11, [snapshot("w-a", 11, succeeded=2, failed=12)], backlog=500)
    assert pool.state() is BreakerState.HALF_OPEN
    control = control_state(pool.breaker, BREAKER)
    assert (control.trial_worker, control.trial_tasks) == ("w-a", 2)

    epoch = pool.breaker.epoch
    trial = snapshot("w-a", 12, succeeded=4, failed=12, epoch=epoch, trial_succeeded=2)
    pool.tick(12, [trial], backlog=498)
    assert pool.state() is BreakerState.CLOSED
    pool.tick(13, [snapshot("w-a", 13, succeeded=10, failed=12, epoch=epoch + 1)], backlog=490)
    assert pool.state() is BreakerState.CLOSED  # the old failures are not held against it
    assert pool.replicas == 8
    assert pool.events == ["ErrorRateExceeded", "TrialStarted", "TrialSucceeded"]
