"""The pool's Kubernetes objects: ownership, labels, worker config, security, hashing."""

from __future__ import annotations

import dataclasses
import json
from decimal import Decimal
from typing import Any

import pytest

from jetpool_operator.core.children import (
    INPUT_HASH_ANNOTATION,
    LABEL_MANAGED_BY,
    PoolRef,
    build_children,
    build_deployment,
    memory_guard_bytes,
    parse_quantity,
    selector_string,
    worker_settings,
)
from jetpool_protocol.worker_settings import WorkerSettings

from .support import POOL, container, env_map, spec


class TestOwnershipAndLabels:
    def test_every_child_is_controlled_by_the_pool(self) -> None:
        for obj in build_children(POOL, spec(), replicas=2).all():
            [ref] = obj["metadata"]["ownerReferences"]
            assert ref == {
                "apiVersion": "jetpool.dev/v1alpha1",
                "kind": "WorkerPool",
                "name": "resize-images",
                "uid": "7c1e-uid",
                "controller": True,
                "blockOwnerDeletion": True,
            }
            assert obj["metadata"]["namespace"] == "media"

    def test_every_child_carries_the_jetpool_labels(self) -> None:
        for obj in build_children(POOL, spec(), replicas=2).all():
            assert obj["metadata"]["labels"] == {
                "app.kubernetes.io/name": "jetpool-worker",
                "app.kubernetes.io/instance": "resize-images",
                "app.kubernetes.io/managed-by": "jetpool",
                "jetpool.dev/pool": "resize-images",
            }

    def test_selectors_match_the_pod_labels(self) -> None:
        children = build_children(POOL, spec(), replicas=2)
        pod_labels = children.deployment["spec"]["template"]["metadata"]["labels"]
        selectors = [
            children.deployment["spec"]["selector"]["matchLabels"],
            children.pod_disruption_budget["spec"]["selector"]["matchLabels"],
            children.metrics_service["spec"]["selector"],
        ]
        for selector in selectors:
            assert selector.items() <= pod_labels.items()

    def test_selector_string_is_the_serialized_deployment_selector(self) -> None:
        deployment = build_deployment(POOL, spec(), replicas=1)
        labels = deployment["spec"]["selector"]["matchLabels"]
        parsed = dict(pair.split("=") for pair in selector_string(POOL).split(","))
        assert parsed == labels

    def test_user_pod_labels_are_kept_but_cannot_override_jetpool_labels(self) -> None:
        deployment = build_deployment(
            POOL,
            spec(template={"labels": {"team": "media", LABEL_MANAGED_BY: "someone-else"}}),
            replicas=1,
        )
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert labels["team"] == "media"
        assert labels[LABEL_MANAGED_BY] == "jetpool"

    def test_names_follow_the_pool(self) -> None:
        children = build_children(POOL, spec(), replicas=1)
        assert children.deployment["metadata"]["name"] == "resize-images-worker"
        assert children.metrics_service["metadata"]["name"] == "resize-images-metrics"
        assert children.service_account is not None
        assert children.service_account["metadata"]["name"] == "resize-images-worker"


class TestReplicas:
    def test_replicas_are_the_autoscalers_input(self) -> None:
        assert build_deployment(POOL, spec(), replicas=7)["spec"]["replicas"] == 7

    def test_a_paused_pool_has_zero_replicas_whatever_the_autoscaler_says(self) -> None:
        assert build_deployment(POOL, spec(paused=True), replicas=7)["spec"]["replicas"] == 0

    def test_negative_replicas_are_a_programming_error(self) -> None:
        with pytest.raises(ValueError, match="replicas"):
            build_deployment(POOL, spec(), replicas=-1)


