"""End-to-end fixtures: CRDs installed, the operator running, worker pods backed by processes.

``JETPOOL_E2E_PROVIDER`` picks where the suite runs:

* ``local`` (default): the local test bed; the operator runs as a process here, and each
  Running worker pod is backed by a local ``jetpool-worker`` process
  (``e2e/testbed/pod_runner.py``).
* ``kind``: a kind cluster prepared by ``e2e/kind/run.sh`` (operator installed by the chart,
  workers are real pods). ``JETPOOL_E2E_NATS_URL`` is the NATS URL pods use and
  ``JETPOOL_E2E_NATS_TEST_URL`` the one this process uses (a port-forward);
  ``JETPOOL_E2E_NATS_CREDS`` and ``JETPOOL_E2E_NATS_CA``, when set, are the ``.creds`` file and
  CA of a secured NATS (every pool then gets them through Secrets, see :class:`NatsEndpoint`);
  ``JETPOOL_E2E_NATS_ACCOUNT_SEED`` is the seed file of that user's account (tests issue
  users of their own with it, e.g. per-pool users).

Locally the plain ``nats_server`` serves most tests (fast); ``secure_nats_endpoint`` is the
secure one (TLS + JWT accounts, ``tests/conftest.py``).
"""

from __future__ import annotations

import contextlib
import json
import os
import ssl
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.js.kv import KeyValue

from e2e.testbed.cluster import REPO, Cluster, eventually
from e2e.testbed.nats_auth import NatsAccount, NatsAuth, load_account
from e2e.testbed.nats_server import NatsServer
from e2e.testbed.operator_process import OperatorProcess
from e2e.testbed.pod_runner import PodRunner
from jetpool_protocol.worker_settings import server_urls

PROVIDER = os.environ.get("JETPOOL_E2E_PROVIDER", "local")
SHARD_LABEL = "jetpool.dev/shard"
CHART_POLICY = PROVIDER == "kind"
"""On kind the chart is installed, with its admission policies: what they refuse never reaches
the operator (locally the operator's own refusals are what the tests see)."""
CRDS = REPO / "crds"


CREDS_SECRET = "jetpool-e2e-nats-creds"
CA_SECRET = "jetpool-e2e-nats-ca"
GRANTED_NAMESPACE = "e2e-granted"
GRANTED_PREFIX = "invoices.e2e-granted."
"""The local operator grants this namespace this extra subject space (--extra-subject-spaces)."""


@dataclass(frozen=True)
class NatsEndpoint:
    """A NATS the suite runs pools against, plain or secured (credentials and/or CA)."""

    pod_url: str
    """URL in the WorkerPool spec (what the operator and the workers use)."""
    test_url: str
    """URL this test process uses to publish and inspect."""
    creds_file: Path | None = None
    """``.creds`` of the user this process and the pools use."""
    ca_file: Path | None = None
    """CA bundle (PEM) that signs the server's certificate."""
    account: NatsAccount | None = field(default=None, repr=False)
    """The account of ``creds_file``'s user, with its signing seed: users a test issues with
    it (``nats_auth.issue_user``) are accepted by the server."""

    @property
    def secure(self) -> bool:
        return self.creds_file is not None or self.ca_file is not None

    async def connect(self, **options: Any) -> NATS:
        """A client connection as this test process (credentials and TLS included)."""
        if self.creds_file is not None:
            options.setdefault("user_credentials", str(self.creds_file))
        if self.ca_file is not None:
            options.setdefault("tls", ssl.create_default_context(cafile=str(self.ca_file)))
        return await nats.connect(server_urls(self.test_url), **options)

    def pool_spec(self) -> dict[str, Any]:
        """Spec fields that make a pool use this endpoint's credentials and CA Secrets
        (:meth:`install_secrets` creates them); empty for a plain endpoint."""
        block: dict[str, Any] = {}
        if self.creds_file is not None:
            block["credentialsSecret"] = {"name": CREDS_SECRET}
        if self.ca_file is not None:
            block["tls"] = {"ca": {"name": CA_SECRET, "key": "ca.crt"}}
        return {"nats": block} if block else {}

    def secrets(self) -> list[dict[str, Any]]:
        out = []
        if self.creds_file is not None:
            out.append(secret(CREDS_SECRET, {"nats.creds": self.creds_file.read_text()}))
        if self.ca_file is not None:
            out.append(secret(CA_SECRET, {"ca.crt": self.ca_file.read_text()}))
        return out

    def install_secrets(self, cluster: Cluster, namespace: str) -> None:
        for manifest in self.secrets():
            cluster.apply(manifest, "-n", namespace)


def secret(name: str, data: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": data}


_SECURED: dict[str, NatsEndpoint] = {}
"""pod URL -> secured endpoint: a pool pointed at one gets its Secrets (see pool_manifest)."""


def _secured(endpoint: NatsEndpoint) -> NatsEndpoint:
    if endpoint.secure:
        _SECURED[endpoint.pod_url] = endpoint
    return endpoint


@contextlib.contextmanager
def extra_namespace(cluster: Cluster, endpoint: NatsEndpoint) -> Iterator[str]:
    """A second namespace for a test, with ``endpoint``'s NATS Secrets; deleted afterwards."""
    name = "t-" + uuid.uuid4().hex[:8]
    cluster.kubectl("create", "namespace", name)
    eventually(
        lambda: cluster.kubectl("-n", name, "get", "serviceaccount", "default", check=False),
        what="default ServiceAccount",
    )
    endpoint.install_secrets(cluster, name)
    try:
        yield name
    finally:
        cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="session")
def crds(cluster: Cluster) -> None:
    cluster.kubectl("apply", "--server-side", "-k", str(CRDS))
    cluster.kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/workerpools.jetpool.dev",
    )


