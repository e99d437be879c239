"""What only real containers can show: the images, the chart's operator pod, worker pods that
are killed for real, and the in-cluster NATS restarted under load.

These run on the kind provider only (``e2e/kind/run.sh``, part of ``make test``): the local
test bed has no container runtime.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
from typing import Any

import pytest
from nats.errors import Error as NatsError

from e2e.testbed.cluster import Cluster, eventually
from tests.e2e.conftest import PROVIDER, NatsEndpoint, condition, pool_manifest
from tests.e2e.test_scaling_and_breaker import (
    dead_lettered,
    done,
    publish,
    running_workers,
    status,
    wait_until,
    worker_pool,
)

pytestmark = [
    pytest.mark.kube,
    pytest.mark.nats,
    pytest.mark.e2e,
    pytest.mark.skipif(PROVIDER != "kind", reason="needs real containers (e2e/kind/run.sh)"),
]

OPERATOR_NAMESPACE = os.environ.get("JETPOOL_E2E_OPERATOR_NAMESPACE", "jetpool-system")
RELEASE = os.environ.get("JETPOOL_E2E_HELM_RELEASE", "jetpool")
OPERATOR_SELECTOR = "app.kubernetes.io/name=jetpool"


def operator_pods(cluster: Cluster) -> list[dict[str, Any]]:
    pods = cluster.get_json("pods", "-n", OPERATOR_NAMESPACE, "-l", OPERATOR_SELECTOR)
    return [p for p in pods["items"] if not p["metadata"].get("deletionTimestamp")]


def helm(cluster: Cluster, *args: str) -> str:
    proc = subprocess.run(
        [
            os.environ["JETPOOL_E2E_HELM"],
            "--kubeconfig",
            str(cluster.kubeconfig),
            "--namespace",
            OPERATOR_NAMESPACE,
            *args,
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def install_chart(cluster: Cluster, *values: str) -> None:
    """The release as e2e/kind/run.sh installs it, with extra --set values."""
    tag = os.environ.get("JETPOOL_E2E_OPERATOR_IMAGE_TAG", "e2e")
    sets = [
        "image.repository=jetpool-operator",
        f"image.tag={tag}",
        "image.pullPolicy=Never",
        "logging.verbose=true",
        *values,
    ]
    helm(
        cluster,
        "upgrade",
        "--install",
        RELEASE,
        "charts/jetpool",
        *(arg for value in sets for arg in ("--set", value)),
        "--wait",
        "--timeout",
        "5m",
    )


def all_ready(pods: list[dict[str, Any]]) -> bool:
    return bool(pods) and all(
        any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in p["status"].get("conditions", [])
        )
        for p in pods
    )


def test_the_images_were_built_here_from_the_repository_dockerfiles() -> None:
    listed = subprocess.run(
        ["docker", "images", "--format", "{{.Repository}}:{{.Tag}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    worker_image = os.environ["JETPOOL_E2E_WORKER_IMAGE"]
    tag = worker_image.rsplit(":", 1)[1]
    for image in (f"jetpool-operator:{tag}", f"jetpool-worker:{tag}", worker_image):
        assert image in listed
    # The handler image is built FROM the worker image, as docs/packaging.md tells users.
    history = subprocess.run(
        ["docker", "history", "--no-trunc", "--format", "{{.ID}}", worker_image],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    worker_id = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Id}}", f"jetpool-worker:{tag}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert worker_id in history


def test_the_operator_runs_from_the_chart_under_its_service_account_and_restricted_security(
    cluster: Cluster,
) -> None:
    nodes = cluster.get_json("nodes")["items"]
    assert nodes
    assert all(
        any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"]["conditions"])
        for n in nodes
    )
    namespace = cluster.get_json("namespace", OPERATOR_NAMESPACE)
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"

    pods = operator_pods(cluster)
    assert all_ready(pods), [p["status"] for p in pods]
    for pod in pods:
        spec = pod["spec"]
        assert spec["serviceAccountName"] == f"{RELEASE}-operator"
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        (container,) = spec["containers"]
        assert container["image"].startswith("jetpool-operator:")
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]

    service_account = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{RELEASE}-operator"

    def can(verb: str, resource: str) -> bool:
        answer = cluster.kubectl(
            "auth", "can-i", verb, resource, f"--as={service_account}", check=False
        )
        return answer.strip() == "yes"

    assert can("patch", "workerpools.jetpool.dev/status")
    assert can("create", "deployments.apps")
    assert not can("delete", "nodes")
    assert not can("create", "pods/exec")


def test_helm_upgrade_with_a_changed_value_rolls_the_operator(cluster: Cluster) -> None:
    before = {p["metadata"]["uid"] for p in operator_pods(cluster)}
    install_chart(cluster, "logging.format=text")
    try:
        pods = eventually(
            lambda: (
                (now := operator_pods(cluster))
                and not {p["metadata"]["uid"] for p in now} & before
                and all_ready(now)
                and now
            ),
            timeout=180,
            what="every operator pod replaced by the upgrade",
        )
        for pod in pods:
            env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
            assert env["JETPOOL_LOG_FORMAT"] == "text"
    finally:
        install_chart(cluster)


async def test_helm_uninstall_keeps_the_crd_the_pools_and_their_streams(
    cluster: Cluster, namespace: str, nats_endpoint: NatsEndpoint
) -> None:
    cluster.apply(
        pool_manifest("kept", nats_endpoint.pod_url, **nats_endpoint.pool_spec()), "-n", namespace
    )
    stream = eventually(
        lambda: (status(cluster, namespace, "kept").get("nats") or {}).get("stream")
    )

    helm(cluster, "uninstall", RELEASE, "--wait", "--timeout", "3m")
    try:
        eventually(lambda: not operator_pods(cluster), timeout=120, what="operator pods gone")
        assert cluster.get_json("crd", "workerpools.jetpool.dev")["metadata"]["name"]
        assert cluster.get_json("workerpool", "kept", "-n", namespace)["metadata"]["name"] == "kept"
        nc = await nats_endpoint.connect()
        try:
            info = await nc.jetstream().stream_info(stream)
            assert info.config.name == stream
            await nc.jetstream().stream_info(f"{stream}-dlq")
        finally:
            await nc.close()
    finally:
        install_chart(cluster)
    # Reinstalled, the operator takes the pool up again.
    eventually(lambda: all_ready(operator_pods(cluster)), timeout=180, what="operator back")
    pool = eventually(
        lambda: (
            (p := cluster.get_json("workerpool", "kept", "-n", namespace))
            and (c := condition(p, "Ready"))
            and c["status"] == "True"
            and p
        ),
        timeout=120,
        what="pool Ready under the reinstalled operator",
    )
    assert pool["status"]["nats"]["stream"] == stream


@pytest.mark.timeout(600)
async def test_a_force_deleted_worker_and_a_restarted_nats_lose_no_task(
    cluster: Cluster, namespace: str, nats_endpoint: NatsEndpoint
) -> None:
    # The handlers' ledger, made on a connection of its own: the `record` fixture's connection
    # would be cut by the NATS restart.
    nc = await nats_endpoint.connect()
    record = await nc.jetstream().create_key_value(bucket=f"e2e-{namespace}")
    cluster.apply(
        worker_pool(
            "sturdy",
            nats_endpoint.pod_url,
            f"e2e-{namespace}",
            concurrency=4,
            task={"timeoutSeconds": 10},
            scaling={"minReplicas": 2, "maxReplicas": 3, "targetBacklogPerReplica": 50},
        ),
        "-n",
        namespace,
    )
    eventually(
        lambda: running_workers(cluster, namespace, None) >= 2, timeout=120, what="two workers"
    )
    stream = eventually(lambda: status(cluster, namespace, "sturdy")["nats"]["stream"])
    ids = [f"sturdy-{i}" for i in range(400)]
    await publish(nats_endpoint, f"tasks.{namespace}.sturdy.job", ids, {"sleep": 0.05})

    async def some_done(count: int) -> bool:
        return len(await done(record)) >= count

    await wait_until(lambda: some_done(40), 120, "some tasks done")
    victim = next(
        p["metadata"]["name"]
        for p in cluster.get_json(
            "pods", "-n", namespace, "-l", "app.kubernetes.io/name=jetpool-worker"
        )["items"]
        if p["status"].get("phase") == "Running"
    )
    cluster.kubectl("delete", "pod", victim, "-n", namespace, "--grace-period=0", "--force")

    await wait_until(lambda: some_done(120), 120, "more tasks done after the kill")
    assert len(await done(record)) < len(ids), "the NATS restart came too late to matter"
    cluster.kubectl("delete", "pod", "nats-0", "-n", "nats", "--wait=false")
    cluster.kubectl("-n", "nats", "rollout", "status", "statefulset/nats", "--timeout=180s")

    dlq = f"{stream}-dlq"

    async def ledger(prefix: str) -> set[str]:
        # A connection of its own each time: the fixture's was cut by the restart.
        nc = await nats_endpoint.connect()
        try:
            kv = await nc.jetstream().key_value(f"e2e-{namespace}")
            return await asyncio.wait_for(done(kv, prefix), 20)
        finally:
            await nc.close()

    async def accounted() -> bool:
        try:
            finished = await ledger("done.")
            return finished | await dead_lettered(nats_endpoint, dlq) == set(ids)
        except (NatsError, TimeoutError):  # JetStream still recovering after the restart
            return False

    await wait_until(accounted, 240, "every task done or dead-lettered")
    finished = await ledger("done.")
    dead = await dead_lettered(nats_endpoint, dlq)
    assert not finished & dead, "a task was both done and dead-lettered"
    reruns = await ledger("again.")
    # At-least-once: only a task whose handler had finished when its worker was killed or its
    # ack was lost with the NATS restart may run again; that is at most what was in flight.
    in_flight_bound = 3 * 4 * 2
    assert len(reruns) <= in_flight_bound, sorted(reruns)
    print(json.dumps({"done": len(finished), "dead_lettered": len(dead), "reran": len(reruns)}))
    with contextlib.suppress(NatsError, TimeoutError):
        await asyncio.wait_for(nc.close(), 10)
    eventually(
        lambda: (
            (c := condition(cluster.get_json("workerpool", "sturdy", "-n", namespace), "NatsReady"))
            and c["status"] == "True"
        ),
        timeout=60,
        what="NatsReady again after the restart",
    )