class TestInputHash:
    def test_equal_inputs_give_byte_identical_objects(self) -> None:
        first = build_children(POOL, spec(concurrency=8), replicas=3).all()
        second = build_children(POOL, spec(concurrency=8), replicas=3).all()
        assert json.dumps(first, sort_keys=True) == json.dumps(second, sort_keys=True)

    def test_the_hash_changes_with_the_spec(self) -> None:
        a = build_deployment(POOL, spec(concurrency=4), replicas=3)
        b = build_deployment(POOL, spec(concurrency=8), replicas=3)
        hash_a = a["metadata"]["annotations"][INPUT_HASH_ANNOTATION]
        assert hash_a != b["metadata"]["annotations"][INPUT_HASH_ANNOTATION]

    def test_the_deployment_hash_ignores_replicas_which_are_patched_separately(self) -> None:
        a = build_deployment(POOL, spec(), replicas=1)
        b = build_deployment(POOL, spec(), replicas=9)
        assert (
            a["metadata"]["annotations"][INPUT_HASH_ANNOTATION]
            == b["metadata"]["annotations"][INPUT_HASH_ANNOTATION]
        )

    def test_every_child_has_a_hash(self) -> None:
        for obj in build_children(POOL, spec(), replicas=1).all():
            assert len(obj["metadata"]["annotations"][INPUT_HASH_ANNOTATION]) == 16

    def test_objects_do_not_share_mutable_data_with_the_spec(self) -> None:
        pool_spec = spec(template={"tolerations": [{"key": "a", "operator": "Exists"}]})
        deployment = build_deployment(POOL, pool_spec, replicas=1)
        deployment["spec"]["template"]["spec"]["tolerations"][0]["key"] = "changed"
        assert pool_spec.template.tolerations[0]["key"] == "a"


class TestWorkerEnvironment:
    def test_the_rendered_env_parses_back_to_the_same_worker_settings(self) -> None:
        pool_spec = spec(
            concurrency=8,
            task={"timeoutSeconds": 60, "ttlSeconds": 600},
            retry={"maxAttempts": 3, "nonRetryable": ["ValueError", "app.Fatal"]},
            security={"signingKeySecret": {"name": "keys"}, "requireSigned": True},
        )
        env = env_map(build_deployment(POOL, pool_spec, replicas=1))
        plain = {k: v for k, v in env.items() if isinstance(v, str)}
        parsed = WorkerSettings.from_env({**plain, "JETPOOL_WORKER_ID": "pod-1"})
        assert parsed == worker_settings(POOL, pool_spec).model_copy(update={"worker_id": "pod-1"})
        assert parsed.non_retryable == ("ValueError", "app.Fatal")
        assert parsed.require_signed is True

    def test_a_pool_that_recorded_the_legacy_default_stream_keeps_it(self) -> None:
        legacy = dataclasses.replace(POOL, recorded_stream="jetpool-media-resize-images")
        settings = worker_settings(legacy, spec())
        assert settings.stream == "jetpool-media-resize-images"
        assert settings.dead_letter_stream == "jetpool-media-resize-images-dlq"

    def test_a_recorded_stream_that_is_not_the_legacy_default_is_ignored(self) -> None:
        other = dataclasses.replace(POOL, recorded_stream="jetpool-other-victim-tasks")
        assert worker_settings(other, spec()).stream == "jetpool-media_resize-images-tasks"

    def test_the_worker_id_is_the_pod_name(self) -> None:
        env = env_map(build_deployment(POOL, spec(), replicas=1))
        assert env["JETPOOL_WORKER_ID"] == {
            "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}
        }

    def test_nats_names_default_from_the_pool_identity(self) -> None:
        settings = worker_settings(POOL, spec())
        assert settings.stream == "jetpool-media_resize-images-tasks"
        assert settings.dead_letter_stream == "jetpool-media_resize-images-tasks-dlq"
        assert settings.control_key == "media.resize-images"
        assert settings.consumer == "workers"

    def test_a_rate_limit_reaches_the_workers_with_its_default_burst(self) -> None:
        settings = worker_settings(POOL, spec(rateLimit={"perSecond": 45}))
        assert settings.rate_limit_per_second == 45
        assert settings.rate_limit_burst == 5  # 100 ms windows: ceil(45 / 10)
        assert settings.rate_limit_subject_prefix == "jetpool.ratelimit.media.resize-images"
        unlimited = worker_settings(POOL, spec())
        assert (unlimited.rate_limit_subject_prefix, unlimited.rate_limit_burst) == (None, None)

    def test_a_per_key_rate_limit_reaches_the_workers_without_a_pool_limit(self) -> None:
        per_key = {"header": "Customer", "perSecond": 5}
        settings = worker_settings(POOL, spec(rateLimit={"perKey": per_key}))
        assert (settings.rate_limit_per_second, settings.rate_limit_burst) == (None, None)
        assert settings.rate_limit_key_header == "Customer"
        assert (settings.rate_limit_key_per_second, settings.rate_limit_key_burst) == (5, 1)
        assert settings.rate_limit_subject_prefix == "jetpool.ratelimit.media.resize-images"

    def test_a_plain_pool_renders_no_lanes(self) -> None:
        assert "JETPOOL_LANES" not in env_map(build_deployment(POOL, spec(), replicas=1))

    def test_a_laned_pool_renders_its_lanes_levels_first_then_partitions(self) -> None:
        pool_spec = spec(
            priorities={
                "levels": [{"name": "high", "weight": 100}, {"name": "normal", "weight": 10}],
                "default": "normal",
            },
            ordered={"partitions": 2, "pullsPerWorker": 2},
            concurrency=8,
        )
        env = env_map(build_deployment(POOL, pool_spec, replicas=1))
        assert env["JETPOOL_LANES"] == (
            "workers-high:100:high:0,workers:10:normal:0,"
            "workers-ordered-0:1:ordered:1,workers-ordered-1:1:ordered:1"
        )
        assert env["JETPOOL_ORDERED_PULLS_PER_WORKER"] == "2"
        parsed = WorkerSettings.from_env({k: v for k, v in env.items() if isinstance(v, str)})
        assert [lane.consumer for lane in parsed.pull_lanes] == [
            "workers-high",
            "workers",
            "workers-ordered-0",
            "workers-ordered-1",
        ]

    def test_ordered_keys_alone_keep_workers_as_the_default_lane(self) -> None:
        settings = worker_settings(POOL, spec(ordered={"partitions": 1}))
        assert settings.lanes == ("workers:1:default:0", "workers-ordered-0:1:ordered:1")

    def test_ack_wait_is_at_most_a_minute_and_heartbeats_keep_longer_tasks(self) -> None:
        short = worker_settings(POOL, spec(task={"timeoutSeconds": 10}))
        assert short.ack_wait_seconds == 40
        long = worker_settings(POOL, spec(task={"timeoutSeconds": 3600}))
        assert long.ack_wait_seconds == 60
        assert long.effective_heartbeat_seconds < long.ack_wait_seconds

    def test_user_env_is_appended_and_may_replace_a_rendered_variable(self) -> None:
        pool_spec = spec(
            template={
                "env": [
                    {"name": "JETPOOL_LOG_LEVEL", "value": "DEBUG"},
                    {"name": "JETPOOL_CONCURRENCY", "value": "2"},
                    {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "t"}}},
                ]
            },
            concurrency=8,
        )
        env = container(build_deployment(POOL, pool_spec, replicas=1))["env"]
        names = [e["name"] for e in env]
        assert len(names) == len(set(names)), "no duplicate variables"
        assert names[-3:] == ["JETPOOL_LOG_LEVEL", "JETPOOL_CONCURRENCY", "TOKEN"]
        assert env[-2] == {"name": "JETPOOL_CONCURRENCY", "value": "2"}
        assert env[-1]["valueFrom"] == {"secretKeyRef": {"name": "s", "key": "t"}}


