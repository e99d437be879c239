"""Shared fixtures: the real services every integration test talks to."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import nats
import pytest
from nats.aio.client import Client as NATS

from tests.testbed.nats_server import NatsServer


@pytest.fixture(scope="session")
def nats_server() -> Iterator[NatsServer]:
    """One nats-server with JetStream for the whole session (tests use unique stream names)."""
    server = NatsServer().start()
    yield server
    server.close()


@pytest.fixture
def private_nats_server() -> Iterator[NatsServer]:
    """A nats-server of the test's own, for tests that stop or restart it."""
    server = NatsServer().start()
    yield server
    server.close()


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[NATS]:
    client = await nats.connect(nats_server.url)
    yield client
    await client.drain()
