"""What a pool may put in its pods, and names it cannot take: the real apiserver refuses
host access at apply time, the operator refuses what its settings do not allow, and an
existing object with a child's name is reported and left exactly as it was."""

from __future__ import annotations

import time
from typing import Any

import pytest

from e2e.testbed.cluster import Cluster, KubectlError, eventually
from tests.e2e.conftest import (
    CHART_POLICY,
    NatsEndpoint,
    condition,
    pool_manifest,
    wait_for_condition,
)

pytestmark = [pytest.mark.kube, pytest.mark.nats, pytest.mark.e2e]

VOLUME_RULE = (
    "template.volumes: each volume needs exactly one of configMap, secret, emptyDir, projected,"
    " downwardAPI, persistentVolumeClaim, ephemeral; hostPath and other node-level volume types"
    " are not accepted"
)
HOST_PATH = {"volumes": [{"name": "host", "hostPath": {"path": "/"}}]}


def _rejection(cluster: Cluster, namespace: str, template: dict[str, Any], *extra: str) -> str:
    manifest = pool_manifest("host-access", "nats://127.0.0.1:4222", template=template)
    with pytest.raises(KubectlError) as rejected:
        cluster.apply(manifest, "-n", namespace, *extra)
    return rejected.value.stderr


def test_a_host_path_volume_is_rejected_by_the_apiserver_naming_the_field(
    cluster: Cluster, namespace: str, crds: None
) -> None:
    stderr = _rejection(cluster, namespace, HOST_PATH)
    assert 'unknown field "spec.template.volumes[0].hostPath"' in stderr


def test_a_host_path_volume_sent_without_field_validation_gets_the_rules_message(
    cluster: Cluster, namespace: str, crds: None
) -> None:
    """Pruned instead of refused, the volume has no type left, and the rule says why."""
    stderr = _rejection(cluster, namespace, HOST_PATH, "--validate=false")
    assert VOLUME_RULE in stderr


@pytest.mark.parametrize(
    ("template", "field"),
    [
        ({"hostNetwork": True}, "spec.template.hostNetwork"),
        ({"hostPID": True}, "spec.template.hostPID"),
        ({"securityContext": {"privileged": True}}, "spec.template.securityContext"),
    ],
)
def test_host_namespaces_and_privileges_are_not_part_of_the_api(
    cluster: Cluster, namespace: str, crds: None, template: dict[str, Any], field: str
) -> None:
    assert f'unknown field "{field}"' in _rejection(cluster, namespace, template)


def test_host_namespaces_sent_without_field_validation_never_reach_the_pool(
    cluster: Cluster, namespace: str, crds: None
) -> None:
    template = {"hostNetwork": True, "securityContext": {"privileged": True}}
    manifest = pool_manifest("pruned", "nats://127.0.0.1:4222", template=template)
    cluster.apply(manifest, "-n", namespace, "--validate=false")
    stored = cluster.get_json("workerpool", "pruned", "-n", namespace)["spec"]["template"]
    assert "hostNetwork" not in stored
    assert "securityContext" not in stored


def test_an_apparmor_annotation_is_rejected_with_the_rules_message(
    cluster: Cluster, namespace: str, crds: None
) -> None:
    template = {"annotations": {"container.apparmor.security.beta.kubernetes.io/worker": "x"}}
    stderr = _rejection(cluster, namespace, template)
    assert "template.annotations must not set AppArmor or seccomp profiles" in stderr


def _no_deployment(cluster: Cluster, namespace: str, pool: str) -> bool:
    found = cluster.kubectl("-n", namespace, "get", "deployment", f"{pool}-worker", check=False)
    return found == ""


