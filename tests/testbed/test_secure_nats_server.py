"""The secure nats-server of the test bed: TLS required, JWT accounts, JetStream per account.

Built by e2e/testbed/nats_auth.py with no external tool; these tests prove the JWTs, the
``.creds`` files and the certificates are what a real nats-server accepts, and that it
refuses everything else.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import nats
import nats.errors
import pytest
from nats.aio.client import Client as NATS
from nats.aio.client import RawCredentials
from nats.js.api import StreamConfig
from nats.js.errors import NotFoundError

from e2e.testbed.nats_auth import (
    NatsAuth,
    ServerTlsPaths,
    create_nats_auth,
    issue_user,
    render_server_config,
)
from e2e.testbed.nats_server import NatsServer
from jetpool_operator.adapters.nats import (
    ConnectionKey,
    NatsConnections,
    NatsRefused,
    delete_streams,
    ensure_plan,
)
from jetpool_operator.api.v1alpha1 import WorkerPoolSpec
from jetpool_operator.core import nats_resources
from jetpool_protocol.credentials import format_creds, parse_credentials

pytestmark = pytest.mark.nats


async def connect(server: NatsServer, **options: Any) -> NATS:
    """One attempt, no reconnects: a refusal surfaces as the exception."""

    async def quiet(_: Exception) -> None:
        pass

    options.setdefault("tls", server.tls_context())
    return await asyncio.wait_for(
        nats.connect(
            server.url, allow_reconnect=False, connect_timeout=2, error_cb=quiet, **options
        ),
        timeout=10,
    )


@pytest.fixture
async def tenant_a(secure_nats_server: NatsServer, nats_auth: NatsAuth) -> AsyncIterator[NATS]:
    nc = await connect(
        secure_nats_server, user_credentials=str(nats_auth.user("tenant-a").creds_file)
    )
    yield nc
    await nc.close()


async def test_a_client_with_the_creds_file_and_the_ca_publishes_and_consumes(
    tenant_a: NATS,
) -> None:
    js = tenant_a.jetstream()
    await js.add_stream(StreamConfig(name="SECURE_PROOF", subjects=["secure.>"]))
    for i in range(10):
        await js.publish(f"secure.{i}", str(i).encode())
    sub = await js.pull_subscribe("secure.>", durable="proof", stream="SECURE_PROOF")
    msgs = await sub.fetch(10, timeout=5)
    for msg in msgs:
        await msg.ack()
    assert sorted(int(m.data) for m in msgs) == list(range(10))
    account = await js.account_info()
    assert account.limits.max_streams == -1  # JetStream enabled by the account JWT, unlimited


async def test_the_validated_credentials_text_works_as_raw_credentials(
    secure_nats_server: NatsServer, nats_auth: NatsAuth
) -> None:
    creds = parse_credentials(nats_auth.user("tenant-b").creds_file.read_text())
    nc = await connect(secure_nats_server, user_credentials=RawCredentials(creds.render()))
    assert nc.is_connected
    await nc.close()


async def test_tenants_are_isolated_accounts(
    tenant_a: NATS, secure_nats_server: NatsServer, nats_auth: NatsAuth
) -> None:
    await tenant_a.jetstream().add_stream(StreamConfig(name="ONLY_A", subjects=["only-a.>"]))
    other = await connect(
        secure_nats_server, user_credentials=str(nats_auth.user("tenant-b").creds_file)
    )
    try:
        with pytest.raises(NotFoundError):
            await other.jetstream().stream_info("ONLY_A")
        with pytest.raises(nats.errors.NoRespondersError):
            await other.request("only-a.ping", b"", timeout=1)
    finally:
        await other.close()


async def test_the_system_account_user_reaches_the_server_api(
    secure_nats_server: NatsServer, nats_auth: NatsAuth
) -> None:
    nc = await connect(
        secure_nats_server, user_credentials=str(nats_auth.user("SYS", "sys").creds_file)
    )
    try:
        reply = await nc.request("$SYS.REQ.SERVER.PING", b"", timeout=2)
        assert json.loads(reply.data)["server"]["id"]
    finally:
        await nc.close()


async def test_a_client_without_credentials_is_refused(secure_nats_server: NatsServer) -> None:
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await connect(secure_nats_server)


async def test_a_jwt_with_another_users_seed_is_refused(
    secure_nats_server: NatsServer, nats_auth: NatsAuth
) -> None:
    mixed = format_creds(nats_auth.user("tenant-a").jwt, nats_auth.user("tenant-b").seed)
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await connect(secure_nats_server, user_credentials=RawCredentials(mixed))


async def test_a_user_of_an_account_the_server_does_not_trust_is_refused(
    secure_nats_server: NatsServer, tmp_path: Path
) -> None:
    stranger = create_nats_auth(tmp_path / "other-operator", accounts=("tenant-a",))
    creds = stranger.user("tenant-a").creds_file
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await connect(secure_nats_server, user_credentials=str(creds))


async def test_an_expired_user_jwt_is_refused(
    secure_nats_server: NatsServer, nats_auth: NatsAuth, tmp_path: Path
) -> None:
    expired = issue_user(
        tmp_path,
        nats_auth.account("tenant-a"),
        "expired",
        expires_at=datetime.now(UTC) - timedelta(minutes=1),
    )
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await connect(secure_nats_server, user_credentials=str(expired.creds_file))


async def test_a_client_that_does_not_trust_the_ca_is_refused(
    secure_nats_server: NatsServer, nats_auth: NatsAuth
) -> None:
    creds = str(nats_auth.user("tenant-a").creds_file)
    with pytest.raises(ssl.SSLCertVerificationError):
        await connect(secure_nats_server, tls=ssl.create_default_context(), user_credentials=creds)


def test_a_plaintext_client_gets_no_service(secure_nats_server: NatsServer) -> None:
    with socket.create_connection(("127.0.0.1", secure_nats_server.port), timeout=5) as sock:
        info = json.loads(sock.recv(65536).decode().removeprefix("INFO "))
        assert info["tls_required"] is True
        assert info["auth_required"] is True
        sock.sendall(b'CONNECT {"verbose":true}\r\nPING\r\n')
        answer = b""
        with_data = True
        while with_data:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            with_data, answer = bool(chunk), answer + chunk
    assert b"PONG" not in answer
    assert b"+OK" not in answer


@pytest.fixture
def mutual_tls_server(nats_auth: NatsAuth) -> Iterator[NatsServer]:
    server = NatsServer(auth=nats_auth, verify_clients=True).start()
    yield server
    server.close()


async def test_with_verify_clients_only_a_client_certificate_gets_in(
    mutual_tls_server: NatsServer, nats_auth: NatsAuth
) -> None:
    creds = str(nats_auth.user("tenant-a").creds_file)
    with pytest.raises((ssl.SSLError, OSError, nats.errors.Error)):
        await connect(
            mutual_tls_server,
            tls=mutual_tls_server.tls_context(client_cert=False),
            user_credentials=creds,
        )
    nc = await connect(mutual_tls_server, user_credentials=creds)
    assert nc.is_connected
    await nc.close()


def test_the_config_fragment_uses_the_paths_the_caller_gives(nats_auth: NatsAuth) -> None:
    config = render_server_config(
        nats_auth,
        ServerTlsPaths("/etc/nats/tls/tls.crt", "/etc/nats/tls/tls.key", "/etc/nats/tls/ca.crt"),
        verify_clients=True,
    )
    assert 'cert_file: "/etc/nats/tls/tls.crt"' in config
    assert 'key_file: "/etc/nats/tls/tls.key"' in config
    assert 'ca_file: "/etc/nats/tls/ca.crt"' in config
    assert "verify: true" in config
    assert "resolver: MEMORY" in config
    assert f'system_account: "{nats_auth.system_account.public_key}"' in config
    for account in (nats_auth.system_account, *nats_auth.accounts):
        assert f'{account.public_key}: "{account.jwt}"' in config
    assert str(nats_auth.directory) not in config
    assert all(u.seed not in config for u in nats_auth.users)
    assert nats_auth.operator_seed not in config


async def test_the_operators_connection_from_secret_text_manages_a_pools_streams(
    secure_nats_server: NatsServer, nats_auth: NatsAuth
) -> None:
    """What the operator builds from a credentials Secret and a CA Secret (text, not files)."""
    spec = WorkerPoolSpec.model_validate(
        {"image": "w", "handler": "m:f", "nats": {"url": secure_nats_server.url}}
    )
    plan = nats_resources.plan("secure", "orders", spec, uid="u-orders")
    key = ConnectionKey(
        url=secure_nats_server.url,
        credentials=nats_auth.user("tenant-b").creds,
        tls_ca=nats_auth.tls.ca_file.read_text(),
    )
    connections = NatsConnections(lambda *_: None)
    try:
        outcomes = await ensure_plan(await connections.get(key), plan)
        assert {o.action for o in outcomes} == {"created"}
        backlog = await connections.consumer_backlog(key, plan.names.stream, "workers")
        assert backlog.backlog == 0
    finally:
        nc = await connections.get(key)
        streams = [plan.names.stream, plan.names.dead_letter_stream]
        assert (await delete_streams(nc, streams, plan.owner)).deleted == streams
        await connections.close()


@pytest.mark.parametrize(
    ("with_ca", "with_creds", "problem"),
    [
        (False, True, "TLS handshake failed: CERTIFICATE_VERIFY_FAILED"),
        (True, False, "the server refused the connection: nats: 'Authorization Violation'"),
    ],
    ids=["no-ca", "no-creds"],
)
async def test_the_operators_connection_says_why_the_server_refused_it(
    secure_nats_server: NatsServer,
    nats_auth: NatsAuth,
    with_ca: bool,
    with_creds: bool,
    problem: str,
) -> None:
    key = ConnectionKey(
        url=secure_nats_server.url,
        credentials=nats_auth.user("tenant-a").creds if with_creds else None,
        tls_ca=nats_auth.tls.ca_file.read_text() if with_ca else None,
    )
    connections = NatsConnections(lambda *_: None)
    with pytest.raises(NatsRefused) as caught:
        await asyncio.wait_for(connections.get(key), timeout=15)
    assert str(caught.value) == problem
    await connections.close()
