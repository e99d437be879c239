"""The CLI takes a cluster's servers as one comma-separated --nats-url, as the pools' spec and
the workers do, and publishes while one of them is down."""

from __future__ import annotations

import io

import nats
import pytest

from e2e.testbed.nats_cluster import NatsCluster
from jetpool_cli.main import main_async
from jetpool_protocol.worker_settings import server_urls
from tests.worker.helpers import make_pool

pytestmark = [pytest.mark.nats, pytest.mark.nats_cluster]


def test_a_comma_separated_url_is_the_list_of_servers() -> None:
    assert server_urls(" nats://a:4222, nats://b:4222 ,,") == ["nats://a:4222", "nats://b:4222"]


async def test_jetpool_publish_reaches_the_cluster_through_any_live_server(
    whole_cluster: NatsCluster,
) -> None:
    nc = await nats.connect(servers=whole_cluster.servers)
    pool = await make_pool(nc.jetstream(timeout=10), whole_cluster.url, replicas=3)
    whole_cluster.kill(whole_cluster.nodes[0].name)  # the first URL of the list
    out, err = io.StringIO(), io.StringIO()
    code = await main_async(
        [
            "publish",
            pool.subject(),
            "--data",
            "{}",
            "--count",
            "5",
            "--nats-url",
            whole_cluster.url,
            "--timeout",
            "10",
        ],
        stdout=out,
        stderr=err,
    )
    assert code == 0, err.getvalue()
    info = await nc.jetstream(timeout=10).stream_info(pool.settings.stream)
    assert info.state.messages == 5
    await nc.close()