@pytest.mark.parametrize(
    ("template", "words", "policy_words"),
    [
        (
            {"serviceAccountName": "default"},
            [
                "template.serviceAccountName 'default'",
                "JETPOOL_ALLOW_FOREIGN_SERVICE_ACCOUNTS=true",
            ],
            [
                "spec.template.serviceAccountName 'default'",
                "tenancy.allowForeignServiceAccounts=true",
            ],
        ),
        (
            {
                "volumes": [
                    {
                        "name": "api-token",
                        "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]},
                    }
                ]
            },
            ["template.volumes['api-token'] projects a serviceAccountToken"],
            [
                "spec.template.volumes['api-token'] projects a serviceAccountToken",
                "tenancy.allowProjectedTokens=true",
            ],
        ),
    ],
    ids=["foreign-service-account", "projected-token"],
)
def test_what_the_operator_does_not_allow_is_refused_and_no_deployment_is_made(
    cluster: Cluster,
    namespace: str,
    operator: object,
    nats_endpoint: NatsEndpoint,
    template: dict[str, Any],
    words: list[str],
    policy_words: list[str],
) -> None:
    manifest = pool_manifest("refused", nats_endpoint.pod_url, template=template)
    if CHART_POLICY:  # refused at apply time, naming the field and the Helm value
        with pytest.raises(KubectlError) as refused:
            cluster.apply(manifest, "-n", namespace)
        for word in policy_words:
            assert word in str(refused.value)
        assert _no_deployment(cluster, namespace, "refused")
        return
    cluster.apply(manifest, "-n", namespace)
    pool = wait_for_condition(cluster, namespace, "refused", "Ready", "False")
    ready = condition(pool, "Ready")
    assert ready is not None
    assert ready["reason"] == "TemplateRefused", ready
    for word in words:
        assert word in ready["message"]
    time.sleep(3)  # several control-loop ticks
    assert _no_deployment(cluster, namespace, "refused")


def _snapshot(cluster: Cluster, namespace: str, kind: str, name: str) -> dict[str, Any]:
    meta = cluster.get_json(kind, name, "-n", namespace)["metadata"]
    return {k: meta.get(k) for k in ("resourceVersion", "uid", "labels", "ownerReferences")}


def test_existing_objects_with_the_childrens_names_are_reported_left_untouched_and_outlive_the_pool(
    cluster: Cluster, namespace: str, operator: object, nats_endpoint: NatsEndpoint
) -> None:
    pool = "squatted"
    existing = [
        ("serviceaccount", f"{pool}-worker"),
        ("service", f"{pool}-metrics"),
        ("poddisruptionbudget", f"{pool}-worker"),
    ]
    cluster.kubectl("-n", namespace, "create", "serviceaccount", f"{pool}-worker")
    cluster.kubectl(
        "-n", namespace, "create", "service", "clusterip", f"{pool}-metrics", "--tcp=80"
    )
    cluster.kubectl(
        "-n", namespace, "create", "pdb", f"{pool}-worker", "--selector=app=x", "--min-available=1"
    )
    before = {obj: _snapshot(cluster, namespace, *obj) for obj in existing}

    cluster.apply(pool_manifest(pool, nats_endpoint.pod_url), "-n", namespace)
    reported = wait_for_condition(cluster, namespace, pool, "Ready", "False")
    ready = condition(reported, "Ready")
    assert ready is not None
    assert ready["reason"] == "ChildConflict", ready
    assert (
        f"ServiceAccount {pool}-worker already exists, not owned by any object"
        in (ready["message"])
    )
    time.sleep(3)  # several control-loop ticks
    assert {obj: _snapshot(cluster, namespace, *obj) for obj in existing} == before
    assert _no_deployment(cluster, namespace, pool)

    cluster.kubectl("-n", namespace, "delete", "workerpool", pool, "--wait=true")
    time.sleep(3)  # time for the garbage collector, had anything pointed it at them
    assert {obj: _snapshot(cluster, namespace, *obj) for obj in existing} == before


def test_once_the_squatter_is_gone_the_pool_creates_its_own_child(
    cluster: Cluster, namespace: str, operator: object, nats_endpoint: NatsEndpoint
) -> None:
    cluster.kubectl("-n", namespace, "create", "serviceaccount", "late-worker")
    cluster.apply(pool_manifest("late", nats_endpoint.pod_url), "-n", namespace)
    wait_for_condition(cluster, namespace, "late", "Ready", "False")
    cluster.kubectl("-n", namespace, "delete", "serviceaccount", "late-worker")

    def owned() -> bool:
        meta = cluster.get_json("serviceaccount", "late-worker", "-n", namespace)["metadata"]
        return any(r["kind"] == "WorkerPool" for r in meta.get("ownerReferences") or [])

    eventually(owned, what="the pool's own ServiceAccount")
    eventually(lambda: not _no_deployment(cluster, namespace, "late"), what="the Deployment")
