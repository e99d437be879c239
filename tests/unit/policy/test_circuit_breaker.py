"""The circuit breaker state machine over a fake clock."""

from __future__ import annotations

import json

import pytest

from jetpool_operator.core.circuit_breaker import (
    Breaker,
    BreakerConfig,
    BreakerObservation,
    control_state,
    observe,
    step,
)
from jetpool_operator.core.worker_stats import StatsConfig, StatsMemory, aggregate
from jetpool_protocol.control import BreakerState

from .support import at, snapshot

CONFIG = BreakerConfig(
    error_rate_threshold=0.5, min_tasks=10, window_seconds=30, open_seconds=20, half_open_tasks=3
)
QUIET = BreakerObservation(live_workers=("w-b", "w-a"))
FAILING = BreakerObservation(succeeded=5, failed=5, live_workers=("w-b", "w-a"))


def opened(t: float = 0) -> Breaker:
    return step(Breaker(), FAILING, at(t), CONFIG).breaker


def half_opened(t: float = 0) -> Breaker:
    return step(opened(t), QUIET, at(t + CONFIG.open_seconds), CONFIG).breaker


class TestClosed:
    def test_error_rate_at_threshold_with_enough_tasks_opens_the_breaker(self) -> None:
        result = step(Breaker(), FAILING, at(0), CONFIG)
        assert result.breaker.state is BreakerState.OPEN
        assert result.breaker.trips == 1
        assert result.breaker.epoch == 1
        assert result.breaker.since == at(0)
        assert result.transition is not None
        assert (result.transition.from_state, result.transition.to_state) == (
            BreakerState.CLOSED,
            BreakerState.OPEN,
        )
        assert result.transition.reason == "ErrorRateExceeded"
        assert "5 of 10" in result.transition.message

    def test_a_high_error_rate_on_fewer_than_min_tasks_does_not_open(self) -> None:
        obs = BreakerObservation(succeeded=0, failed=9)
        result = step(Breaker(), obs, at(0), CONFIG)
        assert result.breaker == Breaker()
        assert result.transition is None

    def test_an_error_rate_just_below_threshold_does_not_open(self) -> None:
        obs = BreakerObservation(succeeded=11, failed=10)
        assert step(Breaker(), obs, at(0), CONFIG).breaker.state is BreakerState.CLOSED

    def test_a_disabled_breaker_never_opens(self) -> None:
        config = BreakerConfig(enabled=False)
        obs = BreakerObservation(failed=1000)
        assert step(Breaker(), obs, at(0), config).transition is None


class TestOpen:
    def test_open_holds_until_open_seconds_have_passed(self) -> None:
        breaker = opened()
        result = step(breaker, QUIET, at(CONFIG.open_seconds - 0.001), CONFIG)
        assert result.breaker is breaker
        assert result.transition is None

    def test_after_open_seconds_the_smallest_live_worker_gets_the_trial(self) -> None:
        result = step(opened(), QUIET, at(CONFIG.open_seconds), CONFIG)
        assert result.breaker.state is BreakerState.HALF_OPEN
        assert result.breaker.trial_worker == "w-a"
        assert result.breaker.epoch == 2
        assert result.transition is not None
        assert result.transition.reason == "TrialStarted"

    def test_half_open_without_live_workers_picks_the_first_to_report(self) -> None:
        breaker = step(opened(), BreakerObservation(), at(20), CONFIG).breaker
        assert breaker.trial_worker is None
        later = step(breaker, BreakerObservation(live_workers=("w-z",)), at(21), CONFIG)
        assert later.breaker.trial_worker == "w-z"
        assert later.transition is None
        assert later.breaker.epoch == breaker.epoch


