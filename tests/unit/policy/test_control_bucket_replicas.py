"""How many replicas the shared control bucket gets: configured, raised by a pool that asks for
more, never lowered, R1 on a single server; and the condition that says when it is at risk."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jetpool_operator.api.v1alpha1 import ConditionStatus
from jetpool_operator.core.conditions import Reason
from jetpool_operator.core.control_bucket import (
    ControlBucket,
    control_replicas_from_env,
    replication_condition,
    wanted_replicas,
)

replicas = st.integers(min_value=1, max_value=5)


def test_a_new_bucket_on_a_cluster_gets_the_configured_or_the_pools_replicas() -> None:
    assert wanted_replicas(configured=3, pool_replicas=1, current=None, clustered=None) == 3
    assert wanted_replicas(configured=1, pool_replicas=3, current=None, clustered=True) == 3


def test_a_single_server_gets_one_replica_and_is_never_raised() -> None:
    assert wanted_replicas(configured=3, pool_replicas=3, current=None, clustered=False) == 1
    assert wanted_replicas(configured=3, pool_replicas=5, current=1, clustered=False) is None


@given(configured=replicas, pool=replicas, current=replicas)
def test_an_existing_bucket_is_only_ever_raised(configured: int, pool: int, current: int) -> None:
    want = wanted_replicas(
        configured=configured, pool_replicas=pool, current=current, clustered=True
    )
    if want is None:
        assert max(configured, pool) <= current
    else:
        assert want == max(configured, pool) > current


def test_the_condition_is_false_only_for_one_replica_on_a_cluster() -> None:
    at_risk = replication_condition(
        ControlBucket(1, clustered=True, problem="insufficient resources")
    )
    assert at_risk[:2] == (ConditionStatus.FALSE, Reason.SINGLE_REPLICA_ON_CLUSTER)
    assert "insufficient resources" in at_risk[2]
    assert replication_condition(ControlBucket(3, clustered=True))[:2] == (
        ConditionStatus.TRUE,
        Reason.REPLICATED,
    )
    assert replication_condition(ControlBucket(1, clustered=False))[:2] == (
        ConditionStatus.TRUE,
        Reason.SINGLE_SERVER,
    )
    assert replication_condition(None)[0] is ConditionStatus.UNKNOWN


def test_the_configured_replicas_default_to_three_and_out_of_range_values_are_refused() -> None:
    assert control_replicas_from_env({}) == 3
    assert control_replicas_from_env({"JETPOOL_CONTROL_REPLICAS": "5"}) == 5
    for bad in ("0", "6", "three"):
        with pytest.raises(ValueError, match="JETPOOL_CONTROL_REPLICAS"):
            control_replicas_from_env({"JETPOOL_CONTROL_REPLICAS": bad})
