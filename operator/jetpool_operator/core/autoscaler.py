"""Desired replicas for a pool, from its backlog, breaker and error rate.

Why it is shaped this way (see docs/autoscaling.md for the full algorithm and knobs):

* Demand is the consumer's ``num_pending + num_ack_pending`` (what KEDA's NATS JetStream
  scaler uses; ack-pending includes in-flight tasks and tasks waiting for a retry), and the
  recommendation is ``ceil(demand / targetBacklogPerReplica)``, independent of the current
  count, so a burst is met in **one** step on the first tick that sees it.
* Scale-up is immediate; scale-down goes only to the *highest* recommendation of the last
  ``scaleDownDelaySeconds`` (HPA's stabilization, 30 s instead of 300 s), plus a tolerance
  band around the current count. Hence a scale-down never follows a scale-up within the
  window, and noisy load settles on the top of its envelope instead of flapping.
* Scaling to zero needs a truly idle queue (no backlog, nothing in flight) for
  ``scaleToZeroDelaySeconds``; waking from zero needs ``backlog > activationBacklog``.
* Scale-up is refused while the breaker is Open (the workers would not fetch anyway),
  HalfOpen keeps at least one replica for the trial worker, and a pool failing above
  ``maxErrorRateForScaleUp`` does not grow (more workers would just burn the backlog into
  the dead-letter stream faster).
* Optional step limits are measured from the *ready* count, so "at most N replicas starting
  at once" means the same whatever the tick period.
* Unknown backlog (NATS unreachable) holds the current count: never extrapolate a metric.
* A rate-limited pool (``spec.rateLimit``) that already runs tasks at 90 % of its limit does
  not grow: its backlog drains at the limit whatever the replica count.

Pure: :func:`decide` takes the observation, the policy, the clock and :class:`ScalerMemory`
(a handful of numbers the operator keeps in memory; after a restart it is seeded with the
current size, so no scale-down comes before a whole window), and returns a
:class:`ScalingDecision`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from jetpool_protocol.control import BreakerState

# Decision reasons (CamelCase, for status and Events).
SCALE_UP = "ScaleUp"
SCALE_DOWN = "ScaleDown"
SCALE_TO_ZERO = "ScaleToZero"
STEADY = "Steady"
WITHIN_TOLERANCE = "WithinTolerance"
SCALE_DOWN_STABILIZED = "ScaleDownStabilized"
SCALE_TO_ZERO_DELAYED = "ScaleToZeroDelayed"
PAUSED = "Paused"
SCALING_DISABLED = "ScalingDisabled"
METRICS_UNAVAILABLE = "MetricsUnavailable"
# Limit reasons (for the ScalingLimited condition).
TOO_MANY_REPLICAS = "TooManyReplicas"
TOO_FEW_REPLICAS = "TooFewReplicas"
SCALE_UP_LIMITED = "ScaleUpLimited"
ERROR_RATE_DAMPENED = "ErrorRateDampened"
BREAKER_OPEN = "BreakerOpen"
BREAKER_HALF_OPEN = "BreakerHalfOpen"
RATE_LIMITED = "RateLimited"

RATE_BOUND_FRACTION = 0.9
"""A rate-limited pool finishing attempts at this share of its limit is bound by the limit."""


@dataclass(frozen=True)
class ScalingPolicy:
    """Mirrors ``spec.scaling`` (defaults are this module's recommendations)."""

    enabled: bool = True
    """False: a fixed-size pool of ``min_replicas``."""
    min_replicas: int = 0
    max_replicas: int = 10
    target_backlog_per_replica: int = 10
    """Messages (pending + ack-pending) one replica should have; KEDA's lagThreshold."""
    activation_backlog: int = 0
    """From zero replicas, wake only when backlog exceeds this."""
    scale_up_max_step: int | None = None
    """At most this many replicas above the ready count per decision (None: unlimited)."""
    scale_up_max_percent: float | None = None
    """At most this % of the ready count above it (None: unlimited); with both, the larger."""
    scale_down_delay_seconds: float = 30.0
    """Scale down only to the highest recommendation of this window."""
    scale_to_zero_delay_seconds: float = 60.0
    """Idle (no backlog, nothing in flight) this long before going to zero."""
    tolerance: float = 0.1
    """Ignore demand within this fraction of the current capacity."""
    max_error_rate_for_scale_up: float = 0.5
    """Hold scale-up while the window error rate is above this (1 disables the hold)."""
    rate_limit_per_second: float | None = None
    """``spec.rateLimit.perSecond``: hold scale-up once the pool runs tasks at this rate."""

    def __post_init__(self) -> None:
        if not 0 <= self.min_replicas <= self.max_replicas:
            raise ValueError("need 0 <= min_replicas <= max_replicas")
        if self.target_backlog_per_replica < 1 or self.activation_backlog < 0:
            raise ValueError("target_backlog_per_replica must be >= 1, activation_backlog >= 0")
        if self.scale_up_max_step is not None and self.scale_up_max_step < 1:
            raise ValueError("scale_up_max_step must be at least 1")
        if self.scale_up_max_percent is not None and self.scale_up_max_percent <= 0:
            raise ValueError("scale_up_max_percent must be positive")
        if self.scale_down_delay_seconds < 0 or self.scale_to_zero_delay_seconds < 0:
            raise ValueError("delays must not be negative")
        if not 0 <= self.tolerance < 1:
            raise ValueError("tolerance must be in [0, 1)")
        if not 0 <= self.max_error_rate_for_scale_up <= 1:
            raise ValueError("max_error_rate_for_scale_up must be in [0, 1]")


@dataclass(frozen=True)
class ScalingObservation:
    """What the control loop saw on this tick."""

    current_replicas: int
    """The Deployment's spec.replicas (what was last asked for)."""
    ready_replicas: int = 0
    backlog: int | None = 0
    """Consumer ``num_pending + num_ack_pending``; None when it could not be read."""
    in_flight: int = 0
    """Tasks the workers report in flight (guards against a lagging consumer info)."""
    error_rate: float | None = None
    """Window error rate, None when the window holds too few tasks to judge."""
    breaker: BreakerState = BreakerState.CLOSED
    paused: bool = False
    attempt_rate: float | None = None
    """Handler attempts finished per second over the stats window (None: unknown)."""


def backlog_of(num_pending: int, num_ack_pending: int) -> int:
    """The demand metric, as KEDA computes it (kedacore/keda#3809)."""
    return max(0, num_pending) + max(0, num_ack_pending)


@dataclass(frozen=True)
class ScalerMemory:
    """The recommendations that can still matter for scale-down, and when idling began.

    ``recommendations`` is (unix seconds, replicas), newest last, with strictly decreasing
    replicas: an entry that a later, larger-or-equal one outlives can never be the window's
    maximum, so it is dropped. A steady load therefore keeps a single entry.
    """

    recommendations: tuple[tuple[float, int], ...] = ()
    idle_since: float | None = None


@dataclass(frozen=True)
class ScalingDecision:
    replicas: int
    reason: str
    message: str
    limited: bool
    """True when a limit (max, min, step, dampening, breaker) changed the replica count."""
    limited_reason: str
    limited_message: str
    memory: ScalerMemory
    recommendation: int
    """What the backlog alone asked for on this tick (before stabilization and limits)."""


def _remember(
    recs: tuple[tuple[float, int], ...], t: float, rec: int, window: float
) -> tuple[tuple[float, int], ...]:
    kept = [(s, r) for s, r in recs if s > t - window and r > rec and s <= t]
    kept.append((t, rec))
    return tuple(kept)


def recommend(policy: ScalingPolicy, current: int, demand: int) -> tuple[int, bool]:
    """Replicas the demand alone asks for, and whether it fell within the tolerance band."""
    if current == 0:
        if demand <= policy.activation_backlog:
            return 0, False
        return max(1, math.ceil(demand / policy.target_backlog_per_replica)), False
    if demand == 0:
        return 0, False
    ratio = demand / (current * policy.target_backlog_per_replica)
    if abs(ratio - 1) <= policy.tolerance + 1e-9:  # 1e-9: 110/100 - 1 is 0.10000000000000009
        return current, True
    return max(1, math.ceil(demand / policy.target_backlog_per_replica)), False


def _clamp(policy: ScalingPolicy, replicas: int) -> int:
    return min(policy.max_replicas, max(policy.min_replicas, replicas))


def decide(
    policy: ScalingPolicy, obs: ScalingObservation, memory: ScalerMemory, now: datetime
) -> ScalingDecision:
    """Replicas for this tick, with the reason and the memory for the next tick."""
    current = max(0, obs.current_replicas)
    if obs.paused:
        return ScalingDecision(0, PAUSED, "pool is paused", False, "", "", ScalerMemory(), 0)
    if not policy.enabled:
        return ScalingDecision(
            policy.min_replicas,
            SCALING_DISABLED,
            f"autoscaling is disabled; running minReplicas ({policy.min_replicas})",
            False,
            "",
            "",
            ScalerMemory(),
            policy.min_replicas,
        )
    if obs.backlog is None:
        held = _clamp(policy, current)
        return ScalingDecision(
            held,
            METRICS_UNAVAILABLE,
            f"backlog unknown (consumer info unavailable); holding {held} replicas",
            held != current,
            (TOO_MANY_REPLICAS if held < current else TOO_FEW_REPLICAS) if held != current else "",
            f"clamped to [{policy.min_replicas}, {policy.max_replicas}]" if held != current else "",
            memory,
            held,
        )

    t = now.timestamp()
    demand = max(obs.backlog, obs.in_flight, 0)
    rec, within_tolerance = recommend(policy, current, demand)
    recs = _remember(memory.recommendations, t, rec, policy.scale_down_delay_seconds)
    stabilized = recs[0][1]
    idle = demand == 0
    idle_since = (memory.idle_since if memory.idle_since is not None else t) if idle else None
    new_memory = ScalerMemory(recommendations=recs, idle_since=idle_since)

    what = (
        f"backlog {obs.backlog}, in flight {obs.in_flight}, "
        f"{policy.target_backlog_per_replica}/replica -> {rec}"
    )
    limited_reason = ""
    limited_message = ""

    def limit(value: int, reason: str, message: str) -> int:
        nonlocal limited_reason, limited_message
        limited_reason, limited_message = reason, message
        return value

    if rec > current:
        target = rec
    elif stabilized < current:
        target = stabilized
    else:
        target = current

    zero_delayed = False
    if target == 0 and current > 0:
        idle_for = t - idle_since if idle_since is not None else 0.0
        if idle_for < policy.scale_to_zero_delay_seconds:
            target, zero_delayed = 1, True

    if target > current:
        if obs.breaker is BreakerState.OPEN:
            target = limit(current, BREAKER_OPEN, "circuit breaker is Open: no scale-up")
        elif obs.breaker is BreakerState.HALF_OPEN:
            target = limit(
                max(current, 1), BREAKER_HALF_OPEN, "circuit breaker is HalfOpen: trial only"
            )
        elif obs.error_rate is not None and obs.error_rate > policy.max_error_rate_for_scale_up:
            target = limit(
                max(current, 1),
                ERROR_RATE_DAMPENED,
                f"error rate {obs.error_rate:.0%} > {policy.max_error_rate_for_scale_up:.0%}: "
                "not adding workers that would dead-letter the backlog faster",
            )
        elif _rate_bound(policy, obs):
            target = limit(
                max(current, 1),
                RATE_LIMITED,
                f"tasks run at {obs.attempt_rate:.1f}/s against a rate limit of "
                f"{policy.rate_limit_per_second:g}/s: more workers would not start them sooner",
            )
        else:
            cap = _step_cap(policy, current, obs.ready_replicas)
            if cap is not None and target > cap:
                target = limit(
                    cap,
                    SCALE_UP_LIMITED,
                    f"scale-up limited to {cap} ({obs.ready_replicas} ready + step)",
                )
    if obs.breaker is BreakerState.HALF_OPEN and target < 1:
        target = limit(
            1, BREAKER_HALF_OPEN, "circuit breaker is HalfOpen: keeping the trial worker"
        )

    if target > policy.max_replicas:
        target = limit(
            policy.max_replicas, TOO_MANY_REPLICAS, f"capped at maxReplicas {policy.max_replicas}"
        )
    if target < policy.min_replicas:
        target = limit(
            policy.min_replicas, TOO_FEW_REPLICAS, f"raised to minReplicas {policy.min_replicas}"
        )

    if target > current:
        reason, message = SCALE_UP, f"{what}; scaling {current} -> {target}"
    elif target < current:
        reason = SCALE_TO_ZERO if target == 0 else SCALE_DOWN
        message = f"{what}; scaling {current} -> {target}"
    elif limited_reason:
        reason, message = limited_reason, f"{what}; {limited_message}"
    elif zero_delayed:
        reason = SCALE_TO_ZERO_DELAYED
        message = f"idle; scaling to zero after {policy.scale_to_zero_delay_seconds:g}s idle"
    elif rec < current:
        reason = SCALE_DOWN_STABILIZED
        message = (
            f"{what}; holding {current} (highest recommendation of the last "
            f"{policy.scale_down_delay_seconds:g}s)"
        )
    elif within_tolerance:
        reason, message = WITHIN_TOLERANCE, f"{what}; within {policy.tolerance:.0%} of capacity"
    else:
        reason, message = STEADY, f"{what}"

    return ScalingDecision(
        replicas=target,
        reason=reason,
        message=message,
        limited=bool(limited_reason),
        limited_reason=limited_reason,
        limited_message=limited_message,
        memory=new_memory,
        recommendation=rec,
    )


def _rate_bound(policy: ScalingPolicy, obs: ScalingObservation) -> bool:
    limit, rate = policy.rate_limit_per_second, obs.attempt_rate
    return limit is not None and rate is not None and rate >= RATE_BOUND_FRACTION * limit


def _step_cap(policy: ScalingPolicy, current: int, ready: int) -> int | None:
    """Highest count a scale-up may ask for: ready + the larger allowed step (None: no cap)."""
    steps = []
    if policy.scale_up_max_step is not None:
        steps.append(policy.scale_up_max_step)
    if policy.scale_up_max_percent is not None:
        steps.append(max(1, math.ceil(ready * policy.scale_up_max_percent / 100)))
    if not steps:
        return None
    return max(current, max(0, ready) + max(steps))
