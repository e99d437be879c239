"""Flow control as a user meets it: WorkerPools with ``spec.rateLimit``,
``spec.keyedConcurrency``, ``spec.priorities`` or ``spec.ordered`` applied with kubectl, tasks
published with ``jetpool.Client``, pools scaled mid-run, workers killed, and the handler's own
record of when each task started and ended (``tests/e2e/handlers.py:paced``)."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import time
from dataclasses import dataclass
from typing import Any

import pytest
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from e2e.testbed.cluster import Cluster, eventually
from e2e.testbed.pod_runner import PodRunner
from jetpool import Client
from tests.e2e.conftest import NatsEndpoint
from tests.e2e.records import recorded
from tests.e2e.test_scaling_and_breaker import status, wait_until, worker_pool
from tests.rates import most_at_once, sliding_counts

pytestmark = [pytest.mark.kube, pytest.mark.nats, pytest.mark.e2e]

PACED = "tests.e2e.handlers:paced"
KEYED_BY_CUSTOMER = {"header": "Customer", "maxPerKey": 2}
HIGH_AND_LOW = {
    "levels": [{"name": "high", "weight": 9}, {"name": "low", "weight": 1}],
    "default": "low",
}
FETCH_CYCLE_SECONDS = 0.5
"""A worker's pull expiry and re-sweep interval (``consumer_loop``)."""


def ready(cluster: Cluster, namespace: str, name: str, replicas: int) -> bool:
    return (status(cluster, namespace, name).get("readyReplicas") or 0) >= replicas


@dataclass
class PacedPool:
    """A pool of ``paced`` handlers applied with kubectl, and a client of it."""

    cluster: Cluster
    namespace: str
    endpoint: NatsEndpoint
    name: str
    spec: dict[str, Any]
    nc: Any = None
    client: Client | None = None

    def apply(self, replicas: int) -> None:
        """(Re)apply the pool at a fixed ``replicas`` and wait until they are ready."""
        manifest = worker_pool(
            self.name,
            self.endpoint.pod_url,
            f"e2e-{self.namespace}",
            handler=PACED,
            concurrency=4,
            scaling={"minReplicas": replicas, "maxReplicas": replicas, "pollIntervalSeconds": 1},
            **self.spec,
        )
        self.cluster.apply(manifest, "-n", self.namespace)
        eventually(
            lambda: ready(self.cluster, self.namespace, self.name, replicas),
            timeout=180,
            what=f"{replicas} workers",
        )

    async def start(self, replicas: int) -> Client:
        self.apply(replicas)
        self.nc = await self.endpoint.connect()
        self.client = Client(self.nc, namespace=self.namespace, pool=self.name)
        return self.client

    async def dead_letters(self) -> int:
        dlq = status(self.cluster, self.namespace, self.name)["nats"]["deadLetterStream"]
        return int((await self.nc.jetstream().stream_info(dlq)).state.messages)


@pytest.mark.usefixtures("operator", "pod_runner")
@pytest.mark.timeout(420)
async def test_a_rate_limit_of_50_per_second_holds_in_every_5s_window_while_4_workers_become_8(
    cluster: Cluster, namespace: str, nats_endpoint: NatsEndpoint, record: KeyValue
) -> None:
    pool = PacedPool(
        cluster, namespace, nats_endpoint, "paced", {"rateLimit": {"perSecond": 50, "burst": 5}}
    )
    client = await pool.start(4)
    tasks = 1600  # 32 s at the limit: a backlog for the whole run
    ids = [h.id for h in await client.publish_batch([{"sleep": 0.02}] * tasks)]
    await asyncio.sleep(10)
    pool.apply(8)

    async def all_done() -> bool:
        return len(await recorded(record, "done.")) >= tasks

    await wait_until(all_done, 240, "every task done")
    starts = await recorded(record, "start.")
    assert set(starts) == set(ids)  # every task ran: none dropped, none dead-lettered
    assert await recorded(record, "restart.") == {}  # and none ran twice
    assert await pool.dead_letters() == 0
    windows = sliding_counts(list(starts.values()), width=5.0, step=1.0)
    print(json.dumps({"tasks": tasks, "windows_5s": windows}))
    assert len(windows) >= 20
    assert all(225 <= n <= 275 for n in windows), windows  # 250 per 5 s, within 10 %
    await pool.nc.close()


@pytest.mark.usefixtures("operator", "pod_runner")
@pytest.mark.timeout(300)
async def test_keyed_concurrency_2_never_runs_more_than_2_tasks_of_a_key_at_once(
    cluster: Cluster, namespace: str, nats_endpoint: NatsEndpoint, record: KeyValue
) -> None:
    pool = PacedPool(
        cluster, namespace, nats_endpoint, "keyed", {"keyedConcurrency": KEYED_BY_CUSTOMER}
    )
    client = await pool.start(3)
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
    assert await pool.dead_letters() == 0
    await pool.nc.close()


