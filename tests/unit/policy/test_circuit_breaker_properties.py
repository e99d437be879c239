"""Properties of the breaker that hold for any sequence of observations."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import given
from hypothesis import strategies as st

from jetpool_operator.core.circuit_breaker import (
    MANUAL_RESET,
    Breaker,
    BreakerConfig,
    BreakerObservation,
    step,
)
from jetpool_protocol.control import BreakerState

from .support import at

CONFIG = BreakerConfig(min_tasks=5, open_seconds=10, half_open_tasks=2)

observations = st.builds(
    BreakerObservation,
    succeeded=st.integers(0, 30),
    failed=st.integers(0, 30),
    trial_succeeded=st.integers(0, 3),
    trial_failed=st.integers(0, 1),
    live_workers=st.lists(st.sampled_from(["w-a", "w-b", "w-c"]), max_size=3),
    reset_token=st.one_of(st.none(), st.sampled_from(["t1", "t2", ""])),
)
ticks = st.lists(st.tuples(st.floats(0.1, 8.0), observations), max_size=40)

ALLOWED = {
    (BreakerState.CLOSED, BreakerState.OPEN),
    (BreakerState.OPEN, BreakerState.HALF_OPEN),
    (BreakerState.OPEN, BreakerState.CLOSED),
    (BreakerState.HALF_OPEN, BreakerState.OPEN),
    (BreakerState.HALF_OPEN, BreakerState.CLOSED),
}


def replay(sequence: list[tuple[float, BreakerObservation]]) -> list[tuple[float, Breaker, str]]:
    """(time, state after the tick, transition reason or '') for every tick."""
    breaker, t, out = Breaker(), 0.0, []
    for dt, obs in sequence:
        t += dt
        result = step(breaker, obs, at(t), CONFIG)
        out.append((t, result.breaker, result.transition.reason if result.transition else ""))
        breaker = result.breaker
    return out


@given(ticks)
def test_only_legal_transitions_happen_and_never_closed_to_half_open(
    sequence: list[tuple[float, BreakerObservation]],
) -> None:
    before = Breaker()
    for _, after, _ in replay(sequence):
        if after.state is not before.state:
            assert (before.state, after.state) in ALLOWED
        before = after


@given(ticks)
def test_trips_only_increase_and_epoch_counts_transitions(
    sequence: list[tuple[float, BreakerObservation]],
) -> None:
    before = Breaker()
    for t, after, reason in replay(sequence):
        assert after.trips >= before.trips
        if reason:
            assert after.epoch == before.epoch + 1
            assert after.since == at(t)
        else:
            assert (after.epoch, after.state, after.since) == (
                before.epoch,
                before.state,
                before.since,
            )
        before = after


@given(ticks)
def test_open_lasts_at_least_open_seconds_unless_reset_by_hand(
    sequence: list[tuple[float, BreakerObservation]],
) -> None:
    before = Breaker()
    for t, after, reason in replay(sequence):
        left_open = before.state is BreakerState.OPEN and after.state is not BreakerState.OPEN
        if left_open and reason != MANUAL_RESET:
            assert before.since is not None
            assert at(t) - before.since >= timedelta(seconds=CONFIG.open_seconds)
        before = after


@given(ticks)
def test_only_a_half_open_breaker_names_a_trial_worker(
    sequence: list[tuple[float, BreakerObservation]],
) -> None:
    for _, after, _ in replay(sequence):
        if after.state is not BreakerState.HALF_OPEN:
            assert after.trial_worker is None


@given(ticks)
def test_a_reset_needs_a_token_other_than_the_last_honoured_one(
    sequence: list[tuple[float, BreakerObservation]],
) -> None:
    before = Breaker()
    for _, after, reason in replay(sequence):
        if reason == MANUAL_RESET:
            assert after.last_reset_token not in (None, before.last_reset_token)
        before = after
