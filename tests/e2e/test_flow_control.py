"""Flow control as a user meets it: WorkerPools with ``spec.rateLimit`` or
``spec.keyedConcurrency`` applied with kubectl, tasks published with ``jetpool.Client``, pools
scaled mid-run, and the handler's own record of when each task started and ended
(``tests/e2e/handlers.py:paced``)."""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import pytest
from nats.js.kv import KeyValue

from e2e.testbed.cluster import Cluster, eventually
from jetpool import Client
from tests.e2e.conftest import NatsEndpoint
from tests.e2e.test_scaling_and_breaker import status, wait_until, worker_pool
from tests.rates import most_at_once, sliding_counts

pytestmark = [pytest.mark.kube, pytest.mark.nats, pytest.mark.e2e]

PACED = "tests.e2e.handlers:paced"


async def recorded(kv: KeyValue, prefix: str) -> dict[str, float]:
    """``<prefix><id>`` -> the wall-clock seconds the handler recorded, read in one watch."""
    watcher = await kv.watch(f"{prefix}>", ignore_deletes=True)
    values: dict[str, float] = {}
    try:
        while (entry := await watcher.updates(timeout=10)) is not None:
            values[entry.key.removeprefix(prefix)] = float(entry.value or b"0")
    finally:
        await watcher.stop()
    return values


def ready(cluster: Cluster, namespace: str, name: str, replicas: int) -> bool:
    return (status(cluster, namespace, name).get("readyReplicas") or 0) >= replicas


@pytest.mark.usefixtures("operator", "pod_runner")
@pytest.mark.timeout(420)
async def test_a_rate_limit_of_50_per_second_holds_in_every_5s_window_while_4_workers_become_8(
    cluster: Cluster, namespace: str, nats_endpoint: NatsEndpoint, record: KeyValue
) -> None:
    name = "paced"

    def manifest(replicas: int) -> dict[str, Any]:
        return worker_pool(
            name,
            nats_endpoint.pod_url,
            f"e2e-{namespace}",
            handler=PACED,
            concurrency=4,
            rateLimit={"perSecond": 50, "burst": 5},
            scaling={"minReplicas": replicas, "maxReplicas": replicas, "pollIntervalSeconds": 1},
        )

    cluster.apply(manifest(4), "-n", namespace)
    eventually(lambda: ready(cluster, namespace, name, 4), timeout=180, what="four workers")
    nc = await nats_endpoint.connect()
    client = Client(nc, namespace=namespace, pool=name)
    tasks = 1600  # 32 s at the limit: a backlog for the whole run
    ids = [h.id for h in await client.publish_batch([{"sleep": 0.02}] * tasks)]
    await asyncio.sleep(10)
    cluster.apply(manifest(8), "-n", namespace)
    eventually(lambda: ready(cluster, namespace, name, 8), timeout=120, what="eight workers")

    async def all_done() -> bool:
        return len(await recorded(record, "done.")) >= tasks

    await wait_until(all_done, 240, "every task done")
    starts = await recorded(record, "start.")
    assert set(starts) == set(ids)  # every task ran: none dropped, none dead-lettered
    assert await recorded(record, "restart.") == {}  # and none ran twice
    dlq = status(cluster, namespace, name)["nats"]["deadLetterStream"]
    assert (await nc.jetstream().stream_info(dlq)).state.messages == 0
    windows = sliding_counts(list(starts.values()), width=5.0, step=1.0)
    print(json.dumps({"tasks": tasks, "windows_5s": windows}))
    assert len(windows) >= 20
    assert all(225 <= n <= 275 for n in windows), windows  # 250 per 5 s, within 10 %
    await nc.close()


@pytest.mark.usefixtures("operator", "pod_runner")
@pytest.mark.timeout(300)
async def test_keyed_concurrency_2_never_runs_more_than_2_tasks_of_a_key_at_once(
    cluster: Cluster, namespace: str, nats_endpoint: NatsEndpoint, record: KeyValue
) -> None:
    name = "keyed"
    cluster.apply(
        worker_pool(
            name,
            nats_endpoint.pod_url,
            f"e2e-{namespace}",
            handler=PACED,
            concurrency=4,
            keyedConcurrency={"header": "Customer", "maxPerKey": 2},
            scaling={"minReplicas": 3, "maxReplicas": 3, "pollIntervalSeconds": 1},
        ),
        "-n",
        namespace,
    )
    eventually(lambda: ready(cluster, namespace, name, 3), timeout=180, what="three workers")
    nc = await nats_endpoint.connect()
    client = Client(nc, namespace=namespace, pool=name)
    rng = random.Random(13)
    keys = [f"customer-{i}" for i in range(4)]
    tasks = [(rng.choice(keys), round(rng.uniform(0.05, 0.2), 3)) for _ in range(240)]
    handles = await asyncio.gather(
        *(client.publish({"sleep": sleep}, headers={"Customer": key}) for key, sleep in tasks)
    )
    key_of = {h.id: key for h, (key, _) in zip(handles, tasks, strict=True)}

    async def all_done() -> bool:
        return len(await recorded(record, "done.")) >= len(tasks)

    await wait_until(all_done, 180, "every task done")
    starts, ends = await recorded(record, "start."), await recorded(record, "done.")
    assert set(starts) == set(key_of)  # every task ran
    assert await recorded(record, "restart.") == {}  # once
    peaks = {
        key: most_at_once([(starts[i], ends[i]) for i, k in key_of.items() if k == key])
        for key in keys
    }
    print(json.dumps({"tasks": len(tasks), "most_running_per_key": peaks}))
    assert all(peak <= 2 for peak in peaks.values()), peaks
    assert max(peaks.values()) == 2  # the limit is used, not one at a time
    dlq = status(cluster, namespace, name)["nats"]["deadLetterStream"]
    assert (await nc.jetstream().stream_info(dlq)).state.messages == 0
    await nc.close()
