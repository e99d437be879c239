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


def _policed(
    cluster: Cluster, render: Render, grant: str | None = None
) -> Iterator[tuple[str, str]]:
    """Two fresh namespaces under the chart's policy, bound to them alone by a label; with
    ``grant``, the first namespace is granted that extra subject prefix."""
    cluster.kubectl("apply", "--server-side", "-k", str(CRDS))
    label = uuid.uuid4().hex[:8]
    names = [f"vap-a-{label}", f"vap-b-{label}"]
    extra = (
        ()
        if grant is None
        else ("--set-json", f"tenancy.extraSubjectSpaces={json.dumps({names[0]: [grant]})}")
    )
    objects = [
        o
        for o in render(
            "--set-string",  # a hex label such as 1234e567 would otherwise be a number
            f"admissionPolicy.namespaceSelector.matchLabels.jetpool\\.dev/policy-test={label}",
            *extra,
        )
        if o["kind"].startswith("ValidatingAdmissionPolicy")
    ]
    for name in names:
        cluster.kubectl("create", "namespace", name)
        cluster.kubectl("label", "namespace", name, f"jetpool.dev/policy-test={label}")
    for obj in objects:
        cluster.apply(obj)
    yield names[0], names[1]
    for obj in objects:
        cluster.kubectl("delete", obj["kind"], obj["metadata"]["name"], check=False)
    cluster.kubectl("delete", "namespace", *names, "--wait=false", check=False)


@pytest.fixture
def policed_namespaces(cluster: Cluster, render: Render) -> Iterator[tuple[str, str]]:
    yield from _policed(cluster, render)


GRANT = "invoices.billing."


@pytest.fixture
def granted_namespaces(cluster: Cluster, render: Render) -> Iterator[tuple[str, str]]:
    """Like policed_namespaces; the first one is granted GRANT by tenancy.extraSubjectSpaces."""
    yield from _policed(cluster, render, GRANT)


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


def test_the_policy_carries_the_extra_subject_spaces_as_a_cel_map(render: Render) -> None:
    [policy] = [
        o
        for o in render("--set-json", 'tenancy.extraSubjectSpaces={"b": ["x.b."]}')
        if o["kind"] == "ValidatingAdmissionPolicy"
    ]
    [extra] = [v for v in policy["spec"]["variables"] if v["name"] == "extra"]
    assert json.loads(extra["expression"]) == {"b": ["x.b."]}


def test_a_granted_prefix_is_admitted_in_its_namespace_and_refused_in_another(
    cluster: Cluster, granted_namespaces: tuple[str, str]
) -> None:
    mine, other = granted_namespaces
    eventually(lambda: _refuses(cluster, pool(other, [f"{GRANT}>"])), timeout=30, what="policy on")
    assert "server dry run" in dry_run(cluster, pool(mine, [f"{GRANT}>", f"tasks.{mine}.x"]))
    with pytest.raises(KubectlError) as refused:
        dry_run(cluster, pool(other, [f"{GRANT}paid.>"]))
    assert f"inside namespace {other}'s subject space tasks.{other}.> (refused: " in str(
        refused.value
    )
    with pytest.raises(KubectlError) as wider:
        dry_run(cluster, pool(mine, ["invoices.shop.>"]))
    assert f"subject space tasks.{mine}.> or {GRANT}> (refused: invoices.shop.>)" in str(
        wider.value
    )


def test_the_crd_still_refuses_what_no_grant_can_allow(
    cluster: Cluster, granted_namespaces: tuple[str, str]
) -> None:
    mine, _ = granted_namespaces
    for subject in (">", "invoices.>", "$JS.API.>", "_INBOX.x.>", "*.billing.x"):
        with pytest.raises(KubectlError, match=r"must each start with tasks\.<namespace>\."):
            dry_run(cluster, pool(mine, [subject]))
