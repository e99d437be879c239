"""Every shell script under e2e/ and scripts/ is shellcheck-clean (sources followed)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.packaging.conftest import REPO

SHELLCHECK = Path(sys.executable).parent / "shellcheck"
SCRIPTS = sorted([*(REPO / "e2e").rglob("*.sh"), *(REPO / "scripts").rglob("*.sh")])


def shellcheck(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SHELLCHECK), "--external-sources", *map(str, paths)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_kind_script_is_among_the_checked_scripts() -> None:
    assert REPO / "e2e" / "kind" / "run.sh" in SCRIPTS


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(REPO)))
def test_script_is_shellcheck_clean(script: Path) -> None:
    proc = shellcheck(script)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(REPO)))
def test_script_is_executable_with_strict_mode(script: Path) -> None:
    assert os.access(script, os.X_OK)
    assert "set -euo pipefail" in script.read_text()


def test_shellcheck_actually_flags_an_unquoted_variable(tmp_path: Path) -> None:
    bad = tmp_path / "bad.sh"
    bad.write_text("#!/usr/bin/env bash\nrm -rf $1/tmp\n")
    proc = shellcheck(bad)
    assert proc.returncode != 0
    assert "SC2086" in proc.stdout
