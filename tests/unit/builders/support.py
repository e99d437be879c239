"""Specs and pool identities shared by the builder tests."""

from __future__ import annotations

from typing import Any

from jetpool_operator.api.v1alpha1 import WorkerPoolSpec
from jetpool_operator.core.children import PoolRef

POOL = PoolRef(name="resize-images", namespace="media", uid="7c1e-uid")


def spec(**overrides: Any) -> WorkerPoolSpec:
    """A minimal valid spec (wire format, camelCase) with the given top-level overrides."""
    body: dict[str, Any] = {
        "image": "registry.example.com/resize:1",
        "handler": "resize.tasks:run",
        "nats": {"url": "nats://nats:4222"},
    }
    body.update(overrides)
    return WorkerPoolSpec.model_validate(body)


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    [only] = deployment["spec"]["template"]["spec"]["containers"]
    return only  # type: ignore[no-any-return]


def env_map(deployment: dict[str, Any]) -> dict[str, Any]:
    """name -> value (or the valueFrom dict) of the worker container's environment."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(deployment)["env"]}
