"""The WorkerPool models: camelCase wire format, production defaults, field validation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from jetpool_operator.api.v1alpha1 import (
    DeletionPolicy,
    WorkerPool,
    WorkerPoolSpec,
    WorkerPoolStatus,
)
from jetpool_protocol.worker_settings import Jitter, WorkerSettings

from .schema_walk import root_schema, unknown_fields

EXAMPLES = sorted((Path(__file__).resolve().parents[3] / "manifests" / "examples").glob("*.yaml"))


def _minimal(**spec: Any) -> dict[str, Any]:
    return {"image": "worker:1", "handler": "app:run", "nats": {"url": "nats://n:4222"}, **spec}


class TestWireFormat:
    def test_fields_are_camel_case_on_the_wire_and_snake_case_in_python(self) -> None:
        spec = WorkerPoolSpec.model_validate(
            _minimal(scaling={"minReplicas": 0, "scaleDownDelaySeconds": 60})
        )
        assert spec.scaling.min_replicas == 0
        assert spec.scaling.scale_down_delay_seconds == 60
        dumped = spec.model_dump(by_alias=True, mode="json")
        assert dumped["scaling"]["scaleDownDelaySeconds"] == 60
        assert "deletionPolicy" in dumped

    def test_python_names_are_accepted_too(self) -> None:
        spec = WorkerPoolSpec(image="w", handler="a:b", nats={"url": "nats://n"}, paused=True)
        assert spec.paused is True

    def test_a_dumped_spec_validates_back_to_an_equal_spec(self) -> None:
        spec = WorkerPoolSpec.model_validate(_minimal(concurrency=16))
        again = WorkerPoolSpec.model_validate(spec.model_dump(by_alias=True, mode="json"))
        assert again == spec

    def test_unknown_fields_are_rejected_so_typos_surface(self) -> None:
        with pytest.raises(ValidationError, match="minReplica"):
            WorkerPoolSpec.model_validate(_minimal(scaling={"minReplica": 2}))


class TestProductionDefaults:
    def test_a_minimal_spec_gets_safe_defaults(self) -> None:
        spec = WorkerPoolSpec.model_validate(_minimal())
        assert spec.deletion_policy is DeletionPolicy.RETAIN
        assert spec.scaling.enabled
        assert spec.scaling.min_replicas == 1
        assert spec.circuit_breaker.enabled
        assert spec.retry.backoff.jitter is Jitter.FULL
        assert spec.template.resources.limits == {"memory": "512Mi"}
        assert spec.dead_letter.max_age_seconds == 14 * 24 * 3600
        assert spec.nats.consumer == "workers"
        assert spec.paused is False

    def test_defaults_agree_with_the_worker_contract_defaults(self) -> None:
        spec = WorkerPoolSpec.model_validate(_minimal())
        worker = WorkerSettings.model_fields
        assert spec.concurrency == worker["concurrency"].default
        assert spec.task.timeout_seconds == worker["task_timeout_seconds"].default
        assert spec.task.max_payload_bytes == worker["max_payload_bytes"].default
        assert spec.retry.max_attempts == worker["retry_max_attempts"].default
        assert spec.retry.backoff.initial_seconds == worker["retry_initial_seconds"].default
        assert spec.retry.backoff.max_seconds == worker["retry_max_seconds"].default
        assert spec.retry.backoff.multiplier == worker["retry_multiplier"].default
        assert spec.shutdown_grace_seconds == worker["shutdown_grace_seconds"].default


class TestFieldValidation:
    @pytest.mark.parametrize(
        "spec",
        [
            pytest.param(_minimal(handler="not a handler"), id="handler-with-spaces"),
            pytest.param(_minimal(concurrency=0), id="zero-concurrency"),
            pytest.param(_minimal(nats={"url": "nats://n", "stream": "a.b"}), id="dot-in-stream"),
            pytest.param(_minimal(nats={"url": "nats://n", "consumer": "w*"}), id="star-consumer"),
            pytest.param(_minimal(nats={"url": ""}), id="empty-url"),
            pytest.param(_minimal(scaling={"maxReplicas": 0}), id="zero-max-replicas"),
            pytest.param(_minimal(circuitBreaker={"errorRateThreshold": 0}), id="zero-threshold"),
            pytest.param(_minimal(circuitBreaker={"errorRateThreshold": 1.5}), id="threshold>1"),
            pytest.param(_minimal(retry={"backoff": {"jitter": "some"}}), id="bad-jitter"),
            pytest.param(_minimal(deletionPolicy="Orphan"), id="bad-deletion-policy"),
            pytest.param(
                _minimal(template={"resources": {"limits": {"memory": "lots"}}}),
                id="bad-quantity",
            ),
            pytest.param(
                _minimal(nats={"url": "nats://n", "credentialsSecret": {"name": "Bad_Name"}}),
                id="bad-secret-name",
            ),
        ],
    )
    def test_invalid_values_are_rejected(self, spec: dict[str, Any]) -> None:
        with pytest.raises(ValidationError):
            WorkerPoolSpec.model_validate(spec)

    def test_scale_to_zero_and_fixed_size_are_allowed(self) -> None:
        zero = WorkerPoolSpec.model_validate(_minimal(scaling={"minReplicas": 0}))
        fixed = WorkerPoolSpec.model_validate(
            _minimal(scaling={"enabled": False, "minReplicas": 3, "maxReplicas": 3})
        )
        assert zero.scaling.min_replicas == 0
        assert (fixed.scaling.enabled, fixed.scaling.min_replicas) == (False, 3)

    def test_quantities_accept_kubernetes_notation_and_integers(self) -> None:
        spec = WorkerPoolSpec.model_validate(
            _minimal(template={"resources": {"limits": {"memory": "1.5Gi", "cpu": 2}}})
        )
        assert spec.template.resources.limits == {"memory": "1.5Gi", "cpu": 2}

    def test_secret_refs_default_their_key_per_purpose(self) -> None:
        spec = WorkerPoolSpec.model_validate(
            _minimal(
                nats={"url": "nats://n", "credentialsSecret": {"name": "c"}},
                security={"signingKeySecret": {"name": "k"}, "encryptionKeySecret": {"name": "k"}},
            )
        )
        assert spec.nats.credentials_secret is not None
        assert spec.nats.credentials_secret.key == "nats.creds"
        assert spec.security.signing_key_secret is not None
        assert spec.security.signing_key_secret.key == "signing.key"
        assert spec.security.encryption_key_secret is not None
        assert spec.security.encryption_key_secret.key == "encryption.key"


class TestStatus:
    def test_an_empty_status_is_valid(self) -> None:
        assert WorkerPoolStatus.model_validate({}).conditions == []

    def test_a_written_status_round_trips_in_camel_case(self) -> None:
        status = WorkerPoolStatus.model_validate(
            {
                "observedGeneration": 3,
                "desiredReplicas": 4,
                "errorRate": 0.25,
                "circuitBreaker": {"state": "HalfOpen", "trips": 2},
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "Available",
                        "message": "",
                        "lastTransitionTime": "2026-01-01T00:00:00Z",
                    }
                ],
                "health": {"healthy": False, "issues": [{"type": "X", "severity": "Warning"}]},
            }
        )
        dumped = status.model_dump(by_alias=True, mode="json", exclude_none=True)
        assert dumped["circuitBreaker"]["state"] == "HalfOpen"
        assert dumped["conditions"][0]["lastTransitionTime"] == "2026-01-01T00:00:00Z"
        assert WorkerPoolStatus.model_validate(dumped) == status

    def test_error_rate_outside_zero_to_one_is_rejected(self) -> None:
        with pytest.raises(ValidationError):
            WorkerPoolStatus.model_validate({"errorRate": 1.2})


class TestExamples:
    def test_there_are_examples(self) -> None:
        assert len(EXAMPLES) >= 2

    @pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
    def test_example_validates_against_the_models(self, path: Path) -> None:
        pool = WorkerPool.model_validate(yaml.safe_load(path.read_text()))
        assert pool.metadata["name"]

    @pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
    def test_example_has_no_field_the_apiserver_would_prune(self, path: Path) -> None:
        assert unknown_fields(yaml.safe_load(path.read_text()), root_schema()) == []


class TestLanes:
    LEVELS = ({"name": "high", "weight": 100}, {"name": "normal", "weight": 10}, {"name": "low"})

    def test_a_plain_pool_is_not_laned(self) -> None:
        assert not WorkerPoolSpec.model_validate(_minimal()).laned

    def test_priorities_keep_their_order_and_default_weights(self) -> None:
        spec = WorkerPoolSpec.model_validate(
            _minimal(priorities={"levels": list(self.LEVELS), "default": "normal"})
        )
        assert spec.laned
        assert spec.priorities is not None
        assert [(lv.name, lv.weight) for lv in spec.priorities.levels] == [
            ("high", 100),
            ("normal", 10),
            ("low", 1),
        ]

    def test_ordered_defaults_to_eight_partitions_watched_by_a_quarter_of_each_worker(
        self,
    ) -> None:
        spec = WorkerPoolSpec.model_validate(_minimal(ordered={}, concurrency=12))
        assert spec.laned
        assert spec.ordered is not None
        assert spec.ordered.partitions == 8
        assert spec.ordered.effective_pulls_per_worker(12) == 3
        assert spec.ordered.effective_pulls_per_worker(2) == 1  # at least one
        assert spec.ordered.effective_pulls_per_worker(64) == 8  # at most the partitions

    def test_pulls_per_worker_is_bounded_by_the_partitions_and_the_concurrency(self) -> None:
        spec = WorkerPoolSpec.model_validate(
            _minimal(ordered={"partitions": 4, "pullsPerWorker": 6}, concurrency=5)
        )
        assert spec.ordered is not None
        assert spec.ordered.effective_pulls_per_worker(5) == 4

    @pytest.mark.parametrize(
        "priorities",
        [
            {"levels": [{"name": "high"}], "default": "high"},
            {"levels": [{"name": f"l{i}"} for i in range(6)], "default": "l0"},
            {"levels": [{"name": "High"}, {"name": "low"}], "default": "low"},
            {"levels": [{"name": "a.b"}, {"name": "low"}], "default": "low"},
            {"levels": [{"name": "-a"}, {"name": "low"}], "default": "low"},
            {"levels": [{"name": "x" * 33}, {"name": "low"}], "default": "low"},
            {"levels": [{"name": "high", "weight": 0}, {"name": "low"}], "default": "low"},
            {"levels": [{"name": "high", "weight": 1001}, {"name": "low"}], "default": "low"},
        ],
    )
    def test_bad_levels_are_refused(self, priorities: dict[str, Any]) -> None:
        with pytest.raises(ValidationError):
            WorkerPoolSpec.model_validate(_minimal(priorities=priorities))

    @pytest.mark.parametrize(
        "ordered",
        [{"partitions": 0}, {"partitions": 65}, {"pullsPerWorker": 0}, {"weight": 1}],
    )
    def test_bad_ordered_settings_are_refused(self, ordered: dict[str, Any]) -> None:
        with pytest.raises(ValidationError):
            WorkerPoolSpec.model_validate(_minimal(ordered=ordered))

    def test_status_reads_backlog_by_level(self) -> None:
        status = WorkerPoolStatus.model_validate({"backlogByLevel": {"high": 3, "ordered": 0}})
        assert status.backlog_by_level == {"high": 3, "ordered": 0}
