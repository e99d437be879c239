"""The stranded-task sweep's policy: its bound, its re-check and what its records say."""

from __future__ import annotations

from dataclasses import replace

import pytest

from jetpool_operator.core.stranded import (
    COUNT_LIMIT,
    SWEEP_LIMIT,
    ConsumerView,
    Finding,
    SweepPlan,
    attribute,
    covered,
    still_valid,
    sweep_plan,
)

IDLE = ConsumerView(
    ack_pending=0,
    delivered_stream_sequence=10,
    ack_floor_stream_sequence=4,
    redelivered=2,
    max_deliver=7,
    created="2026-01-01T00:00:00Z",
)


def test_nothing_is_swept_before_anything_was_delivered() -> None:
    assert (
        sweep_plan(replace(IDLE, delivered_stream_sequence=0, ack_floor_stream_sequence=0)) is None
    )


def test_an_idle_consumer_is_swept_up_to_its_delivered_sequence() -> None:
    plan = sweep_plan(IDLE)
    assert plan is not None
    assert plan.up_to_sequence == 10
    assert plan.subjects == (">",)
    assert plan.consumer_created == IDLE.created


def test_a_busy_consumer_is_swept_only_up_to_its_ack_floor() -> None:
    plan = sweep_plan(replace(IDLE, ack_pending=3))
    assert plan is not None
    assert plan.up_to_sequence == 4


def test_a_busy_consumer_whose_floor_is_at_zero_is_not_swept() -> None:
    assert sweep_plan(replace(IDLE, ack_pending=1, ack_floor_stream_sequence=0)) is None


def test_the_bound_never_exceeds_the_delivered_sequence() -> None:
    plan = sweep_plan(replace(IDLE, ack_pending=1, ack_floor_stream_sequence=12))
    assert plan is not None
    assert plan.up_to_sequence == 10


def test_only_the_consumers_filter_subjects_are_swept() -> None:
    plan = sweep_plan(replace(IDLE, filter_subjects=("tasks.a.x.>", "tasks.a.y.>")))
    assert plan is not None
    assert plan.subjects == ("tasks.a.x.>", "tasks.a.y.>")


@pytest.mark.parametrize(
    ("redelivered", "count_up_to"),
    [(0, SWEEP_LIMIT), (SWEEP_LIMIT, SWEEP_LIMIT + 1), (10 * COUNT_LIMIT, COUNT_LIMIT)],
)
def test_a_sweep_counts_one_more_task_than_can_have_reached_max_deliver(
    redelivered: int, count_up_to: int
) -> None:
    plan = sweep_plan(replace(IDLE, redelivered=redelivered))
    assert plan is not None
    assert plan.count_up_to == count_up_to


def test_the_sweep_goes_on_only_with_the_consumer_it_planned_with() -> None:
    plan = sweep_plan(IDLE)
    assert plan is not None
    assert still_valid(plan, replace(IDLE, ack_pending=5, delivered_stream_sequence=12))
    assert not still_valid(plan, replace(IDLE, created="2026-01-01T00:00:01Z"))  # re-created
    assert not still_valid(plan, replace(IDLE, delivered_stream_sequence=3))  # reset below


def test_as_many_redelivered_tasks_as_found_may_all_have_reached_max_deliver() -> None:
    verdict = attribute(2, IDLE)
    assert verdict.finding is Finding.MAX_DELIVERIES
    assert verdict.finding.value == "MaxDeliveriesExceeded"
    assert verdict.attempts == 7
    assert "delivered 7 times" in verdict.message


def test_without_a_redelivered_task_none_reached_max_deliver() -> None:
    verdict = attribute(3, replace(IDLE, redelivered=0))
    assert verdict.finding is Finding.PASSED_OVER
    assert verdict.attempts == 0
    assert "never reached maxDeliver" in verdict.message


def test_without_max_deliver_nothing_reached_it() -> None:
    verdict = attribute(1, replace(IDLE, max_deliver=-1, redelivered=4))
    assert verdict.finding is Finding.PASSED_OVER


def test_more_tasks_than_redelivered_ones_are_not_attributed() -> None:
    verdict = attribute(3, IDLE)
    assert verdict.finding is Finding.UNDELIVERABLE
    assert verdict.attempts == 0
    assert "at most 2 of the 3" in verdict.message


def test_with_max_deliver_one_the_server_counts_nothing_so_nothing_is_attributed() -> None:
    verdict = attribute(1, replace(IDLE, max_deliver=1, redelivered=0))
    assert verdict.finding is Finding.UNDELIVERABLE


def test_every_finding_is_one_subject_token() -> None:
    for finding in Finding:
        assert finding.value.isalnum()


def test_covered_sequences_are_the_plans_own_lowest_first_once_each() -> None:
    plan = SweepPlan(up_to_sequence=5, subjects=(">",), count_up_to=10)
    assert covered([4, 2, 9, 2, 5, 0], plan) == [2, 4, 5]
