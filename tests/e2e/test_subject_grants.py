"""A subject prefix the operator grants one namespace works there and nowhere else.

The local operator runs with ``--extra-subject-spaces`` granting GRANTED_PREFIX to
GRANTED_NAMESPACE (``tests/e2e/conftest.py``); on kind the chart's operator has no grant.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from nats.js.kv import KeyValue

from e2e.testbed.cluster import Cluster, eventually
from e2e.testbed.operator_process import OperatorProcess
from e2e.testbed.pod_runner import PodRunner
from tests.e2e.conftest import (
    GRANTED_NAMESPACE,
    GRANTED_PREFIX,
    PROVIDER,
    NatsEndpoint,
    condition,
    kv_record,
    wait_for_condition,
)
from tests.e2e.test_scaling_and_breaker import done, publish, wait_until, worker_pool

pytestmark = [
    pytest.mark.kube,
    pytest.mark.nats,
    pytest.mark.e2e,
    pytest.mark.skipif(PROVIDER != "local", reason="the grant is the local operator's flag"),
]


@pytest.fixture
def granted(cluster: Cluster, operator: OperatorProcess | None) -> Iterator[str]:
    """The namespace the operator grants GRANTED_PREFIX, fresh, and gone again afterwards."""
    cluster.kubectl("delete", "namespace", GRANTED_NAMESPACE, "--ignore-not-found", "--wait=true")
    cluster.kubectl("create", "namespace", GRANTED_NAMESPACE)
    eventually(
        lambda: cluster.kubectl(
            "-n", GRANTED_NAMESPACE, "get", "serviceaccount", "default", check=False
        ),
        what="default ServiceAccount",
    )
    yield GRANTED_NAMESPACE
    cluster.kubectl("delete", "namespace", GRANTED_NAMESPACE, "--wait=false", check=False)


async def test_a_granted_prefix_serves_its_namespace_and_is_refused_in_another(
    cluster: Cluster,
    granted: str,
    namespace: str,
    nats_endpoint: NatsEndpoint,
    pod_runner: PodRunner | None,
) -> None:
    async for kv in kv_record(nats_endpoint, granted):
        await _run(cluster, granted, namespace, nats_endpoint, kv)


async def _run(
    cluster: Cluster, granted: str, other: str, endpoint: NatsEndpoint, kv: KeyValue
) -> None:
    subjects = [f"{GRANTED_PREFIX}>"]
    cluster.apply(
        worker_pool("invoices", endpoint.pod_url, f"e2e-{granted}", nats={"subjects": subjects}),
        "-n",
        granted,
    )
    wait_for_condition(cluster, granted, "invoices", "Ready", "True", timeout=60)
    ids = [f"invoice-{i}" for i in range(20)]
    await publish(endpoint, f"{GRANTED_PREFIX}paid", ids, {})

    async def all_done() -> bool:
        return await done(kv) == set(ids)

    await wait_until(all_done, 60, "the granted pool's tasks done")
    assert not await done(kv, "again."), "a task ran twice"

    cluster.apply(
        worker_pool("invoices", endpoint.pod_url, f"e2e-{other}", nats={"subjects": subjects}),
        "-n",
        other,
    )
    pool = wait_for_condition(cluster, other, "invoices", "NatsReady", "False", timeout=30)
    refused = condition(pool, "NatsReady")
    assert refused is not None
    assert refused["reason"] == "SubjectsOutsideNamespace"
    assert f"'{GRANTED_PREFIX}>'" in refused["message"]
    assert f"may only use subjects under tasks.{other}.>" in refused["message"]
    assert wait_for_condition(cluster, granted, "invoices", "Ready", "True")
