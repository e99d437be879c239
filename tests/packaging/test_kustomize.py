"""The kustomize base and overlays: generated from the chart, build cleanly, differ as promised."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.packaging.conftest import (
    CRDS,
    GENERATOR,
    OVERLAYS,
    REPO,
    Render,
    env_of,
    kinds,
    kustomize,
    only,
    parse,
)
from tests.packaging.test_helm_chart import rules_of

BASE = REPO / "manifests" / "base"


def build(overlay: Path) -> list[dict[str, Any]]:
    return parse(kustomize(overlay))


def test_there_are_dev_and_prod_overlays() -> None:
    assert {p.name for p in OVERLAYS} >= {"dev", "prod"}


def test_base_operator_manifests_are_a_fresh_render_of_the_chart(helm: str) -> None:
    committed = (BASE / "operator.yaml").read_text()
    assert committed == GENERATOR.render_base(helm=helm), (
        "manifests/base/operator.yaml is stale: run .venv/bin/python manifests/generate.py"
    )


@pytest.mark.parametrize("overlay", [BASE, *OVERLAYS], ids=lambda p: p.name)
def test_kustomize_builds(overlay: Path) -> None:
    objects = build(overlay)
    assert {"Namespace", "CustomResourceDefinition", "ClusterRole", "Deployment"} <= kinds(objects)
    for obj in objects:
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "kustomize", obj["kind"]
        assert "helm.sh/chart" not in obj["metadata"]["labels"]


@pytest.mark.parametrize("overlay", [BASE, *OVERLAYS], ids=lambda p: p.name)
def test_crds_are_the_generated_files_unchanged(overlay: Path) -> None:
    built = {
        o["metadata"]["name"]: o for o in build(overlay) if o["kind"] == "CustomResourceDefinition"
    }
    for path in sorted(CRDS.glob("*.yaml")):
        for crd in yaml.safe_load_all(path.read_text()):
            if crd and crd.get("kind") == "CustomResourceDefinition":
                assert built[crd["metadata"]["name"]]["spec"] == crd["spec"]


@pytest.mark.parametrize("overlay", [BASE, *OVERLAYS], ids=lambda p: p.name)
def test_rbac_equals_the_charts(overlay: Path, render: Render) -> None:
    chart = only(render(), "ClusterRole")
    built = only(build(overlay), "ClusterRole")
    assert rules_of(built) == rules_of(chart)
    assert (
        only(build(overlay), "ClusterRoleBinding")["subjects"]
        == only(render(), "ClusterRoleBinding")["subjects"]
    )


def test_dev_runs_one_standalone_operator_with_debug_logs() -> None:
    objects = build(REPO / "manifests" / "overlays" / "dev")
    deployment = only(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    env = env_of(deployment)
    assert env["JETPOOL_PEERING"] == ""
    assert "--verbose" in deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert not kinds(objects) & {"ClusterKopfPeering", "PodDisruptionBudget"}


def test_prod_runs_two_peered_operators_with_a_disruption_budget() -> None:
    objects = build(REPO / "manifests" / "overlays" / "prod")
    deployment = only(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    assert env_of(deployment)["JETPOOL_PEERING"] == "jetpool"
    assert only(objects, "ClusterKopfPeering")["metadata"]["name"] == "jetpool"
    assert only(objects, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    resources = deployment["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert resources["requests"]["cpu"] == "250m"


def test_cluster_scoped_objects_carry_no_namespace() -> None:
    for overlay in [BASE, *OVERLAYS]:
        for obj in build(overlay):
            if obj["kind"] in {
                "Namespace",
                "CustomResourceDefinition",
                "ClusterRole",
                "ClusterRoleBinding",
                "ClusterKopfPeering",
            }:
                assert "namespace" not in obj["metadata"], (overlay.name, obj["kind"])