class TestHalfOpen:
    def test_enough_trial_successes_close_the_breaker(self) -> None:
        obs = BreakerObservation(trial_succeeded=3, live_workers=("w-a",))
        result = step(half_opened(), obs, at(30), CONFIG)
        assert result.breaker.state is BreakerState.CLOSED
        assert result.breaker.trial_worker is None
        assert result.transition is not None
        assert result.transition.reason == "TrialSucceeded"

    def test_too_few_trial_successes_keep_it_half_open(self) -> None:
        obs = BreakerObservation(trial_succeeded=2, live_workers=("w-a",))
        breaker = half_opened()
        assert step(breaker, obs, at(30), CONFIG).breaker is breaker

    def test_any_trial_failure_reopens_by_default(self) -> None:
        obs = BreakerObservation(trial_succeeded=2, trial_failed=1, live_workers=("w-a",))
        result = step(half_opened(), obs, at(30), CONFIG)
        assert result.breaker.state is BreakerState.OPEN
        assert result.breaker.trips == 2
        assert result.breaker.since == at(30)
        assert result.transition is not None
        assert result.transition.reason == "TrialFailed"

    def test_a_failure_ratio_tolerates_that_share_of_failed_trials(self) -> None:
        config = BreakerConfig(half_open_tasks=10, half_open_failure_ratio=0.2, open_seconds=0)
        tripped = step(Breaker(), BreakerObservation(failed=100), at(0), config).breaker
        breaker = step(tripped, QUIET, at(0), config).breaker
        tolerated = BreakerObservation(trial_succeeded=10, trial_failed=2)
        assert step(breaker, tolerated, at(1), config).breaker.state is BreakerState.CLOSED
        too_many = BreakerObservation(trial_succeeded=10, trial_failed=3)
        assert step(breaker, too_many, at(1), config).breaker.state is BreakerState.OPEN

    def test_a_trial_worker_that_disappears_is_replaced_without_a_new_epoch(self) -> None:
        breaker = half_opened()
        result = step(breaker, BreakerObservation(live_workers=("w-c",)), at(30), CONFIG)
        assert result.breaker.trial_worker == "w-c"
        assert result.breaker.epoch == breaker.epoch

    def test_disabling_the_breaker_closes_it(self) -> None:
        result = step(half_opened(), QUIET, at(30), BreakerConfig(enabled=False))
        assert result.breaker.state is BreakerState.CLOSED
        assert result.transition is not None
        assert result.transition.reason == "BreakerDisabled"


class TestManualReset:
    def test_a_new_token_closes_an_open_breaker(self) -> None:
        obs = BreakerObservation(reset_token="2026-01-01T00:00:05Z")
        result = step(opened(), obs, at(5), CONFIG)
        assert result.breaker.state is BreakerState.CLOSED
        assert result.breaker.last_reset_token == "2026-01-01T00:00:05Z"
        assert result.transition is not None
        assert result.transition.reason == "ManualReset"

    def test_the_same_token_resets_only_once(self) -> None:
        reset = BreakerObservation(succeeded=5, failed=5, reset_token="t1")
        breaker = step(opened(), reset, at(5), CONFIG).breaker
        tripped_again = step(breaker, reset, at(6), CONFIG).breaker
        assert tripped_again.state is BreakerState.OPEN
        assert step(tripped_again, reset, at(7), CONFIG).breaker.state is BreakerState.OPEN

    def test_a_token_seen_while_closed_is_remembered_and_cannot_reset_a_later_trip(self) -> None:
        token = BreakerObservation(reset_token="t1")
        breaker = step(Breaker(), token, at(0), CONFIG).breaker
        assert breaker.last_reset_token == "t1"
        assert breaker.state is BreakerState.CLOSED
        tripped = step(breaker, FAILING, at(1), CONFIG).breaker
        still = step(tripped, BreakerObservation(reset_token="t1"), at(2), CONFIG)
        assert still.breaker.state is BreakerState.OPEN

    def test_an_empty_annotation_value_is_no_reset(self) -> None:
        breaker = opened()
        assert step(breaker, BreakerObservation(reset_token=""), at(1), CONFIG).breaker is breaker


