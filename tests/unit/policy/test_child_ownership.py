"""Whether a child may be written: only when absent or controlled by this very pool."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from jetpool_operator.core.child_ownership import ChildConflict, child_conflict

UID = "uid-1"
REFS = st.fixed_dictionaries(
    {
        "kind": st.sampled_from(["WorkerPool", "Deployment", "HelmRelease"]),
        "name": st.sampled_from(["thumbs", "other"]),
        "uid": st.sampled_from(["uid-1", "uid-2", ""]),
        "controller": st.booleans(),
    }
)


def _ref(uid: str, *, controller: bool = True, name: str = "thumbs") -> dict[str, Any]:
    return {"kind": "WorkerPool", "name": name, "uid": uid, "controller": controller}


def test_a_child_that_does_not_exist_may_be_created() -> None:
    assert child_conflict(UID, "ServiceAccount", "thumbs-worker", None) is None


def test_a_child_this_pool_controls_may_be_applied() -> None:
    existing = {"ownerReferences": [_ref(UID)]}
    assert child_conflict(UID, "Service", "thumbs-metrics", existing) is None


def test_an_object_with_no_owner_is_a_conflict_that_says_so() -> None:
    conflict = child_conflict(UID, "ServiceAccount", "thumbs-worker", {"name": "thumbs-worker"})
    assert conflict == ChildConflict("ServiceAccount", "thumbs-worker", None)
    assert "ServiceAccount thumbs-worker already exists" in conflict.message()
    assert "not owned by any object" in conflict.message()


def test_a_pool_of_the_same_name_with_another_uid_is_not_this_pool() -> None:
    existing = {"ownerReferences": [_ref("uid-old")]}
    conflict = child_conflict(UID, "PodDisruptionBudget", "thumbs-worker", existing)
    assert conflict is not None
    assert "owned by WorkerPool/thumbs" in conflict.message()


def test_a_non_controller_reference_to_this_pool_does_not_make_it_ours() -> None:
    existing = {"ownerReferences": [_ref(UID, controller=False)]}
    assert child_conflict(UID, "Service", "thumbs-metrics", existing) is not None


def test_the_conflict_names_the_controller_rather_than_the_first_owner() -> None:
    refs = [_ref("uid-2", controller=False, name="a"), _ref("uid-3", name="b")]
    conflict = child_conflict(UID, "Service", "s", {"ownerReferences": refs})
    assert conflict is not None
    assert conflict.owner == "WorkerPool/b"


def test_a_pool_without_a_uid_owns_nothing() -> None:
    assert child_conflict("", "Service", "s", {"ownerReferences": [_ref("")]}) is not None


@given(st.lists(REFS, max_size=4))
def test_a_child_may_be_written_exactly_when_this_pool_is_its_controller(
    refs: list[dict[str, Any]],
) -> None:
    ours = any(r["uid"] == UID and r["controller"] for r in refs)
    conflict = child_conflict(UID, "Deployment", "d", {"ownerReferences": refs})
    assert (conflict is None) == ours
