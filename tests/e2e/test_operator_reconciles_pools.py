"""The operator against the real test bed: children, NATS resources, drift, failures, restarts."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import nats
import nats.errors
import pytest
from nats.js.errors import NotFoundError

from e2e.testbed.cluster import REPO, Cluster, KubectlError, eventually
from e2e.testbed.nats_server import NatsServer
from e2e.testbed.operator_process import OperatorProcess
from jetpool import Client, TaskPhase
from tests.e2e.conftest import (
    PROVIDER,
    NatsEndpoint,
    condition,
    pool_manifest,
    wait_for_condition,
)

pytestmark = [pytest.mark.kube, pytest.mark.nats, pytest.mark.e2e]

local_only = pytest.mark.skipif(
    PROVIDER != "local",
    reason="starts its own operator processes or NATS server on this machine; on kind the "
    "chart's operator runs in the cluster and cannot reach them",
)


def deployment(cluster: Cluster, namespace: str, pool: str) -> dict[str, Any]:
    return cluster.get_json("deployment", f"{pool}-worker", "-n", namespace)


async def stream_and_consumer(endpoint: NatsEndpoint, stream: str) -> tuple[Any, Any, Any]:
    nc = await endpoint.connect()
    try:
        js = nc.jetstream()
        return (
            await js.stream_info(stream),
            await js.consumer_info(stream, "workers"),
            await js.stream_info(f"{stream}-dlq"),
        )
    finally:
        await nc.close()


async def task_state_stream(endpoint: NatsEndpoint, bucket: str) -> Any:
    nc = await endpoint.connect()
    try:
        return await nc.jetstream().stream_info(f"KV_{bucket}")
    finally:
        await nc.close()


async def test_applying_a_pool_creates_its_deployment_stream_consumer_and_dead_letter_stream(
    cluster: Cluster, namespace: str, operator: OperatorProcess, nats_endpoint: NatsEndpoint
) -> None:
    cluster.apply(
        pool_manifest(
            "orders",
            nats_endpoint.pod_url,
            concurrency=3,
            task={"timeoutSeconds": 10},
            retry={"maxAttempts": 4},
            deadLetter={"maxAgeSeconds": 3600},
            scaling={"minReplicas": 2, "maxReplicas": 5},
        ),
        "-n",
        namespace,
    )
    pool = wait_for_condition(cluster, namespace, "orders", "Ready", "True")
    assert pool["status"]["observedGeneration"] == pool["metadata"]["generation"]
    assert pool["status"]["readyReplicas"] == 2

    dep = deployment(cluster, namespace, "orders")
    assert dep["spec"]["replicas"] == 2
    owner = dep["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("WorkerPool", "orders", True)
    env = {
        e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["JETPOOL_CONCURRENCY"] == "3"
    assert env["JETPOOL_RETRY_MAX_ATTEMPTS"] == "4"
    for kind in ("serviceaccount", "poddisruptionbudget", "service"):
        assert cluster.get_json(kind, "-n", namespace)["items"], f"no {kind}"

    stream = pool["status"]["nats"]["stream"]
    info, consumer, dlq = await stream_and_consumer(nats_endpoint, stream)
    assert info.config.retention == "workqueue"
    # the task subjects, and the subjects where delayed and periodic tasks wait
    assert info.config.subjects == [
        f"tasks.{namespace}.orders.>",
        f"jetpool.schedules.{namespace}.orders.>",
    ]
    assert info.config.allow_msg_schedules
    # the workers' consumer reads the task subjects only, never a waiting schedule
    assert consumer.config.filter_subject == f"tasks.{namespace}.orders.>"
    assert consumer.config.ack_wait == pytest.approx(10 + 30)
    assert consumer.config.max_deliver == 4 + 10
    states = await task_state_stream(nats_endpoint, pool["status"]["nats"]["taskStateBucket"])
    assert states.config.max_msgs_per_subject == 1
    assert dlq.config.max_age == pytest.approx(3600)
    assert dlq.config.retention == "limits"


async def test_a_spec_change_rolls_out_the_template_and_updates_the_consumer(
    cluster: Cluster, namespace: str, operator: OperatorProcess, nats_endpoint: NatsEndpoint
) -> None:
    cluster.apply(pool_manifest("rollout", nats_endpoint.pod_url), "-n", namespace)
    pool = wait_for_condition(cluster, namespace, "rollout", "Ready", "True")
    stream = pool["status"]["nats"]["stream"]

    cluster.apply(
        pool_manifest(
            "rollout", nats_endpoint.pod_url, image="jetpool-worker:v2", task={"timeoutSeconds": 20}
        ),
        "-n",
        namespace,
    )

    def rolled_out() -> bool:
        dep = deployment(cluster, namespace, "rollout")
        image = dep["spec"]["template"]["spec"]["containers"][0]["image"]
        return image == "jetpool-worker:v2" and dep["status"].get("updatedReplicas") == 1

    eventually(rolled_out, what="new pod template rolled out")
    _, consumer, _ = await stream_and_consumer(nats_endpoint, stream)
    assert consumer.config.ack_wait == pytest.approx(20 + 30)
    pool = wait_for_condition(cluster, namespace, "rollout", "Ready", "True")
    assert pool["status"]["observedGeneration"] == 2


def test_a_deleted_or_edited_deployment_is_restored(
    cluster: Cluster, namespace: str, operator: OperatorProcess, nats_endpoint: NatsEndpoint
) -> None:
    cluster.apply(pool_manifest("drift", nats_endpoint.pod_url), "-n", namespace)
    wait_for_condition(cluster, namespace, "drift", "Ready", "True")
    original_uid = deployment(cluster, namespace, "drift")["metadata"]["uid"]

    cluster.kubectl("-n", namespace, "delete", "deployment", "drift-worker", "--wait=false")
    eventually(
        lambda: deployment(cluster, namespace, "drift")["metadata"]["uid"] != original_uid,
        what="deleted Deployment re-created",
    )

    cluster.kubectl(
        "-n",
        namespace,
        "patch",
        "deployment",
        "drift-worker",
        "--type=json",
        "-p",
        json.dumps(
            [
                {
                    "op": "replace",
                    "path": "/spec/template/spec/containers/0/image",
                    "value": "evil:1",
                },
                {"op": "replace", "path": "/spec/replicas", "value": 3},
            ]
        ),
    )

    wanted_image = cluster.get_json("workerpool", "drift", "-n", namespace)["spec"]["image"]

    def restored() -> bool:
        dep = deployment(cluster, namespace, "drift")
        image = dep["spec"]["template"]["spec"]["containers"][0]["image"]
        return image == wanted_image and dep["spec"]["replicas"] == 1

    eventually(restored, what="edited Deployment restored")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"scaling": {"minReplicas": 5, "maxReplicas": 2}}, "minReplicas must not exceed"),
        (
            {"retry": {"backoff": {"initialSeconds": 100, "maxSeconds": 10}}},
            "initialSeconds must not exceed",
        ),
        ({"circuitBreaker": {"errorRateThreshold": 1.5}}, "errorRateThreshold"),
    ],
)
def test_an_invalid_pool_is_rejected_with_the_rules_message(
    cluster: Cluster, namespace: str, crds: None, spec: dict[str, Any], message: str
) -> None:
    with pytest.raises(KubectlError) as rejected:
        cluster.apply(pool_manifest("invalid", "nats://127.0.0.1:4222", **spec), "-n", namespace)
    assert message in rejected.value.stderr


@local_only
async def test_nats_going_down_is_a_condition_and_the_pool_recovers_when_it_returns(
    cluster: Cluster, namespace: str, operator: OperatorProcess, private_nats_server: NatsServer
) -> None:
    cluster.apply(pool_manifest("flaky", private_nats_server.url), "-n", namespace)
    cluster.apply(pool_manifest("steady", private_nats_server.url), "-n", namespace)
    wait_for_condition(cluster, namespace, "flaky", "NatsReady", "True")

    private_nats_server.stop()
    pool = wait_for_condition(cluster, namespace, "flaky", "NatsReady", "False", timeout=60)
    nats_ready = condition(pool, "NatsReady")
    assert nats_ready is not None
    assert nats_ready["reason"] == "NatsUnreachable"
    assert condition(pool, "Ready")["status"] == "False"  # type: ignore[index]

    private_nats_server.start()
    wait_for_condition(cluster, namespace, "flaky", "NatsReady", "True", timeout=60)
    wait_for_condition(cluster, namespace, "flaky", "Ready", "True", timeout=60)
    wait_for_condition(cluster, namespace, "steady", "Ready", "True", timeout=60)


async def test_a_conflicting_existing_stream_is_reported_and_never_deleted(
    cluster: Cluster, namespace: str, operator: OperatorProcess, nats_endpoint: NatsEndpoint
) -> None:
    stream = f"preexisting-{namespace}"
    nc = await nats_endpoint.connect()
    js = nc.jetstream()
    # Limits retention, inside the namespace's subject space (so it may be adopted at all).
    await js.add_stream(name=stream, subjects=[f"tasks.{namespace}.legacy.>"])
    await js.publish(f"tasks.{namespace}.legacy.x", b"keep me")
    cluster.apply(
        pool_manifest(
            "clash", nats_endpoint.pod_url, nats={"stream": stream, "adoptExisting": True}
        ),
        "-n",
        namespace,
    )
    pool = wait_for_condition(cluster, namespace, "clash", "NatsReady", "False")
    nats_ready = condition(pool, "NatsReady")
    assert nats_ready is not None
    assert nats_ready["reason"] == "StreamConflict"
    assert "retention" in nats_ready["message"]
    info = await js.stream_info(stream)
    assert info.state.messages == 1
    await nc.close()


@local_only
def test_a_restarted_operator_creates_no_duplicates_and_keeps_conditions_stable(
    cluster: Cluster, namespace: str, crds: None, nats_endpoint: NatsEndpoint
) -> None:
    first = OperatorProcess(cluster).start()
    try:
        cluster.apply(pool_manifest("restart", nats_endpoint.pod_url), "-n", namespace)
        before = wait_for_condition(cluster, namespace, "restart", "Ready", "True")
    finally:
        first.stop()
    second = OperatorProcess(cluster).start()
    try:
        # A quiescent pool ticks once or twice and then sleeps until something changes.
        eventually(lambda: second.reconciles() >= 1, what="the new operator reconciling")
        time.sleep(3)
        after = cluster.get_json("workerpool", "restart", "-n", namespace)
    finally:
        second.stop()
    assert len(cluster.get_json("deployments", "-n", namespace)["items"]) == 1
    assert len(cluster.get_json("replicasets", "-n", namespace)["items"]) == 1
    transitions = {c["type"]: c["lastTransitionTime"] for c in before["status"]["conditions"]}
    assert {
        c["type"]: c["lastTransitionTime"] for c in after["status"]["conditions"]
    } == transitions


@local_only
def test_of_two_peered_operators_only_one_reconciles(
    cluster: Cluster, namespace: str, crds: None, nats_endpoint: NatsEndpoint
) -> None:
    peering = f"jetpool-{namespace}"
    cluster.apply(
        {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": peering}}
    )
    high = OperatorProcess(cluster, args=("--peering", peering, "--priority", "200")).start()
    low = OperatorProcess(cluster, args=("--peering", peering, "--priority", "100")).start()
    try:
        cluster.apply(pool_manifest("peered", nats_endpoint.pod_url), "-n", namespace)
        wait_for_condition(cluster, namespace, "peered", "Ready", "True")
        eventually(lambda: high.reconciles() >= 5, what="the leader reconciling")
        assert low.reconciles() == 0, low.logs()[-2000:]
    finally:
        low.stop()
        high.stop()
        cluster.kubectl("delete", "clusterkopfpeering", peering, "--wait=false", check=False)


@pytest.mark.usefixtures("operator")
def test_the_sample_pools_apply_and_kubectl_get_shows_the_columns(
    cluster: Cluster, namespace: str
) -> None:
    minimal = (REPO / "manifests" / "examples" / "workerpool-minimal.yaml").read_text()
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=minimal)
    sample = (REPO / "manifests" / "examples" / "workerpool-sample.yaml").read_text()
    cluster.kubectl(
        "apply",
        "--dry-run=server",
        "-n",
        namespace,
        "-f",
        "-",
        # Moved into the test's namespace, subjects included (they must stay in its space).
        input=sample.replace("namespace: media", f"namespace: {namespace}").replace(
            "tasks.media.", f"tasks.{namespace}."
        ),
    )
    header = cluster.kubectl("get", "wp", "-n", namespace).splitlines()[0].split()
    assert header == [
        "NAME",
        "READY",
        "DESIRED",
        "BACKLOG",
        "ERROR-RATE",
        "BREAKER",
        "HEALTHY",
        "AGE",
    ]
    wide = cluster.kubectl("get", "wp", "-n", namespace, "-o", "wide").splitlines()[0]
    assert "THROUGHPUT" in wide
    assert "DEAD-LETTERS" in wide


async def test_pausing_scales_workers_to_zero_and_keeps_the_backlog(
    cluster: Cluster, namespace: str, operator: OperatorProcess, nats_endpoint: NatsEndpoint
) -> None:
    cluster.apply(pool_manifest("sleepy", nats_endpoint.pod_url), "-n", namespace)
    pool = wait_for_condition(cluster, namespace, "sleepy", "Ready", "True")
    stream = pool["status"]["nats"]["stream"]
    cluster.apply(pool_manifest("sleepy", nats_endpoint.pod_url, paused=True), "-n", namespace)
    nc = await nats_endpoint.connect()
    js = nc.jetstream()
    for i in range(5):
        await js.publish(f"tasks.{namespace}.sleepy.x", b"{}", headers={"Nats-Msg-Id": f"p{i}"})

    pool = wait_for_condition(cluster, namespace, "sleepy", "Ready", "True")
    eventually(
        lambda: deployment(cluster, namespace, "sleepy")["spec"]["replicas"] == 0,
        what="paused pool scaled to zero",
    )
    ready = condition(cluster.get_json("workerpool", "sleepy", "-n", namespace), "Ready")
    assert ready is not None
    assert ready["reason"] == "Paused"
    assert (await js.stream_info(stream)).state.messages == 5
    await nc.close()


async def test_deletion_policy_decides_whether_the_streams_outlive_the_pool(
    cluster: Cluster, namespace: str, operator: OperatorProcess, nats_endpoint: NatsEndpoint
) -> None:
    cluster.apply(pool_manifest("keeper", nats_endpoint.pod_url), "-n", namespace)
    cluster.apply(
        pool_manifest("cleaner", nats_endpoint.pod_url, deletionPolicy="Delete"), "-n", namespace
    )
    kept = wait_for_condition(cluster, namespace, "keeper", "NatsReady", "True")
    cleaned = wait_for_condition(cluster, namespace, "cleaner", "NatsReady", "True")
    cluster.kubectl("-n", namespace, "delete", "workerpool", "keeper", "cleaner")

    nc = await nats_endpoint.connect()
    js = nc.jetstream()
    assert await js.stream_info(kept["status"]["nats"]["stream"])
    assert await js.stream_info(kept["status"]["nats"]["deadLetterStream"])
    for name in (
        cleaned["status"]["nats"]["stream"],
        cleaned["status"]["nats"]["deadLetterStream"],
    ):
        with pytest.raises(NotFoundError):
            await js.stream_info(name)
    await nc.close()


def test_a_missing_credentials_secret_is_a_condition_not_a_crash(
    cluster: Cluster, namespace: str, operator: OperatorProcess | None, nats_endpoint: NatsEndpoint
) -> None:
    cluster.apply(
        pool_manifest(
            "nocreds", nats_endpoint.pod_url, nats={"credentialsSecret": {"name": "nats-creds"}}
        ),
        "-n",
        namespace,
    )
    pool = wait_for_condition(cluster, namespace, "nocreds", "NatsReady", "False")
    nats_ready = condition(pool, "NatsReady")
    assert nats_ready is not None
    assert "nats-creds" in nats_ready["message"]
    events = cluster.kubectl(
        "get", "events", "-n", namespace, "--field-selector", "involvedObject.name=nocreds"
    )
    assert "NatsError" in events
    if operator is not None:  # local provider: the operator process is still alive
        assert operator.process is not None
        assert operator.process.poll() is None


async def test_a_task_the_server_stops_delivering_is_moved_to_the_dead_letter_stream(
    cluster: Cluster, namespace: str, operator: OperatorProcess | None, nats_endpoint: NatsEndpoint
) -> None:
    # No workers run (paused): the test itself plays a worker that crashes on the task every
    # time, up to the consumer's maxDeliver (it naks, so no ack-wait delays).
    cluster.apply(
        pool_manifest("stranded", nats_endpoint.pod_url, paused=True, retry={"maxAttempts": 1}),
        "-n",
        namespace,
    )
    pool = wait_for_condition(cluster, namespace, "stranded", "NatsReady", "True")
    stream, dlq = pool["status"]["nats"]["stream"], pool["status"]["nats"]["deadLetterStream"]
    nc = await nats_endpoint.connect()
    js = nc.jetstream()
    await js.publish(
        f"tasks.{namespace}.stranded.x",
        b"{}",
        headers={"Nats-Msg-Id": "doomed", "Jetpool-Task-Id": "doomed"},
    )
    consumer = await js.pull_subscribe_bind("workers", stream=stream)
    max_deliver = (await js.consumer_info(stream, "workers")).config.max_deliver or 0
    assert max_deliver > 1
    for _ in range(max_deliver):
        for msg in await consumer.fetch(1, timeout=5):
            await msg.nak()
    # The server notices the exhausted task (and sends the advisory) on the next pull.
    with pytest.raises(nats.errors.TimeoutError):
        await consumer.fetch(1, timeout=1)

    async def moved() -> bool:
        return (await js.stream_info(dlq)).state.messages == 1

    deadline = asyncio.get_running_loop().time() + 30
    while not await moved():
        assert asyncio.get_running_loop().time() < deadline, "stranded task never dead-lettered"
        await asyncio.sleep(0.5)
    record = json.loads((await js.get_msg(dlq, 1)).data or b"{}")
    assert record["task_id"] == "doomed"
    assert record["error_type"] == "MaxDeliveriesExceeded"
    assert (await js.stream_info(stream)).state.messages == 0
    # no worker will write its state again: the operator records how it ended
    state = await Client(nc, namespace=namespace, pool="stranded").status("doomed")
    assert state is not None
    assert state.phase is TaskPhase.DEAD_LETTERED
    await nc.close()
