"""Run ``python -m jetpool_worker`` as a real process, configured only through its env."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from jetpool_protocol.worker_settings import WorkerSettings

REPO_ROOT = Path(__file__).resolve().parents[2]


def spawn_worker(
    settings: WorkerSettings,
    done_file: Path,
    log_file: Path,
    extra_env: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JETPOOL_", "OTEL_"))}
    env.update(settings.to_env())
    env.update(extra_env or {})
    env["JETPOOL_TEST_DONE_FILE"] = str(done_file)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO_ROOT), str(REPO_ROOT / "worker"), env.get("PYTHONPATH", "")]
    )
    return subprocess.Popen(
        [sys.executable, "-m", "jetpool_worker"],
        env=env,
        stdout=log_file.open("ab"),
        stderr=subprocess.STDOUT,
        cwd=REPO_ROOT,
    )


def kill(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
    proc.wait(20)


def done_ids(done_file: Path) -> list[str]:
    return done_file.read_text().split() if done_file.exists() else []
