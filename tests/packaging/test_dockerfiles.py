"""The operator and worker images: hadolint-clean, slim, non-root, pinned, no build tools."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.packaging.conftest import REPO

DOCKERFILES = {
    "operator": REPO / "operator" / "Dockerfile",
    "worker": REPO / "worker" / "Dockerfile",
}
ALL_DOCKERFILES = [
    *DOCKERFILES.values(),
    REPO / "e2e" / "kind" / "handlers.Dockerfile",
    REPO / "e2e" / "kind" / "nats.Dockerfile",
]
HADOLINT = Path(sys.executable).parent / "hadolint"
SCRIPTS = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]


def stages(path: Path) -> list[list[str]]:
    """Instructions (continuation lines joined) grouped by build stage."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out: list[list[str]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            out.append([])
        if out:
            out[-1].append(line)
    return out


def final_stage(path: Path) -> list[str]:
    return stages(path)[-1]


def args(path: Path) -> dict[str, str]:
    found = re.findall(r"^ARG (\w+)=(\S+)$", path.read_text(), flags=re.M)
    return dict(found)


@pytest.mark.parametrize("path", ALL_DOCKERFILES, ids=lambda p: str(p.relative_to(REPO)))
def test_dockerfile_is_hadolint_clean(path: Path) -> None:
    proc = subprocess.run([str(HADOLINT), str(path)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_actually_flags_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\n")
    proc = subprocess.run([str(HADOLINT), str(bad)], capture_output=True, text=True, check=False)
    assert proc.returncode != 0
    assert "DL3007" in proc.stdout  # "latest" tag


@pytest.mark.parametrize("image", DOCKERFILES)
def test_base_image_is_pinned_to_a_patch_version_of_slim_python(image: str) -> None:
    base = args(DOCKERFILES[image])["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.\d+\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", base), base


@pytest.mark.parametrize("image", DOCKERFILES)
def test_build_and_final_stages_share_the_base_so_the_venv_runs_unchanged(image: str) -> None:
    froms = [stage[0].split()[1] for stage in stages(DOCKERFILES[image])]
    assert froms == ["${PYTHON_IMAGE}", "${PYTHON_IMAGE}"]


@pytest.mark.parametrize("image", DOCKERFILES)
def test_final_stage_runs_as_a_numeric_non_root_user(image: str) -> None:
    users = [
        line.split()[1] for line in final_stage(DOCKERFILES[image]) if line.startswith("USER ")
    ]
    assert users, "no USER in the final stage"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit()
    assert int(uid) != 0
    assert gid.isdigit()
    assert int(gid) != 0


@pytest.mark.parametrize("image", DOCKERFILES)
def test_final_stage_only_copies_the_venv_and_runs_nothing(image: str) -> None:
    """No RUN in the final stage: no package manager, no compiler, no pip install there."""
    final = final_stage(DOCKERFILES[image])
    assert not [line for line in final if line.startswith("RUN ")]
    copies = [line for line in final if line.startswith("COPY ")]
    assert copies == ["COPY --from=build /opt/venv /opt/venv"]


@pytest.mark.parametrize("image", DOCKERFILES)
def test_final_stage_sets_python_runtime_env(image: str) -> None:
    env = " ".join(line for line in final_stage(DOCKERFILES[image]) if line.startswith("ENV "))
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert "PYTHONUNBUFFERED=1" in env
    assert "PATH=/opt/venv/bin:$PATH" in env


@pytest.mark.parametrize(
    ("image", "script"), [("operator", "jetpool-operator"), ("worker", "jetpool-worker")]
)
def test_entrypoint_is_the_console_script(image: str, script: str) -> None:
    assert script in SCRIPTS
    entrypoints = [
        line for line in final_stage(DOCKERFILES[image]) if line.startswith("ENTRYPOINT")
    ]
    assert entrypoints == [f'ENTRYPOINT ["{script}"]']


def installed_extras(image: str) -> set[str]:
    build = " ".join(stages(DOCKERFILES[image])[0])
    found = re.search(r"jetpool-\*\.whl\)\[([a-z,]+)\]", build)
    return set(found.group(1).split(",")) if found else set()


def test_only_the_operator_image_installs_the_operator_extra() -> None:
    assert "operator" in installed_extras("operator")
    assert "operator" not in installed_extras("worker")


def test_both_images_carry_the_opentelemetry_sdk_and_exporter() -> None:
    assert "tracing" in installed_extras("operator")
    assert "tracing" in installed_extras("worker")


def test_worker_image_puts_app_on_the_import_path_for_handler_images() -> None:
    env = " ".join(line for line in final_stage(DOCKERFILES["worker"]) if line.startswith("ENV "))
    assert "PYTHONPATH=/app" in env
    assert "WORKDIR /app" in final_stage(DOCKERFILES["worker"])


def test_handler_image_example_builds_from_the_worker_image() -> None:
    handler = stages(REPO / "e2e" / "kind" / "handlers.Dockerfile")
    assert len(handler) == 1
    assert handler[0][0] == "FROM ${WORKER_IMAGE}"


def test_docker_context_excludes_everything_but_the_sources() -> None:
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    patterns = [line for line in ignore if line and not line.startswith("#")]
    assert patterns[0] == "*"
    reincluded = {line[1:] for line in ignore if line.startswith("!")}
    assert {"pyproject.toml", "README.md", "operator", "worker"} <= reincluded
    assert not reincluded & {".venv", ".git", ".jetpool", "tests"}
