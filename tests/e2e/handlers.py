"""Handlers the e2e suite's worker processes run (imported via PYTHONPATH=<repo>).

They record each finished task as a file named after its id in ``JETPOOL_E2E_RECORD_DIR``/done,
and fail on purpose while a file named ``FAIL`` exists there, so a test can switch failures on
and off for every worker at once. (Local provider only: the files live on this machine.)
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from jetpool_protocol.envelope import Task


class InjectedFailure(RuntimeError):
    """Raised while the FAIL switch is on."""


def record(task: Task) -> None:
    directory = Path(os.environ["JETPOOL_E2E_RECORD_DIR"])
    if (directory / "FAIL").exists():
        raise InjectedFailure(f"failure injected for {task.id}")
    work = task.json() if task.payload else {}
    time.sleep(float(work.get("sleep", 0)) if isinstance(work, dict) else 0)
    (directory / "done" / task.id).touch()
