"""Render the kustomize base's operator manifests from the Helm chart (one source of truth).

The chart owns the operator's Deployment, RBAC, ServiceAccount, metrics Service, PDB and
peering object; ``manifests/base/operator.yaml`` is the chart rendered with
``manifests/base-values.yaml``, minus Helm's bookkeeping labels. A test
(tests/packaging/test_kustomize.py) fails when the committed file differs from a fresh render.

    .venv/bin/python manifests/generate.py            # rewrite manifests/base/operator.yaml
    .venv/bin/python manifests/generate.py --check    # exit 1 when it is stale
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "charts" / "jetpool"
VALUES = REPO / "manifests" / "base-values.yaml"
OUTPUT = REPO / "manifests" / "base" / "operator.yaml"
RELEASE = "jetpool"
NAMESPACE = "jetpool-system"
HELM_ONLY_LINES = ("helm.sh/chart: ", "app.kubernetes.io/managed-by: Helm")
HEADER = (
    "# GENERATED from charts/jetpool (values: manifests/base-values.yaml) by\n"
    "# `.venv/bin/python manifests/generate.py`. DO NOT EDIT: change the chart and regenerate;\n"
    "# patch anything environment-specific in an overlay.\n"
)


def versions() -> dict[str, str]:
    """The pinned test-bed versions (e2e/versions.env): the Kubernetes version to render for."""
    pairs = (
        line.split("=", 1)
        for line in (REPO / "e2e" / "versions.env").read_text().splitlines()
        if "=" in line and not line.lstrip().startswith("#")
    )
    return {key.strip(): value.strip() for key, value in pairs}


def helm_binary() -> str:
    """``$HELM``, else the pinned helm that e2e/build-testbed.sh builds (or finds) in its cache."""
    given = os.environ.get("HELM")
    if given:
        return given
    out = subprocess.run(
        ["bash", str(REPO / "e2e" / "build-testbed.sh"), "helm"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return str(Path(out.strip().splitlines()[-1]) / "helm")


def helm_template(*args: str, helm: str | None = None, release: str = RELEASE) -> str:
    """``helm template`` of the chart for the pinned Kubernetes version; raises on failure."""
    cmd = [
        helm or helm_binary(),
        "template",
        release,
        str(CHART),
        "--namespace",
        NAMESPACE,
        "--kube-version",
        versions()["K8S_VERSION"],
        *args,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr.strip()}")
    return proc.stdout


def is_helm_bookkeeping(line: str) -> bool:
    """Helm's own labels and ``# Source:`` markers; the chart's comments (the why) stay."""
    text = line.strip()
    return text.startswith(HELM_ONLY_LINES) or text.startswith("# Source: ")


def render_base(helm: str | None = None) -> str:
    """The text of manifests/base/operator.yaml, as the chart renders it today."""
    rendered = helm_template("--values", str(VALUES), helm=helm)
    body = "\n".join(line for line in rendered.splitlines() if not is_helm_bookkeeping(line))
    # Fail here, not in kustomize, if filtering ever broke the YAML.
    if not all(isinstance(doc, dict) for doc in yaml.safe_load_all(body) if doc is not None):
        raise RuntimeError("filtered helm output is not a list of YAML objects")
    return HEADER + body.strip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail when the file is stale")
    args = parser.parse_args(argv)
    fresh = render_base()
    if args.check:
        current = OUTPUT.read_text() if OUTPUT.exists() else ""
        if current != fresh:
            sys.stderr.write(f"{OUTPUT.relative_to(REPO)} is stale: run manifests/generate.py\n")
            return 1
        return 0
    OUTPUT.write_text(fresh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
