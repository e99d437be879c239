"""The operator closes NATS connections no pool uses any more (counted by the server)."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any, cast

import pytest

from e2e.testbed.nats_auth import NatsAuth, issue_user
from e2e.testbed.nats_server import NatsServer
from jetpool_operator.adapters.nats import ConnectionKey
from jetpool_operator.controller import OperatorRuntime, sync_nats
from jetpool_operator.core import nats_resources
from tests.unit.builders.support import spec
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


class SecretsInMemory:
    """The operator's Secret reads, from a dict: what is under test is the NATS side (the
    apiserver side of a broken Secret is tests/e2e/test_secure_nats.py)."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, str, str], bytes] = {}

    async def read_secret_key(self, namespace: str, name: str, key: str) -> bytes:
        return self.values[(namespace, name, key)]


def _connections_of(server: NatsServer, user_public_key: str) -> int:
    with urllib.request.urlopen(f"{server.monitor_url}/connz?auth=true", timeout=5) as answer:
        connz = json.load(answer)
    return sum(
        1 for c in connz.get("connections") or [] if c.get("authorized_user") == user_public_key
    )


async def test_a_pool_whose_credentials_turn_invalid_gives_up_the_connection_made_with_the_old(
    secure_nats_server: NatsServer, nats_auth: NatsAuth, tmp_path: Path
) -> None:
    server = secure_nats_server
    user = issue_user(tmp_path, nats_auth.account("tenant-a"), "orders-operator")
    secrets = SecretsInMemory()
    secrets.values[("team-a", "orders-creds", "nats.creds")] = user.creds.encode()
    secrets.values[("team-a", "nats-ca", "ca.crt")] = nats_auth.tls.ca_file.read_bytes()
    pool_spec = spec(
        nats={
            "url": server.url,
            "credentialsSecret": {"name": "orders-creds"},
            "tls": {"ca": {"name": "nats-ca", "key": "ca.crt"}},
        }
    )
    operator = OperatorRuntime(kube=cast(Any, secrets))
    pool = operator.start_pool("team-a", "orders")
    plan = nats_resources.plan("team-a", "orders", pool_spec, uid="u1")
    events: list[tuple[str, str, str]] = []

    def post_event(type_: str, reason: str, message: str) -> None:
        events.append((type_, reason, message))

    try:
        seen = await sync_nats(operator, pool, pool_spec, plan, post_event, 0.0)
        assert seen.problem is None
        assert _connections_of(server, user.public_key) == 1

        secrets.values[("team-a", "orders-creds", "nats.creds")] = b"user: admin\n"
        operator.forget_secret("team-a", "orders-creds", "nats.creds")
        seen = await sync_nats(operator, pool, pool_spec, plan, post_event, 1.0)
        assert seen.problem is not None
        assert seen.problem[0] == "InvalidCredentials"
        await eventually(
            lambda: _connections_of(server, user.public_key) == 0,
            what="the connection made with the old credentials closed",
        )
        assert pool.connection_key is None
        assert pool.stranded_watch is None
    finally:
        await operator.stop_pool(pool)
        await operator.nats.close()
