"""Handlers the e2e suite's worker processes run (imported via PYTHONPATH=<repo>).

They record each finished task as a file named after its id in ``JETPOOL_E2E_RECORD_DIR``, and
fail on purpose while a file named ``FAIL`` exists there, so a test can switch failures on
and off for every worker at once.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from jetpool_protocol.envelope import Task


def _record_dir() -> Path:
    return Path(os.environ["JETPOOL_E2E_RECORD_DIR"])


class InjectedFailure(RuntimeError):
    """Raised while the FAIL switch is on."""


async def record(task: Task) -> None:
    directory = _record_dir()
    if (directory / "FAIL").exists():
        raise InjectedFailure(f"failure injected for {task.id}")
    work = task.json() if task.payload else {}
    await asyncio.sleep(float(work.get("sleep", 0)) if isinstance(work, dict) else 0)
    (directory / "done" / task.id).touch()
