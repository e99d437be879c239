"""A server cut off from everyone while tasks flow (frozen with SIGSTOP: its clients and its
routes stall, no connection is closed): the workers on it notice by their pings and move to
the majority, the majority elects new leaders, every task is done, and a task runs a second
time only when its first acknowledgement went into the partitioned server."""

from __future__ import annotations

import time

import nats
import pytest

from e2e.testbed.nats_cluster import NatsCluster
from jetpool_worker.consumer_loop import Worker
from tests.cluster.support import answered, burst, runs_by_task
from tests.worker import handlers
from tests.worker.helpers import eventually, running_workers

pytestmark = [pytest.mark.nats, pytest.mark.nats_cluster]

TASKS = 2000
WORKERS = 3
CONCURRENCY = 8
PING_SECONDS = 1.0


def server_port(worker: Worker) -> int | None:
    nc = worker._nc
    url = None if nc is None or not nc.is_connected else nc.connected_url
    return None if url is None else url.port


@pytest.mark.timeout(300)
async def test_the_workers_of_a_partitioned_server_move_to_the_majority_and_finish_every_task(
    whole_cluster: NatsCluster,
) -> None:
    nc = await nats.connect(servers=whole_cluster.servers)
    js = nc.jetstream(timeout=10)
    pool, ids = await burst(
        js,
        whole_cluster,
        "p",
        TASKS,
        concurrency=CONCURRENCY,
        ack_wait=5.0,
        nats_ping_interval_seconds=PING_SECONDS,
    )
    await nc.close()

    async with running_workers(pool.settings, WORKERS) as workers:
        await eventually(lambda: len(handlers.RUNS) >= 300, within=60, what="tasks flowing")
        ports = [server_port(w) for w in workers]
        # the server most workers are on (and never the one the test's own client needs)
        partitioned = max(whole_cluster.nodes, key=lambda n: ports.count(n.port))
        stranded = ports.count(partitioned.port)
        frozen_at = time.monotonic()
        whole_cluster.freeze(partitioned.name)
        try:
            await eventually(
                lambda: all(server_port(w) not in (None, partitioned.port) for w in workers),
                within=60,
                what="every worker on the majority",
            )
            moved_after = time.monotonic() - frozen_at
            await eventually(
                lambda: {i for i, _, _ in handlers.RUNS} >= set(ids),
                within=120,
                what="every task run",
            )
            majority = await nats.connect(
                servers=[n.url for n in whole_cluster.nodes if n is not partitioned]
            )
            mjs = majority.jetstream(timeout=5)

            async def drained() -> bool:
                info = await answered(lambda: mjs.stream_info(pool.settings.stream))
                return info.state.messages == 0

            await eventually(drained, within=60, what="every task acknowledged")
            await majority.close()
        finally:
            whole_cluster.thaw(partitioned.name)

    runs = runs_by_task()
    lost = set(ids) - set(runs)
    twice = sorted(i for i, n in runs.items() if n > 1)
    print(
        {
            "partitioned": partitioned.name,
            "workers_on_it": stranded,
            "workers_moved_after_seconds": round(moved_after, 2),
            "tasks": TASKS,
            "lost": len(lost),
            "ran_twice": len(twice),
        }
    )
    assert not lost
    # Only tasks unacknowledged at the partition may run again: the stranded workers', and
    # every worker's when the partitioned server led the consumer (their acks went to it).
    assert len(twice) <= 2 * WORKERS * CONCURRENCY, twice[:20]
