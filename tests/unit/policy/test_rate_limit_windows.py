"""The rate limit's window arithmetic (``jetpool_worker.rate_limit.WindowLimit``): whatever
order and sizes the workers' requests come in, a window never grants more than its burst, and
it grants every permit it has while asked."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jetpool_worker.rate_limit import WindowLimit


def test_a_window_lasts_burst_over_rate_seconds_and_is_numbered_from_the_epoch():
    limit = WindowLimit(per_second=50, burst=5)
    assert limit.window_seconds == pytest.approx(0.1)
    assert limit.window(1000.05) == 10000
    assert limit.window_ends_at(10000) == pytest.approx(1000.1)


def test_the_first_request_of_a_window_gets_what_it_asks_up_to_the_burst():
    limit = WindowLimit(per_second=50, burst=5)
    assert limit.granted(asked=3, total=3) == 3
    assert limit.granted(asked=8, total=8) == 5


def test_a_later_request_gets_what_is_left_and_a_spent_window_grants_nothing():
    limit = WindowLimit(per_second=50, burst=5)
    assert limit.granted(asked=4, total=7) == 2  # 3 were taken before it
    assert limit.granted(asked=4, total=11) == 0


@given(st.integers(1, 50), st.lists(st.integers(1, 40), max_size=30))
def test_the_grants_of_a_window_never_exceed_its_burst_and_use_it_up_while_asked(
    burst: int, requests: list[int]
) -> None:
    limit = WindowLimit(per_second=10, burst=burst)
    total = granted = 0
    for asked in requests:
        total += asked  # the counter adds every request, granted or not
        granted += limit.granted(asked, total)
    assert granted == min(burst, sum(requests))
