"""The local cluster behaves like Kubernetes: controllers, scheduler, kwok nodes, CEL."""

from __future__ import annotations

import json

import pytest

from e2e.testbed.cluster import Cluster, KubectlError, eventually

pytestmark = pytest.mark.kube


def deployment(name: str, replicas: int) -> dict[str, object]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "main", "image": "example.invalid/idle:1"}]},
            },
        },
    }


def running_ready_pods(cluster: Cluster, namespace: str, app: str) -> int:
    pods = cluster.get_json("pods", "-n", namespace, "-l", f"app={app}")["items"]
    return sum(
        1
        for pod in pods
        if pod["status"].get("phase") == "Running"
        and "deletionTimestamp" not in pod["metadata"]
        and any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in pod["status"].get("conditions", [])
        )
    )


def test_a_node_is_ready_and_the_server_is_1_36(cluster: Cluster) -> None:
    nodes = cluster.get_json("nodes")["items"]
    assert any(
        c["type"] == "Ready" and c["status"] == "True"
        for node in nodes
        for c in node["status"]["conditions"]
    )
    version = json.loads(cluster.kubectl("version", "-o", "json"))
    assert version["serverVersion"]["minor"].startswith("36")


def test_a_deployment_gets_running_ready_pods_scales_and_is_garbage_collected(
    cluster: Cluster, namespace: str
) -> None:
    cluster.apply(deployment("idle", 3), "-n", namespace)
    eventually(lambda: running_ready_pods(cluster, namespace, "idle") == 3, what="3 ready pods")

    cluster.kubectl("-n", namespace, "scale", "deployment/idle", "--replicas=5")
    eventually(lambda: running_ready_pods(cluster, namespace, "idle") == 5, what="5 ready pods")

    cluster.kubectl("-n", namespace, "scale", "deployment/idle", "--replicas=0")
    eventually(
        lambda: not cluster.get_json("pods", "-n", namespace, "-l", "app=idle")["items"],
        what="all pods gone after scaling to 0",
    )

    cluster.kubectl("-n", namespace, "scale", "deployment/idle", "--replicas=2")
    eventually(lambda: running_ready_pods(cluster, namespace, "idle") == 2, what="2 ready pods")
    cluster.kubectl("-n", namespace, "delete", "deployment/idle", "--wait=false")
    eventually(
        lambda: (
            not cluster.get_json("replicasets", "-n", namespace, "-l", "app=idle")["items"]
            and not cluster.get_json("pods", "-n", namespace, "-l", "app=idle")["items"]
        ),
        what="ReplicaSet and pods garbage-collected",
    )


WIDGETS_CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.testbed.jetpool.dev}
spec:
  group: testbed.jetpool.dev
  names: {kind: Widget, plural: widgets, singular: widget}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              min: {type: integer}
              max: {type: integer}
            x-kubernetes-validations:
            - rule: self.min <= self.max
              message: min must not exceed max
"""


def test_a_cel_rule_on_a_crd_rejects_a_bad_object_with_its_message(
    cluster: Cluster, namespace: str
) -> None:
    cluster.apply(WIDGETS_CRD)
    eventually(
        lambda: (
            "Established"
            in cluster.kubectl(
                "get",
                "crd",
                "widgets.testbed.jetpool.dev",
                "-o",
                "jsonpath={.status.conditions[?(@.status=='True')].type}",
            )
        ),
        what="CRD established",
    )
    good = {
        "apiVersion": "testbed.jetpool.dev/v1",
        "kind": "Widget",
        "metadata": {"name": "good"},
        "spec": {"min": 1, "max": 2},
    }
    bad = {**good, "metadata": {"name": "bad"}, "spec": {"min": 3, "max": 2}}
    eventually(lambda: cluster.apply(good, "-n", namespace), what="good widget accepted")
    with pytest.raises(KubectlError) as rejected:
        cluster.apply(bad, "-n", namespace)
    assert "min must not exceed max" in rejected.value.stderr
