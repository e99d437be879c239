"""The operator sends a status patch only when the apiserver needs to hear it."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from jetpool_operator.core.status_patch import status_patch, without_nulls


def merge(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """RFC 7386 JSON merge patch, as the apiserver applies it."""
    out = dict(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def patch_now(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any] | None:
    return status_patch(old, new, seconds_since_last_patch=60, volatile_interval=2)


def test_an_unchanged_status_sends_no_patch() -> None:
    status = {"replicas": 2, "conditions": [{"type": "Ready", "status": "True"}]}
    assert patch_now(status, dict(status)) is None


def test_none_values_count_as_absent_keys() -> None:
    assert patch_now({"replicas": 2}, {"replicas": 2, "backlog": None}) is None


def test_a_key_the_new_status_lacks_is_removed_with_a_null() -> None:
    patch = patch_now({"replicas": 2, "lastActiveTime": "2026-01-01T00:00:00Z"}, {"replicas": 2})
    assert patch == {"lastActiveTime": None, "replicas": 2}


def test_only_volatile_counters_changing_waits_for_the_interval() -> None:
    old = {"replicas": 2, "throughput": 10.0, "backlog": 5}
    new = {"replicas": 2, "throughput": 12.5, "backlog": 3}
    soon = status_patch(old, new, seconds_since_last_patch=0.5, volatile_interval=2)
    later = status_patch(old, new, seconds_since_last_patch=2.5, volatile_interval=2)
    assert soon is None
    assert later == new


def test_task_counts_are_counters_too() -> None:
    old = {"replicas": 1, "tasks": {"queued": 5, "running": 2}}
    new = {"replicas": 1, "tasks": {"queued": 4, "running": 3}}
    assert status_patch(old, new, seconds_since_last_patch=0.5, volatile_interval=2) is None


def test_a_condition_change_goes_out_at_once_with_the_counters() -> None:
    old = {"throughput": 10.0, "conditions": [{"type": "Ready", "status": "True"}]}
    new = {"throughput": 11.0, "conditions": [{"type": "Ready", "status": "False"}]}
    assert status_patch(old, new, seconds_since_last_patch=0, volatile_interval=2) == new


statuses = st.dictionaries(
    st.sampled_from(["replicas", "backlog", "throughput", "health", "nats", "selector"]),
    st.one_of(
        st.none(),
        st.integers(0, 5),
        st.text(max_size=3),
        st.dictionaries(st.sampled_from(["a", "b"]), st.integers(0, 3), max_size=2),
    ),
    max_size=6,
)


@given(old=statuses, new=statuses)
def test_applying_the_patch_yields_exactly_the_new_status(
    old: dict[str, Any], new: dict[str, Any]
) -> None:
    stored = without_nulls(old)
    patch = patch_now(stored, new)
    result = stored if patch is None else merge(stored, patch)
    assert result == without_nulls(new)


def test_a_nested_key_that_disappears_is_removed_too() -> None:
    old = {"controllerMemory": {"health": {"since": [["work", 1.0]]}, "stale": 1}}
    new = {"controllerMemory": {"health": {"since": []}}}
    patch = patch_now(old, new)
    assert patch is not None
    assert merge(old, patch) == new