class TestSecretsAsFiles:
    def test_no_secret_volume_without_secrets(self) -> None:
        pod = build_deployment(POOL, spec(), replicas=1)["spec"]["template"]["spec"]
        assert [v["name"] for v in pod["volumes"]] == ["tmp"]

    def test_every_referenced_secret_key_is_projected_to_the_path_the_worker_reads(self) -> None:
        pool_spec = spec(
            nats={
                "url": "tls://nats:4222",
                "credentialsSecret": {"name": "creds", "key": "user.creds"},
                "tls": {"ca": {"name": "ca", "key": "ca.pem"}},
            },
            security={"encryptionKeySecret": {"name": "keys"}},
        )
        deployment = build_deployment(POOL, pool_spec, replicas=1)
        pod = deployment["spec"]["template"]["spec"]
        [volume] = [v for v in pod["volumes"] if "projected" in v]
        [mount] = [m for m in container(deployment)["volumeMounts"] if m["name"] == volume["name"]]
        assert mount["readOnly"] is True
        files = {
            f"{mount['mountPath']}/{item['path']}": (source["secret"]["name"], item["key"])
            for source in volume["projected"]["sources"]
            for item in source["secret"]["items"]
        }
        settings = worker_settings(POOL, pool_spec)
        assert files == {
            settings.nats_credentials_file: ("creds", "user.creds"),
            settings.nats_tls_ca_file: ("ca", "ca.pem"),
            settings.encryption_key_file: ("keys", "encryption.key"),
        }
        assert settings.nats_tls_cert_file is None

    def test_a_tls_secret_name_projects_ca_cert_and_key(self) -> None:
        settings = worker_settings(POOL, spec(nats={"url": "tls://n", "tls": {"secretName": "t"}}))
        assert settings.nats_tls_ca_file is not None
        assert settings.nats_tls_cert_file is not None
        assert settings.nats_tls_key_file is not None

    def test_workers_with_their_own_credentials_never_mount_the_operators(self) -> None:
        pool_spec = spec(
            nats={
                "url": "nats://n",
                "credentialsSecret": {"name": "operator-creds"},
                "workerCredentialsSecret": {"name": "worker-creds", "key": "w.creds"},
            }
        )
        deployment = build_deployment(POOL, pool_spec, replicas=1)
        pod = json.dumps(deployment["spec"]["template"]["spec"])
        assert "operator-creds" not in pod
        [volume] = [
            v for v in deployment["spec"]["template"]["spec"]["volumes"] if "projected" in v
        ]
        [source] = volume["projected"]["sources"]
        assert source["secret"]["name"] == "worker-creds"
        assert source["secret"]["items"][0]["key"] == "w.creds"
        assert worker_settings(POOL, pool_spec).nats_credentials_file is not None

    def test_worker_credentials_key_defaults_like_the_operators(self) -> None:
        pool_spec = spec(nats={"url": "nats://n", "workerCredentialsSecret": {"name": "w"}})
        assert pool_spec.nats.worker_credentials_secret is not None
        assert pool_spec.nats.worker_credentials_secret.key == "nats.creds"

    def test_without_worker_credentials_workers_share_the_operators(self) -> None:
        pool_spec = spec(nats={"url": "nats://n", "credentialsSecret": {"name": "shared"}})
        pod = build_deployment(POOL, pool_spec, replicas=1)["spec"]["template"]["spec"]
        [volume] = [v for v in pod["volumes"] if "projected" in v]
        assert [s["secret"]["name"] for s in volume["projected"]["sources"]] == ["shared"]

    def test_changing_the_worker_credentials_rolls_the_workers(self) -> None:
        one = spec(nats={"url": "nats://n", "workerCredentialsSecret": {"name": "a"}})
        two = spec(nats={"url": "nats://n", "workerCredentialsSecret": {"name": "b"}})
        hashes = {
            build_deployment(POOL, s, replicas=1)["metadata"]["annotations"][INPUT_HASH_ANNOTATION]
            for s in (one, two)
        }
        assert len(hashes) == 2

    def test_secret_files_are_not_world_readable(self) -> None:
        pool_spec = spec(nats={"url": "nats://n", "credentialsSecret": {"name": "c"}})
        pod = build_deployment(POOL, pool_spec, replicas=1)["spec"]["template"]["spec"]
        [volume] = [v for v in pod["volumes"] if "projected" in v]
        assert volume["projected"]["defaultMode"] & 0o007 == 0


