"""The operator closes NATS connections no pool uses any more (counted by the server)."""

from __future__ import annotations

import json
import urllib.request
from typing import Any, cast

import pytest

from e2e.testbed.nats_server import NatsServer
from jetpool_operator.adapters.nats import ConnectionKey
from jetpool_operator.controller import OperatorRuntime
from tests.worker.helpers import eventually

pytestmark = pytest.mark.nats


def _operator_connections(server: NatsServer) -> int:
    with urllib.request.urlopen(f"{server.monitor_url}/connz", timeout=5) as answer:
        connz = json.load(answer)
    return sum(1 for c in connz.get("connections") or [] if c.get("name") == "jetpool-operator")


async def test_a_connection_is_closed_when_its_last_pool_moves_to_another_or_is_deleted(
    private_nats_server: NatsServer,
) -> None:
    server = private_nats_server
    first = ConnectionKey(server.url)
    second = ConnectionKey(server.url.replace("127.0.0.1", "localhost"))
    operator = OperatorRuntime(kube=cast(Any, None))
    a = operator.start_pool("team-a", "orders")
    operator.start_pool("team-b", "mail")
    try:
        for pool in (("team-a", "orders"), ("team-b", "mail")):
            await operator.nats.use(pool, first)
            await operator.nats.get(first)
        assert _operator_connections(server) == 1

        # team-a's Secret changed: a new connection; the old one still serves team-b
        await operator.nats.use(("team-a", "orders"), second)
        await operator.nats.get(second)
        assert _operator_connections(server) == 2

        # team-b's pool is deleted: the first connection has no user left
        await operator.nats.release(("team-b", "mail"))
        await eventually(lambda: _operator_connections(server) == 1, what="first closed")

        # the loop of team-a's pool ends (pool deleted): nothing stays open
        await operator.stop_pool(a)
        await eventually(lambda: _operator_connections(server) == 0, what="all closed")
        # a pool that comes back connects again
        await operator.nats.use(("team-a", "orders"), second)
        await operator.nats.get(second)
        assert _operator_connections(server) == 1
    finally:
        await operator.nats.close()


async def test_a_delete_handler_s_connection_is_closed_once_the_deleted_pool_is_done_with_it(
    private_nats_server: NatsServer,
) -> None:
    server = private_nats_server
    key = ConnectionKey(server.url)
    operator = OperatorRuntime(kube=cast(Any, None))
    try:
        # The pool's loop has stopped (released); its delete handler still talks to NATS.
        async with operator.nats.in_use(("team-a", "orders"), key):
            await operator.nats.get(key)
            assert _operator_connections(server) == 1
        await eventually(lambda: _operator_connections(server) == 0, what="closed after delete")
    finally:
        await operator.nats.close()
