"""Shared fixtures: the real services every integration test talks to."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import nats
import pytest
from nats.aio.client import Client as NATS

from e2e.testbed.cluster import Cluster, eventually
from e2e.testbed.nats_server import NatsServer


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


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """The real local Kubernetes cluster (reused from JETPOOL_KUBECONFIG when set)."""
    started = Cluster.start()
    yield started
    started.stop()


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace per test, deleted afterwards (without waiting for it to finish)."""
    name = "t-" + uuid.uuid4().hex[:8]
    cluster.kubectl("create", "namespace", name)
    cluster.kubectl("annotate", "namespace", name, f"jetpool.dev/test={request.node.nodeid}")
    eventually(
        lambda: cluster.kubectl("-n", name, "get", "serviceaccount", "default", check=False),
        what="default ServiceAccount",
    )
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
