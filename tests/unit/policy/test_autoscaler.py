"""Replica decisions of the autoscaler, one behaviour at a time."""

from __future__ import annotations

from dataclasses import replace

import pytest

from jetpool_operator.core.autoscaler import (
    ScalerMemory,
    ScalingDecision,
    ScalingObservation,
    ScalingPolicy,
    backlog_of,
    decide,
)
from jetpool_protocol.control import BreakerState

from .support import at

POLICY = ScalingPolicy(
    min_replicas=0,
    max_replicas=50,
    target_backlog_per_replica=10,
    scale_down_delay_seconds=30,
    scale_to_zero_delay_seconds=60,
)


def obs(current: int, backlog: int | None, **kwargs: object) -> ScalingObservation:
    kwargs.setdefault("ready_replicas", current)
    return ScalingObservation(current_replicas=current, backlog=backlog, **kwargs)  # type: ignore[arg-type]


def drive(
    policy: ScalingPolicy, backlogs: list[tuple[float, int]], current: int = 0
) -> list[ScalingDecision]:
    """Feed (time, backlog) ticks, applying each decision as the next current count."""
    memory, out = ScalerMemory(), []
    for t, backlog in backlogs:
        decision = decide(policy, obs(current, backlog), memory, at(t))
        out.append(decision)
        current, memory = decision.replicas, decision.memory
    return out


class TestScaleUp:
    def test_a_burst_is_met_in_one_step_on_the_first_tick(self) -> None:
        decision = decide(POLICY, obs(0, 320), ScalerMemory(), at(0))
        assert decision.replicas == 32
        assert decision.reason == "ScaleUp"
        assert not decision.limited

    def test_the_demand_is_pending_plus_ack_pending(self) -> None:
        assert backlog_of(num_pending=25, num_ack_pending=15) == 40

    def test_in_flight_counts_when_consumer_info_lags_behind(self) -> None:
        assert decide(POLICY, obs(1, 0, in_flight=45), ScalerMemory(), at(0)).replicas == 5

    def test_a_zero_pool_wakes_only_above_the_activation_backlog(self) -> None:
        policy = replace(POLICY, activation_backlog=50)
        assert decide(policy, obs(0, 50), ScalerMemory(), at(0)).replicas == 0
        assert decide(policy, obs(0, 51), ScalerMemory(), at(0)).replicas == 6

    def test_an_awake_pool_keeps_working_below_the_activation_backlog(self) -> None:
        policy = replace(POLICY, activation_backlog=50)
        assert decide(policy, obs(3, 12), ScalerMemory(), at(0)).replicas >= 2

    def test_the_step_limit_counts_from_ready_replicas(self) -> None:
        policy = replace(POLICY, scale_up_max_step=4)
        decision = decide(policy, obs(6, 320, ready_replicas=2), ScalerMemory(), at(0))
        assert decision.replicas == 6  # 2 ready + 4: nothing more until pods become ready
        decision = decide(policy, obs(6, 320, ready_replicas=6), ScalerMemory(), at(1))
        assert decision.replicas == 10
        assert decision.limited
        assert decision.limited_reason == "ScaleUpLimited"

    def test_with_both_step_limits_the_larger_step_wins(self) -> None:
        policy = replace(POLICY, scale_up_max_step=4, scale_up_max_percent=100)
        assert decide(policy, obs(10, 500, ready_replicas=10), ScalerMemory(), at(0)).replicas == 20
        assert decide(policy, obs(2, 500, ready_replicas=2), ScalerMemory(), at(0)).replicas == 6

    def test_a_percent_limit_still_wakes_a_pool_from_zero(self) -> None:
        policy = replace(POLICY, scale_up_max_percent=50)
        assert decide(policy, obs(0, 500), ScalerMemory(), at(0)).replicas == 1

    def test_max_replicas_caps_the_count_and_says_so(self) -> None:
        decision = decide(POLICY, obs(10, 5000), ScalerMemory(), at(0))
        assert decision.replicas == 50
        assert (decision.limited, decision.limited_reason) == (True, "TooManyReplicas")


