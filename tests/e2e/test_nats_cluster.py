"""A WorkerPool on a three-server NATS cluster, end to end: applied with kubectl, its streams
and the control bucket at R3, its process-backed workers and the operator riding through the
SIGKILL of the consumer leader's server mid-burst, every task done by the handler's own record.

Local provider only: the cluster runs on this host (kind's NATS is one in-cluster server).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from nats.js.api import KeyValueConfig
from nats.js.kv import KeyValue

from e2e.testbed.cluster import Cluster, eventually
from e2e.testbed.nats_cluster import NatsCluster
from e2e.testbed.pod_runner import PodRunner
from tests.cluster.support import answered, resumed_after
from tests.e2e.conftest import PROVIDER, NatsEndpoint, condition
from tests.e2e.records import record_keys, recorded
from tests.e2e.test_scaling_and_breaker import publish, status, wait_until, worker_pool

pytestmark = [
    pytest.mark.kube,
    pytest.mark.nats,
    pytest.mark.nats_cluster,
    pytest.mark.e2e,
    pytest.mark.skipif(PROVIDER != "local", reason="the three-server cluster runs on this host"),
]

TASKS = 400


@pytest.fixture(scope="module")
def nats_endpoint(nats_cluster: NatsCluster) -> NatsEndpoint:
    """This module's pools, workers and handlers use the cluster (every server in the URL)."""
    return NatsEndpoint(nats_cluster.url, nats_cluster.url)


@pytest.fixture
async def record(nats_endpoint: NatsEndpoint, namespace: str) -> AsyncIterator[KeyValue]:
    """The handler's record at R3 too: it must outlive the server the test kills."""
    nc = await nats_endpoint.connect()
    js = nc.jetstream(timeout=10)
    kv = await js.create_key_value(KeyValueConfig(bucket=f"e2e-{namespace}", replicas=3))
    yield kv
    await js.delete_key_value(f"e2e-{namespace}")
    await nc.close()


@pytest.mark.usefixtures("operator")
@pytest.mark.timeout(300)
async def test_an_r3_pool_finishes_a_burst_through_the_loss_of_its_consumer_leaders_server(
    cluster: Cluster,
    namespace: str,
    nats_endpoint: NatsEndpoint,
    record: KeyValue,
    whole_cluster: NatsCluster,
    pod_runner: PodRunner,
) -> None:
    name = "replicated"
    cluster.apply(
        worker_pool(
            name,
            nats_endpoint.pod_url,
            f"e2e-{namespace}",
            handler="tests.e2e.handlers:paced",
            nats={"replicas": 3},
            # the handler's own record is on the cluster too: while a leader is elected its
            # writes fail, and these retries must outlast the election (about 5-8 s)
            retry={"maxAttempts": 10, "backoff": {"initialSeconds": 1, "maxSeconds": 4}},
            concurrency=4,
            scaling={"minReplicas": 2, "maxReplicas": 3, "pollIntervalSeconds": 1},
        ),
        "-n",
        namespace,
    )
    eventually(
        lambda: (status(cluster, namespace, name).get("readyReplicas") or 0) >= 2,
        timeout=180,
        what="two ready workers",
    )
    pool = cluster.get_json("workerpool", name, "-n", namespace)
    replicated = condition(pool, "ControlReplicated")
    assert replicated is not None
    assert (replicated["status"], replicated["reason"]) == ("True", "Replicated")
    stream = pool["status"]["nats"]["stream"]

    nc = await nats_endpoint.connect()
    js = nc.jetstream(timeout=10)
    info = await js.stream_info(stream)
    assert info.config.num_replicas == 3
    consumer = await js.consumer_info(stream, "workers")
    assert consumer.cluster is not None
    assert consumer.cluster.leader is not None
    leader = consumer.cluster.leader  # where pulls and acknowledgements are served
    ids = [f"c{i}" for i in range(TASKS)]
    await publish(nats_endpoint, f"tasks.{namespace}.{name}.work", ids, {"sleep": 0.1})

    async def done_count() -> int:
        return len(await answered(lambda: record_keys(record, "done.")))

    async def some_done() -> bool:
        return await done_count() >= TASKS // 4

    await wait_until(some_done, 120, "a quarter of the tasks done")
    killed_at = time.time()
    whole_cluster.kill(leader)

    async def all_done() -> bool:
        return await done_count() >= TASKS

    try:
        # a delivery or nak the new leader never saw waits out the ack wait (at most 60 s)
        await wait_until(all_done, 150, "every task done")
    except AssertionError:
        stuck = await answered(lambda: js.consumer_info(stream, "workers"))
        missing = set(ids) - set(await answered(lambda: record_keys(record, "done.")))
        lines = [
            f"{d.name}: {line}"
            for d in pod_runner.workdir.iterdir()
            if d.name.startswith(namespace)
            for line in (d / "output.log").read_text().splitlines()
            if any(f"task {i} " in line for i in missing) or "breaker" in line
        ]
        raise AssertionError(
            f"not done: {sorted(missing)}; consumer {stuck}; their log lines:\n" + "\n".join(lines)
        ) from None
    done = set(await answered(lambda: record_keys(record, "done.")))
    starts = list((await answered(lambda: recorded(record, "start."))).values())
    again = set(await answered(lambda: record_keys(record, "restart.")))
    eventually(
        lambda: status(cluster, namespace, name).get("backlog") == 0,
        timeout=60,
        what="the pool's status backlog at 0",
    )
    await asyncio.to_thread(whole_cluster.restart, leader)
    print(
        {
            "killed": leader,
            "resumed_after_kill_seconds": round(resumed_after(killed_at, starts), 2),
            "tasks": TASKS,
            "lost": len(set(ids) - done),
            "ran_twice": len(again),
        }
    )
    assert done == set(ids)
    await nc.close()
