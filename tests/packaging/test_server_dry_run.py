"""Every rendered chart and kustomize overlay is admitted by the real apiserver (server dry-run).

CRDs are installed for real first (a dry run cannot create the kinds the rest depends on), and
so is the base's namespace. The test namespaces enforce the "restricted" Pod Security Standard,
so a pod template that breaks it shows up as a PodSecurity warning and fails the test.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from e2e.testbed.cluster import Cluster, kubectl_binary
from tests.packaging.conftest import CRDS, GENERATOR, OVERLAYS, REPO, kustomize

pytestmark = pytest.mark.kube

MONITORING_CRDS = Path(__file__).parent / "fixtures" / "monitoring-crds.yaml"
BASE_NAMESPACE = REPO / "manifests" / "base" / "namespace.yaml"


def dry_run(cluster: Cluster, manifest: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            kubectl_binary(),
            "--kubeconfig",
            str(cluster.kubeconfig),
            "apply",
            "--dry-run=server",
            "-f",
            "-",
        ],
        input=manifest,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def assert_admitted(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 0, proc.stderr
    assert "server dry run" in proc.stdout
    warnings = [
        line
        for line in proc.stderr.splitlines()
        # kubectl's note about CRDs that the fixture installed server-side is not a finding.
        if line.startswith("Warning:") and "last-applied-configuration" not in line
    ]
    assert warnings == []


@pytest.fixture(scope="module")
def crds(cluster: Cluster) -> None:
    """Installs the CRDs and the base's namespace for real (left in place: idempotent)."""
    files = [
        *sorted(str(p) for p in CRDS.glob("*.yaml") if p.name != "kustomization.yaml"),
        str(MONITORING_CRDS),
    ]
    cluster.kubectl(
        "apply", "--server-side", "--force-conflicts", *[a for f in files for a in ("-f", f)]
    )
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
    cluster.kubectl("apply", "-f", str(BASE_NAMESPACE))


@pytest.fixture
def restricted_namespace(cluster: Cluster, namespace: str) -> str:
    cluster.kubectl(
        "label",
        "namespace",
        namespace,
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/warn=restricted",
    )
    return namespace


def test_dry_run_catches_a_bad_object(
    cluster: Cluster, crds: None, restricted_namespace: str
) -> None:
    """The harness can fail: a privileged pod in a restricted namespace is refused."""
    bad = f"""
apiVersion: v1
kind: Pod
metadata: {{name: bad, namespace: {restricted_namespace}}}
spec:
  containers: [{{name: c, image: busybox:1.37, securityContext: {{privileged: true}}}}]
"""
    proc = dry_run(cluster, bad)
    assert proc.returncode != 0
    assert "PodSecurity" in proc.stderr


@pytest.mark.parametrize(
    "values",
    [
        (),
        (
            "--set",
            "metrics.serviceMonitor.enabled=true",
            "--set",
            "metrics.prometheusRule.enabled=true",
            "--set",
            "networkPolicy.enabled=true",
            "--set",
            "crds.keep=false",
        ),
        (
            "--set",
            "replicaCount=1",
            "--set",
            "peering.enabled=false",
            "--set",
            "logging.verbose=true",
        ),
        (
            "--set-string",
            "shard.selector.matchLabels.jetpool\\.dev/shard=blue",
            "--set-json",
            'shard.selector.matchExpressions=[{"key": "tier", "operator": "NotIn", '
            '"values": ["dev"]}]',
            "--set",
            "peering.lifetimeSeconds=15",
        ),
    ],
    ids=["defaults", "monitoring-and-network-policy", "standalone", "label-shard"],
)
def test_chart_is_admitted_by_the_apiserver(
    cluster: Cluster, crds: None, restricted_namespace: str, helm: str, values: tuple[str, ...]
) -> None:
    rendered = GENERATOR.helm_template(
        "--include-crds", "--namespace", restricted_namespace, *values, helm=helm
    )
    assert_admitted(dry_run(cluster, rendered))


def test_chart_in_namespaced_mode_is_admitted_by_the_apiserver(
    cluster: Cluster, crds: None, restricted_namespace: str, helm: str
) -> None:
    rendered = GENERATOR.helm_template(
        "--namespace",
        restricted_namespace,
        "--set",
        f"watch.namespaces={{{restricted_namespace}}}",
        helm=helm,
    )
    proc = dry_run(cluster, rendered)
    assert_admitted(proc)
    assert "role.rbac.authorization.k8s.io/jetpool-operator created" in proc.stdout
    assert "kopfpeering.kopf.dev/jetpool created" in proc.stdout


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
def test_kustomize_overlay_is_admitted_by_the_apiserver(
    cluster: Cluster, crds: None, overlay: Path
) -> None:
    assert_admitted(dry_run(cluster, kustomize(overlay)))