class TestScaleDown:
    def test_scale_down_waits_for_the_stabilization_window(self) -> None:
        decisions = drive(POLICY, [(0, 200)] + [(float(t), 50) for t in range(1, 32)])
        replicas = [d.replicas for d in decisions]
        assert replicas[0] == 20
        assert set(replicas[1:30]) == {20}
        assert decisions[1].reason == "ScaleDownStabilized"
        assert replicas[30] == 5  # 30 s after the last recommendation of 20

    def test_scale_down_goes_to_the_highest_recommendation_of_the_window(self) -> None:
        ticks = [(0.0, 200), (10.0, 120), (20.0, 80)] + [(float(t), 10) for t in range(21, 52)]
        replicas = {t: d.replicas for (t, _), d in zip(ticks, drive(POLICY, ticks), strict=True)}
        assert replicas[29.0] == 20
        assert replicas[30.0] == 12
        assert replicas[40.0] == 8
        assert replicas[50.0] == 1

    def test_demand_within_tolerance_of_capacity_changes_nothing(self) -> None:
        for backlog in (91, 100, 110):
            decision = decide(POLICY, obs(10, backlog), ScalerMemory(), at(0))
            assert decision.replicas == 10
            assert decision.reason == "WithinTolerance"
        assert decide(POLICY, obs(10, 111), ScalerMemory(), at(0)).replicas == 12

    def test_an_idle_pool_goes_to_zero_only_after_the_idle_delay(self) -> None:
        decisions = drive(POLICY, [(0.0, 30)] + [(float(t), 0) for t in range(1, 62)])
        replicas = [d.replicas for d in decisions]
        assert replicas[0] == 3
        assert set(replicas[31:61]) == {1}
        assert decisions[31].reason == "ScaleToZeroDelayed"
        assert replicas[61] == 0
        assert decisions[61].reason == "ScaleToZero"

    def test_tasks_in_flight_keep_a_pool_from_idling(self) -> None:
        memory = ScalerMemory()
        for t in range(0, 200, 10):
            decision = decide(POLICY, obs(1, 0, in_flight=1), memory, at(t))
            memory = decision.memory
            assert decision.replicas == 1

    def test_min_replicas_holds_an_idle_pool_up(self) -> None:
        policy = replace(POLICY, min_replicas=2)
        decision = decide(policy, obs(2, 0), ScalerMemory(idle_since=at(0).timestamp()), at(999))
        assert decision.replicas == 2
        assert (decision.limited, decision.limited_reason) == (True, "TooFewReplicas")

    def test_a_steady_load_keeps_a_single_remembered_recommendation(self) -> None:
        decisions = drive(POLICY, [(float(t), 100) for t in range(100)])
        assert len(decisions[-1].memory.recommendations) == 1


