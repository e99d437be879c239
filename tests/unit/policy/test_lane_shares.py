"""Stride shares: which priority level gets the worker slots that free up."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from jetpool_worker.lanes import PROBE_INTERVAL_SECONDS, StrideShares


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def serve(shares: StrideShares, backlogged: list[bool], slots: int, clock: Clock) -> list[int]:
    """Hand out ``slots`` one at a time as a worker does: ask the askable levels, a level
    with nothing gives nothing and counts as found empty. Counts who started each task."""
    got = [0] * len(backlogged)
    for _ in range(slots):
        clock.now += 0.01
        candidates = shares.askable(range(len(backlogged)))
        while candidates:
            asked = shares.allot(1, candidates)
            (level,) = asked
            if backlogged[level]:
                shares.taken(level, 1)
                got[level] += 1
                break
            shares.emptied(level)
            candidates.remove(level)
    return got


def test_under_contention_each_level_gets_its_weight_share():
    clock = Clock()
    got = serve(StrideShares([6, 3, 1], clock), [True, True, True], 1000, clock)
    assert got == [600, 300, 100]


def test_a_level_back_from_empty_takes_the_next_slot_but_is_owed_no_burst():
    clock = Clock()
    shares = StrideShares([100, 1], clock)
    serve(shares, [False, True], 50, clock)  # only low had work for a while
    got = serve(shares, [True, True], 202, clock)  # high comes back
    assert got[0] >= 199  # 100:1 from here on, not a catch-up burst either way
    assert got[1] >= 1


def test_a_level_found_empty_is_tried_again_while_another_keeps_every_slot_busy():
    clock = Clock()
    shares = StrideShares([9, 1], clock)
    serve(shares, [True, False], 100, clock)  # low empty: found so, high busy
    got = serve(shares, [True, True], 1000, clock)  # low's backlog arrives, one slot at a time
    assert 80 <= got[1] <= 120  # its 10 %, not 0


def test_a_lead_from_running_alone_is_not_kept_over_an_idle_pool():
    clock = Clock()
    shares = StrideShares([9, 1], clock)
    serve(shares, [True, False], 900, clock)  # high ran alone for a long time
    serve(shares, [False, False], 5, clock)  # then nothing anywhere
    got = serve(shares, [True, True], 10, clock)
    assert got[0] >= 8  # high first again, at 9:1, not low catching up


def test_an_empty_level_is_swept_at_most_once_per_probe_interval():
    clock = Clock()
    shares = StrideShares([1, 1], clock)
    shares.emptied(1)
    assert shares.askable([0, 1]) == [0]  # 1 was just found empty
    clock.now += PROBE_INTERVAL_SECONDS
    assert shares.askable([0, 1]) == [0, 1]


def test_a_sweep_asks_each_level_for_its_share_of_the_free_slots():
    shares = StrideShares([3, 1, 1])
    for level in range(3):
        shares.taken(level, 1)
    asked = shares.allot(10, [0, 1, 2])
    assert sum(asked.values()) == 10
    assert asked[0] > asked[1]


def test_only_candidate_levels_are_asked():
    assert StrideShares([5, 1]).allot(4, [1]) == {1: 4}


@given(
    weights=st.lists(st.integers(1, 50), min_size=1, max_size=6),
    free=st.integers(0, 40),
    data=st.data(),
)
def test_a_sweep_asks_for_exactly_the_free_slots_and_only_candidates(weights, free, data):
    levels = list(range(len(weights)))
    candidates = data.draw(st.lists(st.sampled_from(levels), unique=True))
    asked = StrideShares(weights).allot(free, candidates)
    assert set(asked) <= set(candidates)
    assert sum(asked.values()) == (free if candidates else 0)


@given(weights=st.lists(st.integers(1, 20), min_size=2, max_size=5))
def test_long_run_shares_match_the_weights_within_one_slot(weights):
    slots = sum(weights) * 20
    clock = Clock()
    got = serve(StrideShares(weights, clock), [True] * len(weights), slots, clock)
    for level, weight in enumerate(weights):
        assert abs(got[level] - 20 * weight) <= 1
