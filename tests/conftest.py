"""Shared fixtures: the real services every integration test talks to."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import nats
import pytest
from nats.aio.client import Client as NATS

from e2e.testbed.cluster import Cluster, eventually
from e2e.testbed.nats_auth import NatsAuth, create_nats_auth
from e2e.testbed.nats_cluster import NatsCluster
from e2e.testbed.nats_server import NatsServer

SECURE_ACCOUNTS = ("tenant-a", "tenant-b")
"""Accounts of the secure nats-server: one per tenant, JetStream on, isolated from each other."""


@pytest.fixture(scope="session")
def nats_server() -> Iterator[NatsServer]:
    """One nats-server with JetStream for the whole session (tests use unique stream names)."""
    server = NatsServer().start()
    yield server
    server.close()


@pytest.fixture(scope="session")
def nats_auth(tmp_path_factory: pytest.TempPathFactory) -> NatsAuth:
    """Operator, accounts, users (.creds) and TLS files of the secure nats-server."""
    return create_nats_auth(tmp_path_factory.mktemp("nats-auth"), accounts=SECURE_ACCOUNTS)


@pytest.fixture(scope="session")
def secure_nats_server(nats_auth: NatsAuth) -> Iterator[NatsServer]:
    """A nats-server as production runs it: TLS required, JWT accounts, JetStream per account."""
    server = NatsServer(auth=nats_auth).start()
    yield server
    server.close()


@pytest.fixture
def private_nats_server() -> Iterator[NatsServer]:
    """A nats-server of the test's own, for tests that stop or restart it."""
    server = NatsServer().start()
    yield server
    server.close()


@pytest.fixture(scope="module")
def nats_cluster() -> Iterator[NatsCluster]:
    """A three-server NATS cluster with JetStream for a module's tests; a test that kills,
    freezes or partitions a server leaves the cluster whole again (:func:`whole_cluster`)."""
    started = NatsCluster().start()
    yield started
    started.close()


@pytest.fixture
def whole_cluster(nats_cluster: NatsCluster) -> Iterator[NatsCluster]:
    """The module's cluster, with every server running and thawed again after the test."""
    yield nats_cluster
    for node in nats_cluster.nodes:
        if node.running:
            nats_cluster.thaw(node.name)
        else:
            nats_cluster.restart(node.name)
    nats_cluster.wait_ready()


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
