"""The chart's RBAC is sufficient: the real operator reconciles a pool with nothing else.

The chart is rendered in namespaced mode for a fresh namespace (so this operator never touches
other tests' pools), its ServiceAccount, Role, bindings and KopfPeering are applied, and
`jetpool-operator` runs locally with a kubeconfig holding only that ServiceAccount's token and
the environment the chart's Deployment sets. It must create the pool's children, write status,
and let the pool be deleted, with no "forbidden" in its log.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.testbed.cluster import Cluster, KubectlError, eventually
from e2e.testbed.nats_server import NatsServer
from e2e.testbed.processes import free_port
from tests.packaging.conftest import CRDS, GENERATOR, env_of, only, parse

pytestmark = [pytest.mark.kube, pytest.mark.nats]

RBAC_KINDS = {
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "KopfPeering",
}
POOL = "rbac-proof"


def service_account_kubeconfig(cluster: Cluster, namespace: str, account: str, path: Path) -> Path:
    """A kubeconfig for the same apiserver whose only credential is the account's token."""
    admin = json.loads(
        cluster.kubectl("config", "view", "--raw", "--minify", "--flatten", "-o", "json")
    )
    token = cluster.kubectl("-n", namespace, "create", "token", account, "--duration=20m").strip()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": admin["clusters"][0]["cluster"]}],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [
            {"name": "sa", "context": {"cluster": "c", "user": account, "namespace": namespace}}
        ],
        "current-context": "sa",
    }
    path.write_text(yaml.safe_dump(config))
    return path


def can_i(cluster: Cluster, kubeconfig: Path, *args: str) -> bool:
    as_sa = Cluster(kubeconfig, name="sa", owned=False)
    return as_sa.kubectl("auth", "can-i", *args, check=False).strip() == "yes"


def http_get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=2) as response:
        return response.read().decode()  # type: ignore[no-any-return]


@pytest.fixture
def chart_rbac(cluster: Cluster, namespace: str, helm: str) -> Iterator[dict[str, Any]]:
    """Applies the chart's namespaced-mode RBAC for real; yields the rendered Deployment."""
    cluster.kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        str(CRDS / "workerpools.jetpool.dev.yaml"),
        "-f",
        str(CRDS / "kopf-peering.yaml"),
    )
    cluster.kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/workerpools.jetpool.dev",
        "crd/kopfpeerings.kopf.dev",
    )
    objects = parse(
        GENERATOR.helm_template(
            "--namespace",
            namespace,
            "--set",
            f"watch.namespaces={{{namespace}}}",
            "--set",
            "replicaCount=1",
            "--set",
            f"metrics.port={free_port()}",
            "--set",
            f"health.port={free_port()}",
            helm=helm,
            release=f"rbac-{namespace}",
        )
    )
    rbac = [o for o in objects if o["kind"] in RBAC_KINDS]
    assert {o["kind"] for o in rbac} == RBAC_KINDS
    cluster.apply({"apiVersion": "v1", "kind": "List", "items": rbac})
    yield only(objects, "Deployment")
    for obj in rbac:
        if "namespace" not in obj["metadata"]:
            cluster.kubectl(
                "delete", obj["kind"], obj["metadata"]["name"], "--ignore-not-found", check=False
            )


