"""The whole product: operator + process-backed workers + NATS + the local cluster.

Each Running worker pod is a real ``jetpool-worker`` process (``e2e/pod_runner.py``), so the
replicas the autoscaler picks really consume, and a breaker trip really stops them.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.js.errors import NotFoundError

from e2e.testbed.cluster import Cluster, eventually
from e2e.testbed.operator_process import OperatorProcess
from e2e.testbed.pod_runner import PodRunner
from jetpool_protocol.dead_letter import DeadLetterRecord
from jetpool_protocol.envelope import task_headers
from tests.e2e.conftest import PROVIDER, NatsEndpoint, pool_manifest

pytestmark = [
    pytest.mark.kube,
    pytest.mark.nats,
    pytest.mark.e2e,
    pytest.mark.skipif(PROVIDER != "local", reason="records task completion in local files"),
]


def worker_pool(name: str, nats_url: str, record_dir: Path, **spec: Any) -> dict[str, Any]:
    (record_dir / "done").mkdir(parents=True, exist_ok=True)
    return pool_manifest(
        name,
        nats_url,
        template={
            "labels": {"jetpool.dev/process-backed": "true"},
            "env": [{"name": "JETPOOL_E2E_RECORD_DIR", "value": str(record_dir)}],
        },
        **spec,
    )


async def publish(url: str, subject: str, ids: list[str], payload: dict[str, Any]) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    body = json.dumps(payload).encode()
    now = datetime.now(UTC)
    for task_id in ids:
        await js.publish(subject, body, headers=task_headers(task_id=task_id, created_at=now))
    await nc.close()


async def dead_lettered(url: str, stream: str) -> set[str]:
    nc = await nats.connect(url)
    js = nc.jetstream()
    ids: set[str] = set()
    try:
        info = await js.stream_info(stream)
    except NotFoundError:
        return ids
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        try:
            msg = await js.get_msg(stream, seq)
        except NotFoundError:
            continue
        ids.add(DeadLetterRecord.model_validate_json(msg.data or b"").task_id)
    await nc.close()
    return ids


def status(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    return cluster.get_json("workerpool", name, "-n", namespace).get("status") or {}


def done(record_dir: Path) -> set[str]:
    return {p.name for p in (record_dir / "done").iterdir()}


async def test_a_burst_scales_workers_up_drains_the_backlog_and_scales_back_to_zero(
    cluster: Cluster,
    namespace: str,
    operator: OperatorProcess,
    nats_endpoint: NatsEndpoint,
    pod_runner: PodRunner,
    tmp_path: Path,
) -> None:
    cluster.apply(
        worker_pool(
            "burst",
            nats_endpoint.pod_url,
            tmp_path,
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
    await publish(nats_endpoint.test_url, f"tasks.{namespace}.burst.job", ids, {"sleep": 0.05})

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
    eventually(lambda: len(pod_runner.running_pods()) >= 2, timeout=30, what="workers running")

    eventually(lambda: done(tmp_path) == set(ids), timeout=120, what="every task done")
    eventually(
        lambda: (
            status(cluster, namespace, "burst").get("desiredReplicas") == 0
            and not pod_runner.running_pods()
        ),
        timeout=60,
        what="scaled back to zero",
    )
    assert all(code == 0 for _, code in pod_runner.exited), pod_runner.exited
    assert scale_up_seconds < 10


async def test_failures_trip_the_breaker_everywhere_and_it_closes_when_they_stop(
    cluster: Cluster,
    namespace: str,
    operator: OperatorProcess,
    nats_endpoint: NatsEndpoint,
    pod_runner: PodRunner,
    tmp_path: Path,
) -> None:
    cluster.apply(
        worker_pool(
            "fragile",
            nats_endpoint.pod_url,
            tmp_path,
            concurrency=2,
            retry={"maxAttempts": 4, "backoff": {"initialSeconds": 1, "maxSeconds": 2}},
            scaling={"minReplicas": 2, "maxReplicas": 2},
            circuitBreaker={
                "errorRateThreshold": 0.5,
                "minTasks": 10,
                "windowSeconds": 10,
                "openSeconds": 5,
                "halfOpenTasks": 3,
            },
        ),
        "-n",
        namespace,
    )
    eventually(lambda: len(pod_runner.running_pods()) >= 2, timeout=60, what="two workers")
    stream = eventually(lambda: status(cluster, namespace, "fragile")["nats"]["stream"])

    (tmp_path / "FAIL").touch()
    ids = [f"fragile-{i}" for i in range(60)]
    await publish(nats_endpoint.test_url, f"tasks.{namespace}.fragile.job", ids, {})
    eventually(
        lambda: status(cluster, namespace, "fragile")["circuitBreaker"]["state"] == "Open",
        timeout=60,
        what="breaker Open",
    )
    row = cluster.kubectl("get", "wp", "fragile", "-n", namespace, "--no-headers").split()
    assert "Open" in row

    # Open: no worker fetches. The consumer's delivered count must stand still.
    nc = await nats.connect(nats_endpoint.test_url)
    js = nc.jetstream()
    before = (await js.consumer_info(stream, "workers")).delivered.stream_seq
    await asyncio.sleep(3)
    after = (await js.consumer_info(stream, "workers")).delivered.stream_seq
    await nc.close()
    if status(cluster, namespace, "fragile")["circuitBreaker"]["state"] == "Open":
        assert after == before

    (tmp_path / "FAIL").unlink()
    eventually(
        lambda: status(cluster, namespace, "fragile")["circuitBreaker"]["state"] == "Closed",
        timeout=90,
        what="breaker Closed again",
    )
    assert status(cluster, namespace, "fragile")["circuitBreaker"]["trips"] >= 1

    dlq = f"{stream}-dlq"

    async def accounted() -> bool:
        return done(tmp_path) | await dead_lettered(nats_endpoint.test_url, dlq) == set(ids)

    deadline = time.monotonic() + 90
    while not await accounted():
        assert time.monotonic() < deadline, "not every task is done or dead-lettered"
        await asyncio.sleep(1)
    assert not done(tmp_path) & await dead_lettered(nats_endpoint.test_url, dlq)
