"""Health sees what the workers see: a worker held above its memory limit is named in the
pool's health (``kubectl get wp``) within seconds, though it stays Ready."""

from __future__ import annotations

import time

import pytest
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from e2e.testbed.cluster import Cluster, eventually
from jetpool import Client
from tests.e2e.conftest import NatsEndpoint
from tests.e2e.test_scaling_and_breaker import status, wait_until, worker_pool

pytestmark = [pytest.mark.kube, pytest.mark.nats, pytest.mark.e2e]


@pytest.mark.usefixtures("operator", "pod_runner")
@pytest.mark.timeout(240)
async def test_a_worker_above_its_memory_limit_is_named_in_health_within_10_seconds(
    cluster: Cluster, namespace: str, nats_endpoint: NatsEndpoint, record: KeyValue
) -> None:
    name = "hungry"
    cluster.apply(
        worker_pool(
            name,
            nats_endpoint.pod_url,
            f"e2e-{namespace}",
            handler="tests.e2e.handlers:hog",
            concurrency=1,
            memoryLimitBytes=256 * 1024 * 1024,
            scaling={"minReplicas": 1, "maxReplicas": 1},
        ),
        "-n",
        namespace,
    )
    eventually(
        lambda: (status(cluster, namespace, name).get("readyReplicas") or 0) >= 1,
        timeout=180,
        what="a ready worker",
    )
    pods = cluster.get_json("pods", "-n", namespace, "-l", f"app.kubernetes.io/instance={name}")[
        "items"
    ]
    (worker,) = [p["metadata"]["name"] for p in pods if p["status"].get("phase") == "Running"]
    nc = await nats_endpoint.connect()
    task = await Client(nc, namespace=namespace, pool=name).publish({"hold_mb": 400})

    async def held() -> bool:
        try:
            await record.get(f"held.{task.id}")
        except KeyNotFoundError:
            return False
        return True

    await wait_until(held, 60, "the handler holding its memory")
    over_limit_at = float((await record.get(f"held.{task.id}")).value or b"0")

    def named_issue() -> dict[str, str] | None:
        issues = (status(cluster, namespace, name).get("health") or {}).get("issues") or []
        return next(
            (i for i in issues if i["type"] == "WorkersMemoryPaused" and worker in i["message"]),
            None,
        )

    issue = eventually(named_issue, timeout=30, interval=0.25, what="the memory issue")
    seen_after = time.time() - over_limit_at
    print({"issue": issue, "seconds_after_going_over": round(seen_after, 2)})
    assert seen_after <= 10, seen_after
    assert (status(cluster, namespace, name).get("readyReplicas") or 0) == 1  # still Ready
    await nc.close()