@pytest.mark.usefixtures("operator", "pod_runner")
@pytest.mark.timeout(300)
async def test_high_priority_tasks_overtake_a_low_backlog_and_low_keeps_its_share(
    cluster: Cluster, namespace: str, nats_endpoint: NatsEndpoint, record: KeyValue
) -> None:
    name = "ranked"
    pool = PacedPool(cluster, namespace, nats_endpoint, name, {"priorities": HIGH_AND_LOW})
    client = await pool.start(2)
    lows = [h.id for h in await client.publish_batch([{"sleep": 0.1}] * 600)]

    async def started(count: int) -> bool:
        return len(await recorded(record, "start.")) >= count

    await wait_until(lambda: started(40), 60, "low tasks running")

    def by_level() -> dict[str, int]:
        return status(cluster, namespace, name).get("backlogByLevel") or {}

    # One high task at a time behind the low backlog: each starts within one fetch cycle
    waits = []
    for _ in range(5):
        published = time.time()
        high = await client.publish({"sleep": 0.1}, priority="high")
        await wait_until(
            lambda task_id=high.id: started_one(record, task_id), 10, "the high task started"
        )
        waits.append((await recorded(record, "start."))[high.id] - published)
        await asyncio.sleep(0.5)
    levels_seen = by_level()
    # A burst of high tasks: while both levels wait, low still gets its 1 in 10
    burst_at = time.time()
    highs = [h.id for h in await client.publish_batch([{"sleep": 0.1}] * 300, priority="high")]

    async def all_done() -> bool:
        return len(await recorded(record, "done.")) >= len(lows) + 5 + len(highs)

    await wait_until(all_done, 180, "every task done")
    starts = await recorded(record, "start.")
    last_high = max(starts[i] for i in highs)
    low_meanwhile = sum(1 for i in lows if burst_at <= starts[i] <= last_high)
    share = low_meanwhile / (low_meanwhile + len(highs))
    low_left_at_burst = sum(1 for i in lows if starts[i] > burst_at)
    print(
        json.dumps(
            {
                "high_start_after_publish_s": [round(w, 3) for w in waits],
                "low_share_during_high_burst": round(share, 3),
                "low_waiting_at_burst": low_left_at_burst,
                "backlog_by_level": levels_seen,
            }
        )
    )
    assert low_left_at_burst > len(highs) // 3  # low still had a backlog all through the burst
    assert all(w < FETCH_CYCLE_SECONDS for w in waits), waits
    assert 0.05 <= share <= 0.18, share  # weights 9:1
    assert levels_seen.get("low", 0) > 0
    assert await recorded(record, "restart.") == {}
    assert await pool.dead_letters() == 0
    await pool.nc.close()


async def started_one(kv: KeyValue, task_id: str) -> bool:
    try:
        await kv.get(f"start.{task_id}")
    except KeyNotFoundError:
        return False
    return True


@pytest.mark.usefixtures("operator")
@pytest.mark.timeout(420)
async def test_ordered_keys_run_in_publish_order_without_overlap_when_a_worker_is_killed(
    cluster: Cluster,
    namespace: str,
    nats_endpoint: NatsEndpoint,
    record: KeyValue,
    pod_runner: PodRunner | None,
) -> None:
    # task.timeoutSeconds 5: a killed worker's task is redelivered after about that
    spec = {"ordered": {"partitions": 8}, "task": {"timeoutSeconds": 5}}
    pool = PacedPool(cluster, namespace, nats_endpoint, "ordered", spec)
    client = await pool.start(4)
    rng = random.Random(20)
    keys = [f"account-{i}" for i in range(20)]
    plan = [(rng.choice(keys), round(rng.uniform(0.01, 0.06), 3)) for _ in range(1000)]
    by_key: dict[str, list[str]] = {k: [] for k in keys}

    async def publish_key(key: str) -> None:
        for k, sleep in plan:
            if k == key:  # one key's tasks one after another: that is its publish order
                handle = await client.publish({"sleep": sleep}, ordered_key=key)
                by_key[key].append(handle.id)

    await asyncio.gather(*(publish_key(k) for k in keys))

    async def done_at_least(count: int) -> bool:
        return len(await recorded(record, "done.")) >= count

    await wait_until(lambda: done_at_least(300), 120, "a third done")
    victim = next(
        p["metadata"]["name"]
        for p in cluster.get_json(
            "pods", "-n", namespace, "-l", "app.kubernetes.io/name=jetpool-worker"
        )["items"]
        if p["status"].get("phase") == "Running"
    )
    if pod_runner is not None:
        pod_runner.kill(victim)  # SIGKILL of the worker process
    else:
        cluster.kubectl("delete", "pod", victim, "-n", namespace, "--grace-period=0", "--force")
    await wait_until(lambda: done_at_least(len(plan)), 240, "every task done")
    starts, ends = await recorded(record, "start."), await recorded(record, "done.")
    reruns = await recorded(record, "restart.")
    assert set(ends) == {i for ids in by_key.values() for i in ids}  # nothing lost
    out_of_order = [
        (a, b)
        for ids in by_key.values()
        for a, b in itertools.pairwise(ids)
        if not ends[a] <= starts[b]  # b's first start after a's last end: order, no overlap
    ]
    print(
        json.dumps({"tasks": len(plan), "keys": len(keys), "reran": len(reruns), "victim": victim})
    )
    assert out_of_order == [], out_of_order[:5]
    assert len(reruns) <= 4  # at most what the killed worker had running (its concurrency)
    assert await pool.dead_letters() == 0
    await pool.nc.close()
