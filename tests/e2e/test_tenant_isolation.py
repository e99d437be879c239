"""Two namespaces on one NATS: a hostile pool cannot take, change or delete a victim's
stream, consumer or subjects (nor adopt the victim's unowned streams), and the victim keeps
processing its tasks."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from nats.js.kv import KeyValue

from e2e.testbed.cluster import Cluster, KubectlError, eventually
from e2e.testbed.pod_runner import PodRunner
from tests.e2e.conftest import PROVIDER, NatsEndpoint, condition, wait_for_condition
from tests.e2e.test_scaling_and_breaker import (
    done,
    publish,
    running_workers,
    status,
    wait_until,
    worker_pool,
)

pytestmark = [pytest.mark.kube, pytest.mark.nats, pytest.mark.e2e]

CHART_POLICY = PROVIDER == "kind"
"""On kind the chart is installed, with its admission policy on a pool's subjects."""


@pytest.fixture
def other_namespace(cluster: Cluster, nats_endpoint: NatsEndpoint) -> Iterator[str]:
    """The hostile tenant's namespace."""
    name = "t-" + uuid.uuid4().hex[:8]
    cluster.kubectl("create", "namespace", name)
    eventually(
        lambda: cluster.kubectl("-n", name, "get", "serviceaccount", "default", check=False),
        what="default ServiceAccount",
    )
    nats_endpoint.install_secrets(cluster, name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


async def _resources(endpoint: NatsEndpoint, stream: str) -> tuple[Any, ...]:
    """The configs (not the counters) of a pool's stream, consumer and dead-letter stream."""
    nc = await endpoint.connect()
    try:
        js = nc.jetstream()
        return (
            (await js.stream_info(stream)).config,
            (await js.consumer_info(stream, "workers")).config,
            (await js.stream_info(f"{stream}-dlq")).config,
        )
    finally:
        await nc.close()


def _refusal(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    pool = wait_for_condition(cluster, namespace, name, "NatsReady", "False", timeout=60)
    found = condition(pool, "NatsReady")
    assert found is not None
    return found


@pytest.mark.usefixtures("operator")
async def test_a_hostile_pool_cannot_take_change_or_delete_another_namespace_s_stream(
    cluster: Cluster,
    namespace: str,
    other_namespace: str,
    nats_endpoint: NatsEndpoint,
    pod_runner: PodRunner | None,
    record: KeyValue,
) -> None:
    url, bucket = nats_endpoint.pod_url, f"e2e-{namespace}"
    cluster.apply(
        worker_pool("victim", url, bucket, scaling={"minReplicas": 1, "maxReplicas": 1}),
        "-n",
        namespace,
    )
    victim = wait_for_condition(cluster, namespace, "victim", "Ready", "True", timeout=90)
    stream, subjects = victim["status"]["nats"]["stream"], victim["status"]["nats"]["subjects"]
    before = await _resources(nats_endpoint, stream)
    # A stream of A's from before ownership records (no metadata), not yet adopted by A.
    unowned = f"legacy-{namespace}"
    nc = await nats_endpoint.connect()
    await nc.jetstream().add_stream(
        name=unowned, subjects=[f"tasks.{namespace}.legacy.>"], retention="workqueue"
    )
    unowned_before = (await nc.jetstream().stream_info(unowned)).config

    hostile = other_namespace
    cluster.apply(
        worker_pool(
            "thief",
            url,
            bucket,
            nats={"stream": stream, "adoptExisting": True, "maxMsgs": 1},
            scaling={"minReplicas": 1, "maxReplicas": 2},
            deletionPolicy="Delete",
        ),
        "-n",
        hostile,
    )
    eavesdropper_pool = worker_pool("eavesdropper", url, bucket, nats={"subjects": subjects})
    if CHART_POLICY:  # the chart's admission policy refuses it before the operator sees it
        with pytest.raises(KubectlError, match=f"inside namespace {hostile}'s subject space"):
            cluster.apply(eavesdropper_pool, "-n", hostile)
    else:
        cluster.apply(eavesdropper_pool, "-n", hostile)
    cluster.apply(
        worker_pool("squatter", url, bucket, nats={"stream": unowned, "adoptExisting": True}),
        "-n",
        hostile,
    )
    with pytest.raises(KubectlError, match=r"nats\.subjects must each start with tasks\."):
        cluster.apply(worker_pool("greedy", url, bucket, nats={"subjects": [">"]}), "-n", hostile)

    thief = _refusal(cluster, hostile, "thief")
    assert thief["reason"] == "OwnedByAnotherPool"
    assert f"belongs to WorkerPool {namespace}/victim" in thief["message"]
    if not CHART_POLICY:
        eavesdropper = _refusal(cluster, hostile, "eavesdropper")
        assert eavesdropper["reason"] == "SubjectsOutsideNamespace"
        assert (
            f"{subjects[0]!r} is outside namespace {hostile}'s subject space"
            in (eavesdropper["message"])
        )
    squatter = _refusal(cluster, hostile, "squatter")
    assert squatter["reason"] == "AdoptionRefused"
    assert f"captures subjects outside namespace {hostile}" in squatter["message"]
    assert (await nc.jetstream().stream_info(unowned)).config == unowned_before
    await nc.close()
    assert status(cluster, hostile, "thief")["desiredReplicas"] == 0  # no workers on A's stream

    ids = [f"iso-{i}" for i in range(30)]
    await publish(nats_endpoint, f"tasks.{namespace}.victim.work", ids, {"n": 1})

    async def all_done() -> bool:
        return await done(record) == set(ids)

    await wait_until(all_done, 90, "every victim task done")
    assert not await done(record, "again."), "a task ran twice"
    assert running_workers(cluster, hostile, pod_runner) == 0
    assert await _resources(nats_endpoint, stream) == before

    cluster.kubectl("delete", "workerpool", "thief", "-n", hostile, "--timeout=60s")
    assert await _resources(nats_endpoint, stream) == before
    wait_for_condition(cluster, namespace, "victim", "NatsReady", "True")