class TestBreakerAndErrors:
    def test_no_scale_up_while_the_breaker_is_open(self) -> None:
        decision = decide(POLICY, obs(2, 500, breaker=BreakerState.OPEN), ScalerMemory(), at(0))
        assert decision.replicas == 2
        assert (decision.limited, decision.reason) == (True, "BreakerOpen")

    def test_an_open_breaker_keeps_a_zero_pool_at_zero(self) -> None:
        decision = decide(POLICY, obs(0, 500, breaker=BreakerState.OPEN), ScalerMemory(), at(0))
        assert decision.replicas == 0

    def test_half_open_keeps_one_replica_for_the_trial_worker(self) -> None:
        decision = decide(POLICY, obs(0, 0, breaker=BreakerState.HALF_OPEN), ScalerMemory(), at(0))
        assert decision.replicas == 1
        assert decision.limited_reason == "BreakerHalfOpen"

    def test_half_open_does_not_scale_up_beyond_the_current_count(self) -> None:
        half_open = obs(3, 500, breaker=BreakerState.HALF_OPEN)
        assert decide(POLICY, half_open, ScalerMemory(), at(0)).replicas == 3

    def test_a_failing_pool_does_not_grow(self) -> None:
        decision = decide(POLICY, obs(4, 500, error_rate=0.8), ScalerMemory(), at(0))
        assert decision.replicas == 4
        assert decision.reason == "ErrorRateDampened"

    def test_a_failing_pool_may_still_wake_one_replica(self) -> None:
        assert decide(POLICY, obs(0, 500, error_rate=0.9), ScalerMemory(), at(0)).replicas == 1

    def test_an_error_rate_at_the_limit_or_unknown_does_not_hold_back(self) -> None:
        assert decide(POLICY, obs(4, 500, error_rate=0.5), ScalerMemory(), at(0)).replicas == 50
        assert decide(POLICY, obs(4, 500, error_rate=None), ScalerMemory(), at(0)).replicas == 50

    def test_a_limit_of_one_switches_the_hold_off(self) -> None:
        policy = replace(POLICY, max_error_rate_for_scale_up=1.0)
        assert decide(policy, obs(4, 500, error_rate=1.0), ScalerMemory(), at(0)).replicas == 50

    def test_a_failing_pool_still_scales_down(self) -> None:
        memory = ScalerMemory(recommendations=((at(0).timestamp(), 4),))
        decision = decide(POLICY, obs(4, 10, error_rate=0.9), memory, at(31))
        assert decision.replicas == 1


class TestRateLimit:
    LIMITED = replace(POLICY, rate_limit_per_second=50)

    def test_a_pool_running_at_its_rate_limit_does_not_grow(self) -> None:
        decision = decide(self.LIMITED, obs(4, 900, attempt_rate=48.0), ScalerMemory(), at(0))
        assert decision.replicas == 4
        assert decision.limited_reason == "RateLimited"

    def test_a_pool_below_its_rate_limit_grows_as_usual(self) -> None:
        decision = decide(self.LIMITED, obs(4, 900, attempt_rate=20.0), ScalerMemory(), at(0))
        assert decision.replicas == 50

    def test_a_rate_limited_pool_with_no_rate_measured_yet_grows(self) -> None:
        assert decide(self.LIMITED, obs(0, 900), ScalerMemory(), at(0)).replicas == 50


class TestModes:
    def test_a_paused_pool_has_no_replicas(self) -> None:
        decision = decide(POLICY, obs(7, 500, paused=True), ScalerMemory(), at(0))
        assert (decision.replicas, decision.reason, decision.limited) == (0, "Paused", False)

    def test_disabled_scaling_runs_a_fixed_pool_of_min_replicas(self) -> None:
        policy = replace(POLICY, enabled=False, min_replicas=3)
        for backlog in (0, 500):
            decision = decide(policy, obs(7, backlog), ScalerMemory(), at(0))
            assert (decision.replicas, decision.reason) == (3, "ScalingDisabled")

    def test_unknown_backlog_holds_the_current_count(self) -> None:
        memory = ScalerMemory(recommendations=((at(0).timestamp(), 9),))
        decision = decide(POLICY, obs(9, None), memory, at(100))
        assert (decision.replicas, decision.reason) == (9, "MetricsUnavailable")
        assert decision.memory == memory


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min_replicas": 5, "max_replicas": 4},
        {"min_replicas": -1},
        {"target_backlog_per_replica": 0},
        {"scale_up_max_step": 0},
        {"scale_up_max_percent": 0},
        {"tolerance": 1.0},
        {"max_error_rate_for_scale_up": 1.5},
        {"scale_down_delay_seconds": -1},
    ],
)
def test_nonsense_policy_is_rejected(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=r"must|need"):
        ScalingPolicy(**kwargs)  # type: ignore[arg-type]
