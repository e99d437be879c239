"""Any valid WorkerPool name yields valid, distinct child names and label values."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from jetpool_operator.core.children import (
    PoolRef,
    build_children,
    child_name,
    label_value,
)

from .support import spec

DNS_1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")

_label = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", fullmatch=True)
pool_names = (
    st.lists(_label, min_size=1, max_size=6).map(".".join).filter(lambda name: len(name) <= 253)
)
"""DNS-1123 subdomains: what the apiserver accepts as a WorkerPool name."""


@given(pool_names)
def test_child_names_are_dns_1035_labels_of_at_most_63_characters(name: str) -> None:
    for suffix in ("worker", "metrics"):
        child = child_name(name, suffix)
        assert len(child) <= 63
        assert DNS_1035_LABEL.match(child), child
        assert child.endswith(f"-{suffix}")


@given(pool_names)
def test_label_values_are_valid_for_any_pool_name(name: str) -> None:
    value = label_value(name)
    assert len(value) <= 63
    assert LABEL_VALUE.match(value), value


@given(pool_names, pool_names)
def test_distinct_pools_never_share_child_names_or_label_values(a: str, b: str) -> None:
    if a == b:
        return
    assert child_name(a, "worker") != child_name(b, "worker")
    assert label_value(a) != label_value(b)


@given(pool_names)
def test_short_plain_names_are_kept_readable(name: str) -> None:
    if "." not in name and name[0].isalpha() and len(name) <= 56:
        assert child_name(name, "worker") == f"{name}-worker"
        assert label_value(name) == name


@given(pool_names)
def test_every_built_object_has_valid_names_and_labels(name: str) -> None:
    pool = PoolRef(name=name, namespace="ns", uid="uid")
    for obj in build_children(pool, spec(), replicas=1).all():
        meta = obj["metadata"]
        assert DNS_1035_LABEL.match(meta["name"])
        assert len(meta["name"]) <= 63
        for value in meta["labels"].values():
            assert LABEL_VALUE.match(value)
            assert len(value) <= 63
        assert meta["ownerReferences"][0]["name"] == name