class TestControlState:
    def test_half_open_names_the_trial_worker_and_its_budget(self) -> None:
        control = control_state(half_opened(), CONFIG)
        assert control.breaker is BreakerState.HALF_OPEN
        assert control.trial_worker == "w-a"
        assert control.trial_tasks == CONFIG.half_open_tasks
        assert control.may_fetch("w-a")
        assert not control.may_fetch("w-b")

    def test_open_lets_nobody_fetch(self) -> None:
        breaker = opened()
        control = control_state(breaker, CONFIG)
        assert (control.epoch, control.since, control.reason) == (1, at(0), "ErrorRateExceeded")
        assert control.trial_worker is None
        assert not control.may_fetch("w-a")

    def test_the_trial_budget_covers_tolerated_failures(self) -> None:
        config = BreakerConfig(half_open_tasks=10, half_open_failure_ratio=0.3)
        assert config.trial_tasks == 13


class TestObserveFromStats:
    def test_the_failures_that_tripped_the_breaker_do_not_count_after_it_closes(self) -> None:
        stats_config = StatsConfig(window_seconds=30)
        memory = StatsMemory()
        _, memory = aggregate(memory, [snapshot("w-a", 0)], at(0), stats_config)
        stats, memory = aggregate(
            memory, [snapshot("w-a", 1, succeeded=5, failed=20)], at(1), stats_config
        )
        breaker = step(Breaker(), observe(Breaker(), memory, stats, at(1), CONFIG), at(1), CONFIG)
        assert breaker.breaker.state is BreakerState.OPEN
        reset = observe(breaker.breaker, memory, stats, at(2), CONFIG, reset_token="go")
        closed = step(breaker.breaker, reset, at(2), CONFIG).breaker
        assert closed.state is BreakerState.CLOSED
        stats, memory = aggregate(
            memory, [snapshot("w-a", 5, succeeded=6, failed=20)], at(5), stats_config
        )
        obs = observe(closed, memory, stats, at(5), CONFIG)
        assert (obs.succeeded, obs.failed) == (1, 0)
        assert step(closed, obs, at(5), CONFIG).breaker.state is BreakerState.CLOSED

    def test_failures_reported_just_after_a_reset_do_not_trip_it_again(self) -> None:
        # Workers report every second, so the first snapshot after a manual reset still
        # carries failures from before it.
        stats_config = StatsConfig(window_seconds=30)
        memory = StatsMemory()
        _, memory = aggregate(memory, [snapshot("w-a", 0)], at(0), stats_config)
        stats, memory = aggregate(
            memory, [snapshot("w-a", 1, succeeded=5, failed=20)], at(1), stats_config
        )
        opened = step(Breaker(), observe(Breaker(), memory, stats, at(1), CONFIG), at(1), CONFIG)
        reset = observe(opened.breaker, memory, stats, at(2), CONFIG, reset_token="go")
        closed = step(opened.breaker, reset, at(2), CONFIG).breaker
        stats, memory = aggregate(
            memory, [snapshot("w-a", 3, succeeded=5, failed=60)], at(3), stats_config
        )
        obs = observe(closed, memory, stats, at(3), CONFIG)
        assert step(closed, obs, at(3), CONFIG).breaker.state is BreakerState.CLOSED

    def test_trial_results_reach_the_breaker_through_the_stats(self) -> None:
        breaker = half_opened()
        snaps = [snapshot("w-a", 25, epoch=breaker.epoch, trial_succeeded=3)]
        stats, memory = aggregate(StatsMemory(), snaps, at(25), StatsConfig(), epoch=breaker.epoch)
        obs = observe(breaker, memory, stats, at(25), CONFIG)
        assert step(breaker, obs, at(25), CONFIG).breaker.state is BreakerState.CLOSED


def test_breaker_survives_a_json_round_trip() -> None:
    breaker = step(half_opened(), BreakerObservation(reset_token="x"), at(40), CONFIG).breaker
    assert Breaker.from_dict(json.loads(json.dumps(breaker.to_dict()))) == breaker


def test_missing_breaker_status_reads_as_closed() -> None:
    assert Breaker.from_dict(None) == Breaker()
    assert Breaker.from_dict({"state": "Sideways"}) == Breaker()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"error_rate_threshold": 0},
        {"error_rate_threshold": 1.5},
        {"min_tasks": 0},
        {"half_open_tasks": 0},
        {"window_seconds": 0},
        {"half_open_failure_ratio": 1},
    ],
)
def test_nonsense_config_is_rejected(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must"):
        BreakerConfig(**kwargs)  # type: ignore[arg-type]
