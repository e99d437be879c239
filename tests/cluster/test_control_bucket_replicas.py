"""The control bucket (every pool's breaker state) is replicated as the operator is configured
on a NATS cluster, raised when a pool asks for more, reported when left at R1, R1 on a single
server, and the breaker state it holds survives the loss of its leader's server."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.js.errors import NotFoundError

from e2e.testbed.nats_cluster import NatsCluster
from e2e.testbed.nats_server import NatsServer
from jetpool_operator.adapters.nats import CONTROL_STREAM, ConnectionKey, NatsConnections
from jetpool_operator.api.v1alpha1 import ConditionStatus
from jetpool_operator.core.conditions import Reason
from jetpool_operator.core.control_bucket import replication_condition
from jetpool_protocol.control import BreakerState, ControlState
from jetpool_protocol.naming import CONTROL_BUCKET
from tests.cluster.support import answered

pytestmark = [pytest.mark.nats, pytest.mark.nats_cluster]

OPEN = ControlState(
    breaker=BreakerState.OPEN, epoch=7, reason="error rate", since=datetime.now(UTC)
)


@pytest.fixture
async def client(nats_cluster: NatsCluster) -> AsyncIterator[NATS]:
    """A plain client; the shared bucket is deleted first, so each test creates its own."""
    nc = await nats.connect(servers=nats_cluster.servers)
    with contextlib.suppress(NotFoundError):
        await nc.jetstream().delete_key_value(CONTROL_BUCKET)
    yield nc
    await nc.close()


async def replicas(nc: NATS) -> int:
    return int((await nc.jetstream().stream_info(CONTROL_STREAM)).config.num_replicas or 1)


async def test_the_bucket_is_created_with_the_configured_three_replicas_on_a_cluster(
    nats_cluster: NatsCluster, client: NATS
) -> None:
    operator = NatsConnections(lambda *_: None)  # the default: 3
    key = ConnectionKey(nats_cluster.url)
    try:
        await operator.publish_control(key, "shop.emails", OPEN, replicas=1)
        assert await replicas(client) == 3
        status, reason, _ = replication_condition(operator.control_bucket(key))
        assert (status, reason) == (ConditionStatus.TRUE, Reason.REPLICATED)
    finally:
        await operator.close()


async def test_a_pool_asking_for_more_raises_the_bucket_and_nothing_lowers_it(
    nats_cluster: NatsCluster, client: NATS
) -> None:
    key = ConnectionKey(nats_cluster.url)
    single = NatsConnections(lambda *_: None, control_replicas=1)
    try:
        await single.publish_control(key, "shop.emails", OPEN, replicas=1)
        assert await replicas(client) == 1
        status, reason, message = replication_condition(single.control_bucket(key))
        assert (status, reason) == (ConditionStatus.FALSE, Reason.SINGLE_REPLICA_ON_CLUSTER)
        assert "JETPOOL_CONTROL_REPLICAS" in message

        # an R3 pool: the bucket is raised (its first write may time out while the new
        # replicas catch up; the operator writes again on its next tick)
        await answered(lambda: single.publish_control(key, "shop.orders", OPEN, replicas=3))
        assert await replicas(client) == 3
        assert replication_condition(single.control_bucket(key))[0] is ConditionStatus.TRUE
    finally:
        await single.close()

    another = NatsConnections(lambda *_: None, control_replicas=1)
    try:
        await another.publish_control(key, "shop.emails", OPEN, replicas=1)
        assert await replicas(client) == 3  # never lowered: other pools share it
    finally:
        await another.close()


async def test_a_single_server_gets_one_replica_whatever_is_configured(
    private_nats_server: NatsServer,
) -> None:
    operator = NatsConnections(lambda *_: None, control_replicas=3)
    key = ConnectionKey(private_nats_server.url)
    try:
        await operator.publish_control(key, "shop.emails", OPEN, replicas=1)
        nc = await nats.connect(private_nats_server.url)
        assert await replicas(nc) == 1
        await nc.close()
        status, reason, _ = replication_condition(operator.control_bucket(key))
        assert (status, reason) == (ConditionStatus.TRUE, Reason.SINGLE_SERVER)
    finally:
        await operator.close()


async def test_the_breaker_state_survives_the_loss_of_the_buckets_leader(
    whole_cluster: NatsCluster, client: NATS
) -> None:
    operator = NatsConnections(lambda *_: None)
    key = ConnectionKey(whole_cluster.url)
    try:
        await operator.publish_control(key, "shop.emails", OPEN, replicas=3)
    finally:
        await operator.close()
    info = await client.jetstream().stream_info(CONTROL_STREAM)
    assert info.cluster is not None
    assert info.cluster.leader is not None
    leader = info.cluster.leader
    whole_cluster.kill(leader)

    others = [n.url for n in whole_cluster.nodes if n.name != leader]
    survivor = await nats.connect(servers=others)
    try:
        js = survivor.jetstream(timeout=5)
        kv = await answered(lambda: js.key_value(CONTROL_BUCKET))
        entry = await answered(lambda: kv.get("shop.emails"))
        assert ControlState.model_validate_json(entry.value or b"") == OPEN
        moved = await answered(lambda: js.stream_info(CONTROL_STREAM))
        assert moved.cluster is not None
        assert moved.cluster.leader not in (None, leader)
    finally:
        await survivor.close()
