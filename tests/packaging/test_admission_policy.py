"""The chart's ValidatingAdmissionPolicy keeps a pool's subjects in its namespace, judged by the
real apiserver at apply time (the CRD's own rules cannot see the namespace)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from e2e.testbed.cluster import Cluster, KubectlError, eventually
from tests.packaging.conftest import CRDS, Render, kinds

pytestmark = pytest.mark.kube


def pool(namespace: str, subjects: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": "jetpool.dev/v1alpha1",
        "kind": "WorkerPool",
        "metadata": {"name": "p", "namespace": namespace},
        "spec": {
            "image": "jetpool-worker:e2e",
            "handler": "x:y",
            "nats": {"url": "nats://nats:4222", "subjects": subjects},
        },
    }


def dry_run(cluster: Cluster, manifest: dict[str, Any]) -> str:
    return cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=json.dumps(manifest))


@pytest.fixture
def policed_namespaces(cluster: Cluster, render: Render) -> Iterator[tuple[str, str]]:
    """Two fresh namespaces under the chart's policy, bound to them alone by a label."""
    cluster.kubectl("apply", "--server-side", "-k", str(CRDS))
    label = uuid.uuid4().hex[:8]
    objects = [
        o
        for o in render(
            "--set",
            f"admissionPolicy.namespaceSelector.matchLabels.jetpool\\.dev/policy-test={label}",
        )
        if o["kind"].startswith("ValidatingAdmissionPolicy")
    ]
    names = [f"vap-a-{label}", f"vap-b-{label}"]
    for name in names:
        cluster.kubectl("create", "namespace", name)
        cluster.kubectl("label", "namespace", name, f"jetpool.dev/policy-test={label}")
    for obj in objects:
        cluster.apply(obj)
    yield names[0], names[1]
    for obj in objects:
        cluster.kubectl("delete", obj["kind"], obj["metadata"]["name"], check=False)
    cluster.kubectl("delete", "namespace", *names, "--wait=false", check=False)


def test_the_chart_ships_the_policy_and_its_binding_unless_disabled(render: Render) -> None:
    wanted = {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}
    assert wanted <= kinds(render())
    assert not wanted & kinds(render("--set", "admissionPolicy.enabled=false"))


def test_a_pool_listing_another_namespace_s_subjects_is_refused_at_apply_time(
    cluster: Cluster, policed_namespaces: tuple[str, str]
) -> None:
    mine, other = policed_namespaces

    def refused() -> str | None:
        try:
            dry_run(cluster, pool(mine, [f"tasks.{other}.orders.>"]))
        except KubectlError as exc:
            return str(exc)
        return None  # the policy is not active yet

    message = eventually(refused, timeout=30, what="the policy refusing a foreign subject")
    assert f"must stay inside namespace {mine}'s subject space tasks.{mine}.>" in message
    assert f"tasks.{other}.orders.>" in message


def test_a_pool_inside_its_own_subject_space_is_admitted(
    cluster: Cluster, policed_namespaces: tuple[str, str]
) -> None:
    mine, other = policed_namespaces
    eventually(
        lambda: _refuses(cluster, pool(mine, [f"tasks.{other}.x"])), timeout=30, what="policy on"
    )
    assert "server dry run" in dry_run(cluster, pool(mine, [f"tasks.{mine}.orders.>"]))
    defaults = pool(mine, [])
    del defaults["spec"]["nats"]["subjects"]  # the default subjects are the namespace's own
    assert "server dry run" in dry_run(cluster, defaults)


def _refuses(cluster: Cluster, manifest: dict[str, Any]) -> bool:
    try:
        dry_run(cluster, manifest)
    except KubectlError:
        return True
    return False
