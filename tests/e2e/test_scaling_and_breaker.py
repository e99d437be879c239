"""The whole product: operator + workers + NATS + Kubernetes, end to end.

On the local provider each Running worker pod is a real ``jetpool-worker`` process
(``e2e/testbed/pod_runner.py``), so the replicas the autoscaler picks really consume and a
breaker trip really stops them; on kind they are real pods. Task completion and failure
injection go through a KV bucket (see ``tests/e2e/handlers.py``).
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from nats.js.errors import NotFoundError
from nats.js.kv import KeyValue

from e2e.testbed.cluster import Cluster, eventually
from e2e.testbed.pod_runner import PodRunner
from jetpool_protocol.dead_letter import DeadLetterRecord
from jetpool_protocol.envelope import task_headers
from tests.e2e.conftest import NatsEndpoint, pool_manifest
from tests.e2e.records import record_keys

pytestmark = [pytest.mark.kube, pytest.mark.nats, pytest.mark.e2e]


def worker_pool(name: str, nats_url: str, bucket: str, **spec: Any) -> dict[str, Any]:
    return pool_manifest(
        name,
        nats_url,
        template={
            "labels": {"jetpool.dev/process-backed": "true"},
            "env": [{"name": "JETPOOL_E2E_BUCKET", "value": bucket}],
        },
        **spec,
    )


async def publish(
    endpoint: NatsEndpoint, subject: str, ids: list[str], payload: dict[str, Any]
) -> None:
    nc = await endpoint.connect()
    js = nc.jetstream()
    body = json.dumps(payload).encode()
    now = datetime.now(UTC)
    await asyncio.gather(
        *(js.publish(subject, body, headers=task_headers(task_id=i, created_at=now)) for i in ids)
    )
    await nc.close()


async def done(kv: KeyValue, prefix: str = "done.") -> set[str]:
    """Task ids the handler finished (``again.``: finished more than once)."""
    return set(await record_keys(kv, prefix))


async def dead_lettered(endpoint: NatsEndpoint, stream: str) -> set[str]:
    nc = await endpoint.connect()
    js = nc.jetstream()
    ids: set[str] = set()
    info = await js.stream_info(stream)
    # An empty stream reports first_seq 0, and get_msg(0) is a bad request.
    first = max(info.state.first_seq, 1)
    for seq in range(first, info.state.last_seq + 1) if info.state.messages else ():
        try:
            msg = await js.get_msg(stream, seq)
        except NotFoundError:
            continue
        ids.add(DeadLetterRecord.model_validate_json(msg.data or b"").task_id)
    await nc.close()
    return ids


def status(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    return cluster.get_json("workerpool", name, "-n", namespace).get("status") or {}


def running_workers(cluster: Cluster, namespace: str, runner: PodRunner | None) -> int:
    """Live worker processes (local) or Running worker pods (kind)."""
    if runner is not None:
        return len(runner.running_pods(namespace))
    pods = cluster.get_json("pods", "-n", namespace, "-l", "app.kubernetes.io/name=jetpool-worker")
    return sum(1 for pod in pods["items"] if pod["status"].get("phase") == "Running")


async def wait_until(check: Any, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, f"timed out after {within}s waiting for {what}"
        await asyncio.sleep(0.5)


@pytest.mark.usefixtures("operator")
async def test_a_burst_scales_workers_up_drains_the_backlog_and_scales_back_to_zero(
    cluster: Cluster,
    namespace: str,
    nats_endpoint: NatsEndpoint,
    pod_runner: PodRunner | None,
    record: KeyValue,
) -> None:
    cluster.apply(
        worker_pool(
            "burst",
            nats_endpoint.pod_url,
            f"e2e-{namespace}",
            concurrency=4,
            scaling={
                "minReplicas": 0,
                "maxReplicas": 4,
                "targetBacklogPerReplica": 25,
                "scaleDownDelaySeconds": 5,
                "scaleToZeroDelaySeconds": 5,
            },
        ),
        "-n",
        namespace,
    )
    eventually(lambda: status(cluster, namespace, "burst").get("nats"), what="streams ready")
    eventually(
        lambda: status(cluster, namespace, "burst").get("desiredReplicas") == 0,
        what="an idle pool at zero replicas",
    )
    ids = [f"burst-{i}" for i in range(300)]
    published_at = time.monotonic()
    await publish(nats_endpoint, f"tasks.{namespace}.burst.job", ids, {"sleep": 0.05})

    peak = eventually(
        lambda: (
            (status(cluster, namespace, "burst").get("desiredReplicas") or 0) >= 2
            and status(cluster, namespace, "burst")["desiredReplicas"]
        ),
        timeout=30,
        what="replicas rising",
    )
    scale_up_seconds = time.monotonic() - published_at
    assert peak >= 2
    eventually(
        lambda: running_workers(cluster, namespace, pod_runner) >= 2,
        timeout=60,
        what="two or more workers consuming",
    )

    async def all_done() -> bool:
        return await done(record) == set(ids)

    await wait_until(all_done, 120, "every task done")
    eventually(
        lambda: (
            status(cluster, namespace, "burst").get("desiredReplicas") == 0
            and running_workers(cluster, namespace, pod_runner) == 0
        ),
        timeout=60,
        what="scaled back to zero",
    )
    if pod_runner is not None:  # every worker that was scaled away drained and exited cleanly
        assert all(code == 0 for _, code in pod_runner.exited), pod_runner.exited
    assert not await done(record, "again."), "scale-down made tasks run twice"
    assert scale_up_seconds < 10


@pytest.mark.usefixtures("operator")
async def test_failures_trip_the_breaker_everywhere_and_it_closes_when_they_stop(
    cluster: Cluster,
    namespace: str,
    nats_endpoint: NatsEndpoint,
    pod_runner: PodRunner | None,
    record: KeyValue,
) -> None:
    cluster.apply(
        worker_pool(
            "fragile",
            nats_endpoint.pod_url,
            f"e2e-{namespace}",
            concurrency=2,
            retry={"maxAttempts": 4, "backoff": {"initialSeconds": 1, "maxSeconds": 2}},
            scaling={"minReplicas": 2, "maxReplicas": 2},
            circuitBreaker={
                "errorRateThreshold": 0.5,
                "minTasks": 10,
                "windowSeconds": 10,
                "openSeconds": 10,
                "halfOpenTasks": 3,
            },
        ),
        "-n",
        namespace,
    )
    eventually(
        lambda: running_workers(cluster, namespace, pod_runner) == 2,
        timeout=60,
        what="two workers",
    )
    stream = eventually(lambda: status(cluster, namespace, "fragile")["nats"]["stream"])

    await record.put("FAIL", b"1")
    ids = [f"fragile-{i}" for i in range(60)]
    await publish(nats_endpoint, f"tasks.{namespace}.fragile.job", ids, {})
    eventually(
        lambda: status(cluster, namespace, "fragile")["circuitBreaker"]["state"] == "Open",
        timeout=60,
        what="breaker Open",
    )
    row = cluster.kubectl("get", "wp", "fragile", "-n", namespace, "--no-headers").split()
    assert "Open" in row

    # While Open, no worker fetches: the consumer delivers nothing (redeliveries included).
    # The first second after the trip may still bring tasks from pull requests sent before it
    # (they expire after 0.5 s); openSeconds (10) outlasts the whole measurement.
    await asyncio.sleep(1)
    nc = await nats_endpoint.connect()
    js = nc.jetstream()
    before = (await js.consumer_info(stream, "workers")).delivered.consumer_seq
    await asyncio.sleep(3)
    after = (await js.consumer_info(stream, "workers")).delivered.consumer_seq
    await nc.close()
    assert status(cluster, namespace, "fragile")["circuitBreaker"]["state"] == "Open"
    assert after == before

    await record.delete("FAIL")
    eventually(
        lambda: status(cluster, namespace, "fragile")["circuitBreaker"]["state"] == "Closed",
        timeout=90,
        what="breaker Closed again",
    )
    assert status(cluster, namespace, "fragile")["circuitBreaker"]["trips"] >= 1

    dlq = f"{stream}-dlq"

    async def accounted() -> bool:
        return await done(record) | await dead_lettered(nats_endpoint, dlq) == set(ids)

    await wait_until(accounted, 90, "every task done or dead-lettered")
    assert not await done(record) & await dead_lettered(nats_endpoint, dlq)


@pytest.mark.usefixtures("operator")
async def test_the_reset_annotation_closes_an_open_breaker_at_once(
    cluster: Cluster,
    namespace: str,
    nats_endpoint: NatsEndpoint,
    pod_runner: PodRunner | None,
    record: KeyValue,
) -> None:
    cluster.apply(
        worker_pool(
            "stuck",
            nats_endpoint.pod_url,
            f"e2e-{namespace}",
            retry={"maxAttempts": 10, "backoff": {"initialSeconds": 1, "maxSeconds": 2}},
            scaling={"minReplicas": 1, "maxReplicas": 1},
            circuitBreaker={"minTasks": 5, "windowSeconds": 10, "openSeconds": 3600},
        ),
        "-n",
        namespace,
    )
    eventually(lambda: running_workers(cluster, namespace, pod_runner) == 1, what="a worker")
    await record.put("FAIL", b"1")
    ids = [f"stuck-{i}" for i in range(20)]
    await publish(nats_endpoint, f"tasks.{namespace}.stuck.job", ids, {})
    eventually(
        lambda: status(cluster, namespace, "stuck")["circuitBreaker"]["state"] == "Open",
        timeout=60,
        what="breaker Open",
    )
    await record.delete("FAIL")

    cluster.kubectl(
        "annotate", "workerpool", "stuck", "-n", namespace, "jetpool.dev/reset-breaker=first"
    )
    breaker = eventually(
        lambda: (
            (b := status(cluster, namespace, "stuck")["circuitBreaker"])["state"] == "Closed" and b
        ),
        timeout=15,
        what="breaker closed by the annotation (openSeconds is an hour)",
    )
    assert breaker["reason"] == "ManualReset"
    assert breaker["lastResetToken"] == "first"

    async def all_done() -> bool:
        return await done(record) == set(ids)

    await wait_until(all_done, 90, "every task done after the reset")
