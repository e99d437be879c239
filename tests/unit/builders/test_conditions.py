"""Conditions follow metav1.Condition: lastTransitionTime moves only on a status flip."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from jetpool_operator.api.v1alpha1 import Condition, ConditionStatus
from jetpool_operator.core.conditions import (
    ConditionType,
    Reason,
    find_condition,
    is_true,
    remove_condition,
    set_condition,
    status_of,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _ready(
    conditions: list[Condition], status: bool, now: datetime, reason: str = Reason.AVAILABLE
) -> list[Condition]:
    return set_condition(
        conditions,
        ConditionType.READY,
        status,
        reason=reason,
        message="m",
        observed_generation=1,
        now=now,
    )


def test_a_new_condition_is_appended_with_now_as_transition_time() -> None:
    [ready] = _ready([], True, T0)
    assert ready.type == "Ready"
    assert ready.status is ConditionStatus.TRUE
    assert ready.last_transition_time == T0
    assert ready.observed_generation == 1


def test_same_status_keeps_the_transition_time_even_if_reason_changes() -> None:
    first = _ready([], True, T0)
    later = _ready(first, True, T0 + timedelta(minutes=5), reason=Reason.SCALED_TO_ZERO)
    [ready] = later
    assert ready.last_transition_time == T0
    assert ready.reason == "ScaledToZero"


def test_a_status_flip_moves_the_transition_time() -> None:
    first = _ready([], True, T0)
    [ready] = _ready(first, False, T0 + timedelta(minutes=5), reason=Reason.PROGRESSING)
    assert ready.status is ConditionStatus.FALSE
    assert ready.last_transition_time == T0 + timedelta(minutes=5)


def test_an_unchanged_observation_gives_an_equal_list_so_no_patch_is_sent() -> None:
    first = _ready([], True, T0)
    assert _ready(first, True, T0 + timedelta(seconds=30)) == first


def test_other_conditions_keep_their_place_and_values() -> None:
    conditions = set_condition(
        [],
        ConditionType.NATS_READY,
        True,
        reason=Reason.STREAMS_READY,
        message="",
        observed_generation=1,
        now=T0,
    )
    conditions = _ready(conditions, False, T0, reason=Reason.PROGRESSING)
    updated = _ready(conditions, True, T0 + timedelta(seconds=5))
    assert [c.type for c in updated] == ["NatsReady", "Ready"]
    assert updated[0] == conditions[0]


def test_times_are_truncated_to_seconds_like_metav1_time() -> None:
    [ready] = _ready([], True, T0 + timedelta(microseconds=123456))
    assert ready.last_transition_time == T0


def test_unknown_status_is_accepted_and_a_missing_condition_reads_as_unknown() -> None:
    conditions = set_condition(
        [],
        ConditionType.DEGRADED,
        ConditionStatus.UNKNOWN,
        reason=Reason.UNKNOWN,
        message="no stats yet",
        observed_generation=None,
        now=T0,
    )
    assert status_of(conditions, ConditionType.DEGRADED) is ConditionStatus.UNKNOWN
    assert status_of(conditions, ConditionType.READY) is ConditionStatus.UNKNOWN
    assert find_condition(conditions, ConditionType.READY) is None


def test_is_true_reads_only_the_named_condition() -> None:
    conditions = _ready([], True, T0)
    assert is_true(conditions, ConditionType.READY)
    assert not is_true(conditions, ConditionType.CIRCUIT_OPEN)


def test_remove_condition_drops_only_that_type() -> None:
    conditions = _ready([], True, T0)
    assert remove_condition(conditions, ConditionType.READY) == []
    assert remove_condition(conditions, ConditionType.DEGRADED) == conditions


def test_conditions_serialize_in_kubernetes_shape() -> None:
    [ready] = _ready([], True, T0)
    assert ready.model_dump(by_alias=True, mode="json") == {
        "type": "Ready",
        "status": "True",
        "reason": "Available",
        "message": "m",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
        "observedGeneration": 1,
    }


def test_every_reason_is_a_valid_condition_reason() -> None:
    for reason in Reason:
        Condition(
            type="Ready",
            status=ConditionStatus.TRUE,
            reason=reason,
            message="",
            last_transition_time=T0,
        )