class TestPodHardening:
    def test_the_container_runs_with_the_restricted_security_profile(self) -> None:
        deployment = build_deployment(POOL, spec(), replicas=1)
        security = container(deployment)["securityContext"]
        assert security["runAsNonRoot"] is True
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"] == {"drop": ["ALL"]}
        assert security["seccompProfile"] == {"type": "RuntimeDefault"}
        pod_security = deployment["spec"]["template"]["spec"]["securityContext"]
        assert pod_security["runAsNonRoot"] is True
        assert pod_security["runAsUser"] != 0

    def test_a_writable_tmp_exists_despite_the_read_only_root(self) -> None:
        deployment = build_deployment(POOL, spec(), replicas=1)
        mounts = {m["mountPath"]: m["name"] for m in container(deployment)["volumeMounts"]}
        volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
        assert "emptyDir" in volumes[mounts["/tmp"]]

    def test_workers_get_no_kubernetes_api_token(self) -> None:
        children = build_children(POOL, spec(), replicas=1)
        assert children.deployment["spec"]["template"]["spec"]["automountServiceAccountToken"] is (
            False
        )
        assert children.service_account is not None
        assert children.service_account["automountServiceAccountToken"] is False

    def test_probes_hit_the_worker_health_endpoints_on_the_metrics_port(self) -> None:
        worker = container(build_deployment(POOL, spec(), replicas=1))
        assert worker["ports"] == [{"name": "metrics", "containerPort": 9090, "protocol": "TCP"}]
        assert worker["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
        assert worker["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}

    def test_kubernetes_waits_longer_than_the_workers_own_shutdown_grace(self) -> None:
        pod = build_deployment(POOL, spec(shutdownGraceSeconds=60), replicas=1)["spec"]["template"]
        grace = pod["spec"]["terminationGracePeriodSeconds"]
        assert grace > 60
        assert (
            env_map(build_deployment(POOL, spec(shutdownGraceSeconds=60), replicas=1))[
                "JETPOOL_SHUTDOWN_GRACE_SECONDS"
            ]
            == "60.0"
        )


class TestTemplateKnobs:
    def test_scheduling_knobs_pass_through_and_empty_ones_are_omitted(self) -> None:
        affinity: dict[str, Any] = {
            "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {}}
        }
        pod = build_deployment(
            POOL,
            spec(
                template={
                    "nodeSelector": {"disk": "ssd"},
                    "affinity": affinity,
                    "priorityClassName": "batch",
                    "imagePullSecrets": [{"name": "regcred"}],
                }
            ),
            replicas=1,
        )["spec"]["template"]["spec"]
        assert pod["nodeSelector"] == {"disk": "ssd"}
        assert pod["affinity"] == affinity
        assert pod["priorityClassName"] == "batch"
        assert pod["imagePullSecrets"] == [{"name": "regcred"}]
        assert "tolerations" not in pod
        assert "topologySpreadConstraints" not in pod

    def test_an_existing_service_account_is_used_and_none_is_created(self) -> None:
        children = build_children(POOL, spec(template={"serviceAccountName": "mine"}), replicas=1)
        assert children.service_account is None
        assert children.deployment["spec"]["template"]["spec"]["serviceAccountName"] == "mine"
        assert len(children.all()) == 3

    def test_resources_default_to_requests_and_a_memory_limit(self) -> None:
        worker = container(build_deployment(POOL, spec(), replicas=1))
        assert worker["resources"] == {
            "limits": {"memory": "512Mi"},
            "requests": {"cpu": "100m", "memory": "256Mi"},
        }


class TestDisruptionBudgetAndService:
    def test_the_pdb_lets_a_quarter_go_and_never_blocks_on_unhealthy_pods(self) -> None:
        pdb = build_children(POOL, spec(), replicas=4).pod_disruption_budget
        assert pdb["apiVersion"] == "policy/v1"
        assert pdb["spec"]["maxUnavailable"] == "25%"
        assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"

    def test_the_metrics_service_is_headless_on_the_named_port(self) -> None:
        service = build_children(POOL, spec(), replicas=1).metrics_service
        assert service["spec"]["clusterIP"] == "None"
        assert service["spec"]["ports"][0]["targetPort"] == "metrics"


class TestMemoryGuard:
    @pytest.mark.parametrize(
        ("quantity", "expected"),
        [
            ("512Mi", Decimal(512 * 1024**2)),
            ("1Gi", Decimal(1024**3)),
            ("1.5Gi", Decimal(3 * 1024**3 // 2)),
            ("500M", Decimal(500 * 10**6)),
            ("100m", Decimal("0.1")),
            ("1e3", Decimal(1000)),
            (2048, Decimal(2048)),
            ("2048", Decimal(2048)),
        ],
    )
    def test_quantities_parse_like_kubernetes(self, quantity: int | str, expected: Decimal) -> None:
        assert parse_quantity(quantity) == expected

    def test_nonsense_quantities_are_rejected(self) -> None:
        with pytest.raises(ValueError, match="quantity"):
            parse_quantity("lots")

    def test_the_guard_defaults_below_the_memory_limit(self) -> None:
        guard = memory_guard_bytes(spec(template={"resources": {"limits": {"memory": "1Gi"}}}))
        assert guard is not None
        assert 0.8 * 1024**3 < guard < 1024**3

    def test_an_explicit_guard_wins_and_no_limit_means_no_guard(self) -> None:
        assert memory_guard_bytes(spec(memoryLimitBytes=1000)) == 1000
        assert memory_guard_bytes(spec(template={"resources": {"limits": {"cpu": "1"}}})) is None


def test_a_pool_in_another_namespace_gets_its_own_nats_names() -> None:
    other = PoolRef(name="resize-images", namespace="staging", uid="u2")
    assert worker_settings(other, spec()).stream != worker_settings(POOL, spec()).stream


def test_naming_the_pools_own_service_account_still_creates_and_owns_it() -> None:
    children = build_children(
        POOL, spec(template={"serviceAccountName": "resize-images-worker"}), 1
    )
    assert children.service_account is not None
    assert children.service_account["metadata"]["ownerReferences"][0]["uid"] == POOL.uid
