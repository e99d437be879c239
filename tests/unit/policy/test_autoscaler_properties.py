"""Properties of the autoscaler over arbitrary observations and load histories."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from jetpool_operator.core.autoscaler import (
    ScalerMemory,
    ScalingObservation,
    ScalingPolicy,
    decide,
)
from jetpool_protocol.control import BreakerState

from .support import at


@st.composite
def policies(draw: st.DrawFn) -> ScalingPolicy:
    low = draw(st.integers(0, 5))
    return ScalingPolicy(
        min_replicas=low,
        max_replicas=draw(st.integers(max(low, 1), 60)),
        target_backlog_per_replica=draw(st.integers(1, 50)),
        activation_backlog=draw(st.integers(0, 20)),
        scale_up_max_step=draw(st.one_of(st.none(), st.integers(1, 10))),
        scale_up_max_percent=draw(st.one_of(st.none(), st.floats(1, 300))),
        scale_down_delay_seconds=draw(st.floats(0, 60)),
        scale_to_zero_delay_seconds=draw(st.floats(0, 120)),
        tolerance=draw(st.floats(0, 0.5)),
        max_error_rate_for_scale_up=draw(st.floats(0, 1)),
    )


@st.composite
def memories(draw: st.DrawFn) -> ScalerMemory:
    recs = draw(st.lists(st.tuples(st.floats(-60, 0), st.integers(0, 80)), max_size=5))
    idle = draw(st.one_of(st.none(), st.floats(-200, 0)))
    base = at(0).timestamp()
    return ScalerMemory(
        recommendations=tuple(sorted((base + t, r) for t, r in recs)),
        idle_since=None if idle is None else base + idle,
    )


observations = st.builds(
    ScalingObservation,
    current_replicas=st.integers(0, 80),
    ready_replicas=st.integers(0, 80),
    backlog=st.integers(0, 5000),
    in_flight=st.integers(0, 100),
    error_rate=st.one_of(st.none(), st.floats(0, 1)),
    breaker=st.sampled_from(list(BreakerState)),
    paused=st.just(False),
)


@given(policies(), observations, memories())
def test_replicas_stay_within_min_and_max_unless_paused(
    policy: ScalingPolicy, obs: ScalingObservation, memory: ScalerMemory
) -> None:
    decision = decide(policy, obs, memory, at(0))
    assert policy.min_replicas <= decision.replicas <= policy.max_replicas


@given(policies(), observations, memories(), st.integers(0, 5000))
def test_more_backlog_never_gives_fewer_replicas(
    policy: ScalingPolicy, obs: ScalingObservation, memory: ScalerMemory, extra: int
) -> None:
    assert obs.backlog is not None
    less = decide(policy, obs, memory, at(0))
    more = decide(policy, replace(obs, backlog=obs.backlog + extra), memory, at(0))
    assert more.replicas >= less.replicas


@given(policies(), observations, memories())
def test_an_open_breaker_never_scales_up(
    policy: ScalingPolicy, obs: ScalingObservation, memory: ScalerMemory
) -> None:
    opened = replace(obs, breaker=BreakerState.OPEN)
    decision = decide(policy, opened, memory, at(0))
    assert decision.replicas <= max(opened.current_replicas, policy.min_replicas)


@given(policies(), observations, memories())
def test_half_open_keeps_a_trial_replica_and_never_grows_beyond_it(
    policy: ScalingPolicy, obs: ScalingObservation, memory: ScalerMemory
) -> None:
    half = replace(obs, breaker=BreakerState.HALF_OPEN)
    decision = decide(policy, half, memory, at(0))
    assert decision.replicas >= 1
    assert decision.replicas <= max(half.current_replicas, 1, policy.min_replicas)


@given(policies(), observations, memories())
def test_a_limited_decision_always_names_its_limit(
    policy: ScalingPolicy, obs: ScalingObservation, memory: ScalerMemory
) -> None:
    decision = decide(policy, obs, memory, at(0))
    assert decision.limited == bool(decision.limited_reason)
    assert decision.reason[:1].isupper()
    assert " " not in decision.reason


@given(
    st.lists(st.tuples(st.floats(0.2, 10), st.integers(0, 2000)), min_size=2, max_size=80),
    st.floats(0, 60),
)
def test_no_scale_down_within_the_delay_after_a_scale_up(
    ticks: list[tuple[float, int]], delay: float
) -> None:
    policy = ScalingPolicy(max_replicas=100, scale_down_delay_seconds=delay)
    memory, current, t = ScalerMemory(), 0, 0.0
    last_up: float | None = None
    for dt, backlog in ticks:
        t += dt
        obs = ScalingObservation(current_replicas=current, ready_replicas=current, backlog=backlog)
        decision = decide(policy, obs, memory, at(t))
        if decision.replicas > current:
            last_up = t
        elif decision.replicas < current and last_up is not None:
            assert t - last_up >= delay - 1e-6  # unix-second floats resolve ~0.2 us
        current, memory = decision.replicas, decision.memory


@given(st.lists(st.tuples(st.floats(0.2, 10), st.integers(0, 2000)), max_size=200))
def test_remembered_recommendations_stay_few_and_strictly_decreasing(
    ticks: list[tuple[float, int]],
) -> None:
    policy = ScalingPolicy(max_replicas=100, scale_down_delay_seconds=300)
    memory, current, t = ScalerMemory(), 0, 0.0
    for dt, backlog in ticks:
        t += dt
        decision = decide(
            policy, ScalingObservation(current_replicas=current, backlog=backlog), memory, at(t)
        )
        current, memory = decision.replicas, decision.memory
        values = [r for _, r in memory.recommendations]
        assert values == sorted(set(values), reverse=True)
        assert len(values) <= 201  # bounded by the distinct recommendations (<= 2000/10 + 1)
