"""Fixtures for the packaging tests: the pinned helm, chart rendering, kustomize builds."""

from __future__ import annotations

import importlib.util
import subprocess
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from e2e.testbed.cluster import kubectl_binary

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "jetpool"
CRDS = REPO / "crds"
OVERLAYS = sorted(p.parent for p in (REPO / "manifests" / "overlays").glob("*/kustomization.yaml"))


def load_generator() -> ModuleType:
    """manifests/generate.py is a script, not a package: load it by path."""
    spec = importlib.util.spec_from_file_location(
        "jetpool_manifests_generate", REPO / "manifests" / "generate.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GENERATOR = load_generator()


@pytest.fixture(scope="session")
def helm() -> str:
    """The pinned helm built from the Go module proxy (built on first use, then cached)."""
    return str(GENERATOR.helm_binary())


Render = Callable[..., list[dict[str, Any]]]


@pytest.fixture(scope="session")
def render(helm: str) -> Render:
    """``render("--set", "a=b", ...)`` -> the chart's objects for release jetpool."""

    def _render(*args: str) -> list[dict[str, Any]]:
        return parse(GENERATOR.helm_template(*args, helm=helm))

    return _render


def parse(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def kustomize(overlay: Path) -> str:
    proc = subprocess.run(
        [kubectl_binary(), "kustomize", str(overlay)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def only(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def kinds(objects: list[dict[str, Any]]) -> set[str]:
    return {o["kind"] for o in objects}


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]  # type: ignore[no-any-return]


def env_of(deployment: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container(deployment).get("env", [])}
