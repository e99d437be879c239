"""End-to-end fixtures: CRDs installed, the operator running, worker pods backed by processes.

``JETPOOL_E2E_PROVIDER`` picks where the suite runs:

* ``local`` (default): the local test bed; the operator runs as a process here, and each
  Running worker pod is backed by a local ``jetpool-worker`` process
  (``e2e/testbed/pod_runner.py``).
* ``kind``: a kind cluster prepared by ``e2e/kind/run.sh`` (operator installed by the chart,
  workers are real pods). ``JETPOOL_E2E_NATS_URL`` is the NATS URL pods use and
  ``JETPOOL_E2E_NATS_TEST_URL`` the one this process uses (a port-forward).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from e2e.testbed.cluster import REPO, Cluster, eventually
from e2e.testbed.nats_server import NatsServer
from e2e.testbed.operator_process import OperatorProcess
from e2e.testbed.pod_runner import PodRunner

PROVIDER = os.environ.get("JETPOOL_E2E_PROVIDER", "local")
CRDS = REPO / "crds"


@dataclass(frozen=True)
class NatsEndpoint:
    pod_url: str
    """URL in the WorkerPool spec (what the operator and the workers use)."""
    test_url: str
    """URL this test process uses to publish and inspect."""


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
    process = OperatorProcess(cluster).start()
    yield process
    process.stop()


@pytest.fixture(scope="session")
def nats_endpoint(nats_server: NatsServer) -> NatsEndpoint:
    if PROVIDER != "local":
        return NatsEndpoint(
            os.environ["JETPOOL_E2E_NATS_URL"], os.environ["JETPOOL_E2E_NATS_TEST_URL"]
        )
    return NatsEndpoint(nats_server.url, nats_server.url)


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
    """A WorkerPool with test-friendly defaults; keyword arguments override spec fields."""
    body: dict[str, Any] = {
        "image": os.environ.get("JETPOOL_E2E_WORKER_IMAGE", "jetpool-worker:e2e"),
        "handler": handler,
        "nats": {"url": nats_url},
        "scaling": {"minReplicas": 1, "maxReplicas": 3, "pollIntervalSeconds": 1},
    }
    for key, value in spec.items():
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
