"""Filling batches with a fill timeout (``jetpool_worker.batching.BatchFiller``): full batches
run at once, a partial one when its oldest task has waited the fill timeout, and every task
runs exactly once, in arrival order."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from jetpool_worker.batching import BatchFiller


def test_a_full_batch_runs_as_soon_as_it_is_full() -> None:
    filler: BatchFiller[int] = BatchFiller(max_size=3, fill_timeout=1.0)
    assert filler.add([1, 2], now=0.0) == []
    assert filler.add([3, 4], now=0.2) == [[1, 2, 3]]
    assert filler.held == 1


def test_a_partial_batch_runs_when_its_oldest_task_has_waited_the_fill_timeout() -> None:
    filler: BatchFiller[int] = BatchFiller(max_size=10, fill_timeout=0.5)
    filler.add([1], now=0.0)
    filler.add([2], now=0.3)
    assert filler.due_at() == 0.5
    assert filler.take_due(now=0.4) == []
    assert filler.take_due(now=0.5) == [1, 2]
    assert filler.due_at() is None


def test_without_a_fill_timeout_what_arrives_together_runs_together() -> None:
    filler: BatchFiller[int] = BatchFiller(max_size=4, fill_timeout=None)
    assert filler.add([1, 2, 3, 4, 5, 6], now=0.0) == [[1, 2, 3, 4], [5, 6]]
    assert filler.held == 0


@given(
    st.integers(1, 8),
    st.lists(st.tuples(st.integers(0, 12), st.floats(0, 2)), max_size=30),
)
def test_every_task_runs_once_in_order_in_batches_no_larger_than_the_limit(
    max_size: int, arrivals: list[tuple[int, float]]
) -> None:
    filler: BatchFiller[int] = BatchFiller(max_size=max_size, fill_timeout=0.5)
    now, counter, ran = 0.0, 0, []
    for count, gap in arrivals:
        now += gap
        ran += filler.take_due(now)  # the timer fires before the next arrival is read
        msgs = list(range(counter, counter + count))
        counter += count
        for batch in filler.add(msgs, now):
            assert len(batch) <= max_size
            ran += batch
        due = filler.due_at()
        assert due is None or due >= now  # nothing is held past its time
    ran += filler.take_all()
    assert ran == list(range(counter))
