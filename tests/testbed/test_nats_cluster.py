"""The three-server test cluster is a real JetStream cluster: routed servers that agree on a
meta leader, R3 streams led by one server and replicated on the other two."""

from __future__ import annotations

import nats
import pytest
from nats.js.api import StreamConfig

from e2e.testbed.nats_cluster import NatsCluster

pytestmark = [pytest.mark.nats, pytest.mark.nats_cluster]


async def test_an_r3_stream_has_a_leader_and_two_current_replicas(
    nats_cluster: NatsCluster,
) -> None:
    nc = await nats.connect(servers=nats_cluster.servers)
    js = nc.jetstream(timeout=10)
    try:
        await js.add_stream(
            StreamConfig(name="testbed-r3", subjects=["testbed.r3"], num_replicas=3)
        )
        await js.publish("testbed.r3", b"x")
        info = await js.stream_info("testbed-r3")
        assert info.cluster is not None
        names = {n.name for n in nats_cluster.nodes}
        assert info.cluster.leader in names
        replicas = info.cluster.replicas or []
        assert {r.name for r in replicas} == names - {info.cluster.leader}
        assert info.state.messages == 1
    finally:
        await js.delete_stream("testbed-r3")
        await nc.close()
