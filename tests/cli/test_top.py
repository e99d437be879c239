"""`jetpool top` against a real nats-server and a real worker: the pool's row and its
workers, from NATS alone."""

from __future__ import annotations

import io

import pytest
from nats.aio.client import Client as NATS

from e2e.testbed.nats_server import NatsServer
from jetpool_cli.main import main_async
from tests.worker.helpers import make_tracked_pool, running_worker

pytestmark = pytest.mark.nats


async def test_top_shows_the_pool_and_its_workers_from_their_stats(
    nc: NATS, nats_server: NatsServer
) -> None:
    pool = await make_tracked_pool(nc, nats_server.url, handler="tests.worker.handlers:stamped")
    await pool.client.publish_batch([{"sleep": 0.05}] * 400)
    async with running_worker(pool.settings) as worker:
        out, err = io.StringIO(), io.StringIO()
        argv = ["top", "--once", "--interval", "1", "--nats-url", nats_server.url]
        argv += ["-n", pool.namespace, "-p", pool.name]
        code = await main_async(argv, stdout=out, stderr=err)
    text = out.getvalue()
    assert code == 0, err.getvalue()
    pool_line = next(line for line in text.splitlines() if pool.name in line and "Closed" in line)
    assert f"/{pool.settings.concurrency}" in pool_line  # busy/slots of the one worker
    assert worker.worker_id in text  # the workers table
    assert "fetching" in text
    print(text)


async def test_top_lists_every_pool_of_a_namespace(nc: NATS, nats_server: NatsServer) -> None:
    first = await make_tracked_pool(nc, nats_server.url)
    second = await make_tracked_pool(nc, nats_server.url)
    async with running_worker(first.settings), running_worker(second.settings):
        out = io.StringIO()
        argv = ["top", "--once", "--interval", "0.7", "--nats-url", nats_server.url]
        code = await main_async([*argv, "-n", first.namespace], stdout=out, stderr=io.StringIO())
    assert code == 0
    assert first.name in out.getvalue()
    assert second.name in out.getvalue()
