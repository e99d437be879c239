"""Stride shares: which lane of a laned pool gets the worker slots that free up."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from jetpool_worker.lanes import StrideShares


def serve(shares: StrideShares, backlogged: list[int], slots: int) -> list[int]:
    """Hand out ``slots`` one at a time to always-backlogged lanes; count who got each."""
    got = [0] * len(backlogged)
    for _ in range(slots):
        asked = shares.allot(1, [i for i, b in enumerate(backlogged) if b], {})
        (lane,) = asked
        shares.taken(lane, 1)
        got[lane] += 1
    return got


def test_under_contention_each_lane_gets_its_weight_share():
    got = serve(StrideShares([6, 3, 1]), [1, 1, 1], 1000)
    assert got == [600, 300, 100]


def test_a_level_back_from_empty_takes_the_next_slot_but_is_owed_no_burst():
    shares = StrideShares([100, 1])
    serve(shares, [0, 1], 50)  # only low had work for a long time
    shares.emptied(0)
    # high comes back: it is served first, then high and low share 100:1 from here on,
    # not 5000 high slots in a row to "catch up"
    got = serve(shares, [1, 1], 202)
    assert got[0] >= 199
    assert got[1] >= 1
    first = shares.allot(1, [0, 1], {})
    assert list(first) == [0]


def test_a_sweep_asks_each_lane_for_its_share_of_the_free_slots_within_caps():
    shares = StrideShares([3, 1, 1])
    asked = shares.allot(8, [0, 1, 2], {2: 1})
    assert sum(asked.values()) == 8
    assert asked[2] == 1
    assert asked[0] > asked[1]


def test_only_candidate_lanes_are_asked():
    assert StrideShares([5, 1]).allot(4, [1], {}) == {1: 4}


def test_nothing_is_asked_beyond_the_caps():
    assert StrideShares([1, 1]).allot(10, [0, 1], {0: 1, 1: 1}) == {0: 1, 1: 1}


@given(
    weights=st.lists(st.integers(1, 50), min_size=1, max_size=6),
    free=st.integers(0, 40),
    data=st.data(),
)
def test_a_sweep_never_asks_for_more_than_the_free_slots(weights, free, data):
    lanes = list(range(len(weights)))
    candidates = data.draw(st.lists(st.sampled_from(lanes), unique=True))
    caps = data.draw(st.dictionaries(st.sampled_from(lanes), st.integers(0, 5)))
    asked = StrideShares(weights).allot(free, candidates, caps)
    assert sum(asked.values()) <= free
    assert set(asked) <= set(candidates)
    assert all(n <= caps.get(i, free) for i, n in asked.items())
    uncapped = sum(caps.get(i, free) for i in candidates)
    assert sum(asked.values()) == min(free, uncapped)


@given(weights=st.lists(st.integers(1, 20), min_size=2, max_size=5))
def test_long_run_shares_match_the_weights_within_one_slot(weights):
    slots = sum(weights) * 20
    got = serve(StrideShares(weights), [1] * len(weights), slots)
    for lane, weight in enumerate(weights):
        assert abs(got[lane] - 20 * weight) <= 1