@pytest.fixture(scope="session")
def operator(cluster: Cluster, crds: None) -> Iterator[OperatorProcess | None]:
    if PROVIDER != "local":
        yield None
        return
    grants = json.dumps({GRANTED_NAMESPACE: [GRANTED_PREFIX]})
    # Pools labelled jetpool.dev/shard belong to the operators the sharding tests start
    # themselves: this session-wide one must never act on them.
    process = OperatorProcess(
        cluster,
        args=(
            "--standalone",
            "--extra-subject-spaces",
            grants,
            "--shard-selector",
            f"!{SHARD_LABEL}",
        ),
    ).start()
    yield process
    process.stop()


@pytest.fixture(scope="session")
def nats_endpoint(nats_server: NatsServer) -> NatsEndpoint:
    if PROVIDER != "local":
        creds, ca = os.environ.get("JETPOOL_E2E_NATS_CREDS"), os.environ.get("JETPOOL_E2E_NATS_CA")
        seed = os.environ.get("JETPOOL_E2E_NATS_ACCOUNT_SEED")
        return _secured(
            NatsEndpoint(
                os.environ["JETPOOL_E2E_NATS_URL"],
                os.environ["JETPOOL_E2E_NATS_TEST_URL"],
                creds_file=Path(creds) if creds else None,
                ca_file=Path(ca) if ca else None,
                account=load_account(Path(seed)) if seed else None,
            )
        )
    return NatsEndpoint(nats_server.url, nats_server.url)


@pytest.fixture(scope="session")
def secure_nats_endpoint(request: pytest.FixtureRequest) -> NatsEndpoint:
    """NATS with TLS and JWT accounts: locally the secure test server (user ``default`` of
    account ``tenant-a``); on kind the in-cluster NATS, when it is secured."""
    if PROVIDER != "local":
        endpoint: NatsEndpoint = request.getfixturevalue("nats_endpoint")
        if not (endpoint.creds_file and endpoint.ca_file):
            pytest.skip("the kind NATS has no credentials and TLS")
        return endpoint
    server: NatsServer = request.getfixturevalue("secure_nats_server")
    auth: NatsAuth = request.getfixturevalue("nats_auth")
    return _secured(
        NatsEndpoint(
            server.url,
            server.url,
            creds_file=auth.user("tenant-a").creds_file,
            ca_file=auth.tls.ca_file,
            account=auth.account("tenant-a"),
        )
    )


@pytest.fixture
def namespace(namespace: str, cluster: Cluster, nats_endpoint: NatsEndpoint) -> str:
    """The test's namespace, holding the Secrets the session's NATS asks for (if any)."""
    nats_endpoint.install_secrets(cluster, namespace)
    return namespace


async def kv_record(endpoint: NatsEndpoint, namespace: str) -> AsyncIterator[KeyValue]:
    """The KV bucket the e2e handler records completions in (and reads the FAIL switch from)."""
    nc = await endpoint.connect()
    kv = await nc.jetstream().create_key_value(bucket=f"e2e-{namespace}")
    yield kv
    await nc.jetstream().delete_key_value(f"e2e-{namespace}")
    await nc.close()


@pytest.fixture
async def record(nats_endpoint: NatsEndpoint, namespace: str) -> AsyncIterator[KeyValue]:
    async for kv in kv_record(nats_endpoint, namespace):
        yield kv


@pytest.fixture
async def secure_record(
    secure_nats_endpoint: NatsEndpoint, namespace: str
) -> AsyncIterator[KeyValue]:
    async for kv in kv_record(secure_nats_endpoint, namespace):
        yield kv


@pytest.fixture(scope="session")
def pod_runner(cluster: Cluster) -> Iterator[PodRunner | None]:
    if PROVIDER != "local":
        yield None
        return
    pythonpath = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    runner = PodRunner(
        kubeconfig=str(cluster.kubeconfig),
        extra_env={"PYTHONPATH": pythonpath, "JETPOOL_LOG_FORMAT": "text"},
    ).start()
    yield runner
    runner.stop()


def pool_manifest(
    name: str, nats_url: str, *, handler: str = "tests.e2e.handlers:record", **spec: Any
) -> dict[str, Any]:
    """A WorkerPool with test-friendly defaults; keyword arguments override spec fields.

    A pool pointed at a secured endpoint's URL gets its credentials and CA Secrets.
    """
    body: dict[str, Any] = {
        "image": os.environ.get("JETPOOL_E2E_WORKER_IMAGE", "jetpool-worker:e2e"),
        "handler": handler,
        "nats": {"url": nats_url},
        "scaling": {"minReplicas": 1, "maxReplicas": 3, "pollIntervalSeconds": 1},
    }
    secured = _SECURED.get(nats_url)
    for key, value in [*(secured.pool_spec() if secured else {}).items(), *spec.items()]:
        if isinstance(value, dict) and isinstance(body.get(key), dict):
            body[key] = {**body[key], **value}
        else:
            body[key] = value
    return {
        "apiVersion": "jetpool.dev/v1alpha1",
        "kind": "WorkerPool",
        "metadata": {"name": name},
        "spec": body,
    }


def condition(pool: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for cond in (pool.get("status") or {}).get("conditions") or []:
        if cond["type"] == type_:
            return dict(cond)
    return None


def wait_for_condition(
    cluster: Cluster, namespace: str, name: str, type_: str, status: str, timeout: float = 60
) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        pool = cluster.get_json("workerpool", name, "-n", namespace)
        found = condition(pool, type_)
        return pool if found is not None and found["status"] == status else None

    return eventually(check, timeout=timeout, what=f"{type_}={status} on {namespace}/{name}")  # type: ignore[no-any-return]