@pytest.fixture
def operator(
    cluster: Cluster, namespace: str, chart_rbac: dict[str, Any], tmp_path: Path
) -> Iterator[tuple[subprocess.Popen[bytes], Path, dict[str, str]]]:
    """`jetpool-operator` with the chart's environment and only its ServiceAccount's token."""
    account = chart_rbac["spec"]["template"]["spec"]["serviceAccountName"]
    kubeconfig = service_account_kubeconfig(cluster, namespace, account, tmp_path / "kubeconfig")
    chart_env = env_of(chart_rbac)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBERNETES_", "JETPOOL_"))}
    env |= chart_env | {"KUBECONFIG": str(kubeconfig)}
    log_path = tmp_path / "operator.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jetpool_operator.main",
                *chart_rbac["spec"]["template"]["spec"]["containers"][0].get("args", []),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield proc, kubeconfig, chart_env
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_the_service_account_is_really_restricted(
    cluster: Cluster, namespace: str, operator: tuple[subprocess.Popen[bytes], Path, dict[str, str]]
) -> None:
    _, kubeconfig, _ = operator
    assert can_i(cluster, kubeconfig, "watch", "workerpools.jetpool.dev", "-n", namespace)
    assert can_i(cluster, kubeconfig, "get", "secrets", "-n", namespace)
    assert not can_i(cluster, kubeconfig, "list", "secrets", "-n", namespace)
    assert not can_i(cluster, kubeconfig, "create", "deployments", "-n", "default")
    assert not can_i(cluster, kubeconfig, "create", "pods", "-n", namespace)


def test_operator_reconciles_and_deletes_a_pool_with_only_the_charts_rbac(
    cluster: Cluster,
    namespace: str,
    nats_server: NatsServer,
    operator: tuple[subprocess.Popen[bytes], Path, dict[str, str]],
    tmp_path: Path,
) -> None:
    proc, _, chart_env = operator
    liveness = chart_env["JETPOOL_LIVENESS"].replace("0.0.0.0", "127.0.0.1")
    metrics = f"http://127.0.0.1:{chart_env['JETPOOL_METRICS_PORT']}/metrics"
    log = tmp_path / "operator.log"

    def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
        """``eventually``, with the operator's last log lines when it times out."""
        try:
            eventually(condition, timeout=timeout, what=what)
        except AssertionError as exc:
            tail = "\n".join(line[:600] for line in log.read_text().splitlines()[-15:])
            raise AssertionError(f"{exc}\n--- operator log (tail) ---\n{tail}") from None

    def alive_and_serving() -> bool:
        assert proc.poll() is None, f"operator exited {proc.returncode}:\n{log.read_text()[-4000:]}"
        try:
            http_get(liveness)
        except OSError:
            return False
        return True

    wait_for(alive_and_serving, 60, "operator liveness endpoint")
    cluster.apply(
        {
            "apiVersion": "jetpool.dev/v1alpha1",
            "kind": "WorkerPool",
            "metadata": {"name": POOL, "namespace": namespace},
            "spec": {
                "image": "jetpool-worker:test",
                "handler": "tests.worker.handlers:noop",
                "nats": {"url": nats_server.url},
            },
        }
    )

    def reconciled() -> bool:
        pool = cluster.get_json("-n", namespace, "workerpool", POOL)
        status = pool.get("status", {})
        return status.get("observedGeneration") == pool["metadata"]["generation"] and bool(
            status.get("conditions")
        )

    wait_for(reconciled, 60, "pool status written by the operator")
    deployments = cluster.get_json("-n", namespace, "deployments")["items"]
    assert [
        d for d in deployments if d["metadata"].get("ownerReferences", [{}])[0].get("name") == POOL
    ]
    assert f'jetpool_pool_desired_replicas{{namespace="{namespace}",pool="{POOL}"}}' in http_get(
        metrics
    )
    # The peering object is the release's own (jetpool.peeringName).
    assert cluster.get_json("-n", namespace, "kopfpeering", f"rbac-{namespace}").get("status"), (
        "operator never peered"
    )

    cluster.kubectl("-n", namespace, "delete", "workerpool", POOL, "--wait=false")

    def gone() -> bool:
        try:
            cluster.kubectl("-n", namespace, "get", "workerpool", POOL)
        except KubectlError as exc:
            return "NotFound" in exc.stderr
        return False

    wait_for(gone, 60, "pool deletion (the operator removes its finalizer)")
    text = log.read_text()
    assert "forbidden" not in text.lower(), [
        line for line in text.splitlines() if "orbidden" in line
    ][:5]
