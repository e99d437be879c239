"""Batched observation: what a stream listing can stand in for, and when a pool may sleep."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jetpool_operator.core.observation import (
    Activity,
    ObservationMode,
    PoolStreams,
    StreamState,
    needs_consumer_info,
    quiescent,
    resources_listed,
    should_wake,
)

EMPTY = StreamState(messages=0, last_sequence=41, consumers=1)
BUSY = StreamState(messages=3, last_sequence=44, consumers=1)
STATES = st.builds(
    StreamState,
    st.integers(0, 3),
    st.integers(0, 3),
    st.integers(0, 2),
)
STREAMS = st.builds(PoolStreams, st.none() | STATES, st.none() | STATES)
IDLE = Activity(
    backlog=0,
    in_flight=0,
    desired_replicas=1,
    current_replicas=1,
    ready_replicas=1,
    floor_replicas=1,
    breaker_closed=True,
    healthy=True,
    trouble=False,
)


class TestWhatTheListingStandsFor:
    def test_an_empty_task_stream_needs_no_consumer_request(self) -> None:
        assert not needs_consumer_info(PoolStreams(EMPTY, EMPTY))

    def test_a_stream_with_messages_asks_its_consumer(self) -> None:
        assert needs_consumer_info(PoolStreams(BUSY, EMPTY))

    def test_no_listing_or_a_missing_stream_asks_its_consumer(self) -> None:
        assert needs_consumer_info(None)
        assert needs_consumer_info(PoolStreams(None, EMPTY))

    def test_a_deleted_stream_or_consumer_is_noticed(self) -> None:
        assert resources_listed(PoolStreams(EMPTY, EMPTY))
        assert not resources_listed(PoolStreams(None, EMPTY))
        assert not resources_listed(PoolStreams(EMPTY, None))
        assert not resources_listed(PoolStreams(dataclasses.replace(EMPTY, consumers=0), EMPTY))


class TestWaking:
    def test_the_first_task_wakes_a_sleeping_pool(self) -> None:
        assert should_wake(PoolStreams(EMPTY, EMPTY), PoolStreams(BUSY, EMPTY))

    def test_a_task_that_came_and_went_between_listings_wakes_it_too(self) -> None:
        gone = dataclasses.replace(EMPTY, last_sequence=42)
        assert should_wake(PoolStreams(EMPTY, EMPTY), PoolStreams(gone, EMPTY))

    def test_a_pool_that_read_no_listing_is_not_asleep_on_one(self) -> None:
        assert not should_wake(None, PoolStreams(BUSY, EMPTY))

    @given(STREAMS, STREAMS)
    def test_a_pool_wakes_exactly_when_its_streams_changed(
        self, before: PoolStreams, after: PoolStreams
    ) -> None:
        assert should_wake(before, after) == (before != after)


class TestQuiescence:
    def test_a_pool_at_its_floor_with_nothing_to_do_is_quiescent(self) -> None:
        assert quiescent(IDLE)

    @pytest.mark.parametrize(
        "change",
        [
            {"backlog": 1},
            {"backlog": None},
            {"in_flight": 1},
            {"desired_replicas": 2},
            {"current_replicas": 2},
            {"ready_replicas": 0},
            {"floor_replicas": 0},
            {"breaker_closed": False},
            {"healthy": False},
            {"trouble": True},
            {"listed": False},
        ],
        ids=lambda c: next(iter(c)),
    )
    def test_anything_left_to_do_or_to_wait_for_keeps_the_pool_awake(
        self, change: dict[str, object]
    ) -> None:
        assert not quiescent(dataclasses.replace(IDLE, **change))  # type: ignore[arg-type]


class TestMode:
    def test_batched_is_the_default(self) -> None:
        assert ObservationMode.from_env({}) is ObservationMode.BATCHED

    def test_per_pool_can_be_chosen(self) -> None:
        assert ObservationMode.from_env({"JETPOOL_OBSERVATION": "per-pool"}) is (
            ObservationMode.PER_POOL
        )

    def test_an_unknown_mode_is_an_error_naming_the_choices(self) -> None:
        with pytest.raises(ValueError, match="batched, per-pool"):
            ObservationMode.from_env({"JETPOOL_OBSERVATION": "sometimes"})
