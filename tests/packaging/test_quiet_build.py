"""Building the package (what ``make venv`` and the image builds do) prints no packaging
deprecation warnings: a wall of them hides the messages that matter."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from zipfile import ZipFile

import pytest

from tests.packaging.conftest import REPO


@pytest.mark.timeout(300)
def test_the_wheel_builds_without_deprecation_warnings_and_declares_its_license(
    tmp_path: Path,
) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-v", "-w", str(tmp_path), str(REPO)],
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    output = proc.stdout + proc.stderr
    warnings = [line for line in output.splitlines() if "deprecat" in line.lower()]
    assert warnings == [], warnings[:5]
    [wheel] = tmp_path.glob("jetpool-*.whl")
    with ZipFile(wheel) as archive:
        [metadata] = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        assert "License-Expression: Apache-2.0" in archive.read(metadata).decode()
