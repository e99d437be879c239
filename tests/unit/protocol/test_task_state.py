"""Task state records: keys for any id, honest run counts, results within their cap."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from jetpool_protocol.task_state import (
    NO_VALUE_RESULT,
    TaskPhase,
    TaskResult,
    TaskState,
    cancel_key,
    id_key,
    key_id,
    result_key,
    runs_before,
    state_key,
    succeeded_state_bytes,
    success_result,
)

KV_KEY = re.compile(r"[-/_=.a-zA-Z0-9]+")
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def state(runs: int, deliveries: int, sequence: int = 7, phase: TaskPhase = TaskPhase.QUEUED):
    return TaskState(
        id="t", phase=phase, since=NOW, runs=runs, deliveries=deliveries, stream_sequence=sequence
    )


class TestKeys:
    @given(st.text(min_size=1, max_size=300))
    def test_any_task_id_becomes_one_valid_key_token_and_back(self, task_id: str) -> None:
        key = id_key(task_id)
        assert KV_KEY.fullmatch(key)
        assert "." not in key
        assert key_id(key) == task_id

    @given(st.text(min_size=1, max_size=50), st.text(min_size=1, max_size=50))
    def test_two_ids_never_share_a_key(self, a: str, b: str) -> None:
        assert (id_key(a) == id_key(b)) == (a == b)

    def test_readable_ids_stay_readable(self) -> None:
        assert state_key("order-17") == "state.order-17"
        assert result_key("order-17") == "result.order-17"
        assert cancel_key("order-17") == "cancel.order-17"
        assert id_key("a.b") != "a.b"


class TestRunsBefore:
    def test_a_first_delivery_has_no_run_before_it(self) -> None:
        assert runs_before(None, 1, 7) == 0

    def test_without_a_record_every_earlier_delivery_counts_as_a_run(self) -> None:
        assert runs_before(None, 4, 7) == 3

    def test_a_hand_back_uses_up_no_run(self) -> None:
        # ran once and failed (delivery 1), handed back unrun (delivery 2)
        assert runs_before(state(runs=1, deliveries=2), 3, 7) == 1

    def test_a_delivery_that_left_no_record_counts_as_a_run(self) -> None:
        # the record covers delivery 1; delivery 2's worker was killed before writing
        assert runs_before(state(runs=1, deliveries=1), 3, 7) == 2

    def test_a_record_of_another_message_with_the_same_id_is_ignored(self) -> None:
        assert runs_before(state(runs=5, deliveries=5, sequence=3), 2, 7) == 1

    @given(st.integers(0, 20), st.integers(0, 20), st.integers(1, 40))
    def test_only_deliveries_the_record_does_not_cover_add_runs(
        self, runs: int, handed_back: int, delivery: int
    ) -> None:
        recorded = state(runs=runs, deliveries=runs + handed_back)
        added = runs_before(recorded, delivery, 7) - runs
        assert 0 <= added <= max(0, delivery - 1 - recorded.deliveries)


class TestRecords:
    def test_a_state_round_trips_through_its_json(self) -> None:
        original = state(runs=2, deliveries=3, phase=TaskPhase.RETRYING).model_copy(
            update={"next_attempt_at": NOW}
        )
        data = original.to_bytes()
        assert b'"nextAttemptAt"' in data
        assert TaskState.from_bytes(data) == original

    def test_final_phases_are_the_four_endings(self) -> None:
        assert {p for p in TaskPhase if p.final} == {
            TaskPhase.SUCCEEDED,
            TaskPhase.DEAD_LETTERED,
            TaskPhase.EXPIRED,
            TaskPhase.CANCELLED,
        }

    def test_a_result_within_its_cap_is_kept(self) -> None:
        assert success_result({"a": [1, 2]}, 100) == TaskResult(ok=True, value={"a": [1, 2]})

    def test_a_result_over_its_cap_says_why_it_is_missing(self) -> None:
        kept = success_result("x" * 200, 100)
        assert kept.ok
        assert kept.value is None
        assert kept.omitted is not None
        assert "100" in kept.omitted

    def test_a_result_that_is_not_json_says_so(self) -> None:
        kept = success_result({1, 2}, 100)
        assert kept.omitted is not None
        assert "JSON" in kept.omitted


class TestTheHotPathEncoding:
    @given(
        st.text(min_size=1, max_size=80),
        st.integers(0, 50),
        st.integers(0, 50),
        st.integers(1, 10**12),
        st.booleans(),
        st.text(max_size=30),
    )
    def test_a_hand_written_succeeded_state_reads_back_as_the_model(
        self, task_id: str, runs: int, deliveries: int, sequence: int, kept: bool, worker: str
    ) -> None:
        data = succeeded_state_bytes(
            task_id, NOW, runs, deliveries, json.dumps(worker), sequence, kept
        )
        assert TaskState.from_bytes(data) == TaskState(
            id=task_id,
            phase=TaskPhase.SUCCEEDED,
            since=NOW,
            runs=runs,
            deliveries=deliveries,
            worker=worker,
            stream_sequence=sequence,
            has_result=kept,
        )

    def test_a_handler_returning_nothing_leaves_the_model_result(self) -> None:
        assert TaskResult.from_bytes(NO_VALUE_RESULT) == TaskResult(ok=True)
