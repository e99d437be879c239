"""Small process and port helpers shared by every launcher of the test bed."""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def stop_process(
    process: subprocess.Popen[bytes], sig: int = signal.SIGTERM, grace: float = 20.0
) -> int:
    """Signal a process, give it ``grace`` seconds, then kill it; returns its exit code."""
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(sig)
    try:
        return process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait(5)


def observability_binary(tool: Literal["promtool", "prometheus", "jaeger"]) -> Path:
    """The tool, built from its pinned Go module on first use (e2e/build-observability.sh)."""
    out = subprocess.run(
        ["bash", str(REPO / "e2e" / "build-observability.sh"), tool],
        capture_output=True,
        text=True,
        check=True,
        timeout=1800,
    )
    return Path(out.stdout.strip().splitlines()[-1]) / tool


def spawn_logged(command: list[str], log_file: Path) -> subprocess.Popen[bytes]:
    """A service process in its own session, stdout and stderr appended to ``log_file``."""
    with log_file.open("ab") as log:
        return subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )


def stop_service(process: subprocess.Popen[bytes] | None, workdir: Path) -> None:
    """Stop a service started by :func:`spawn_logged` and remove its scratch directory."""
    if process is not None:
        stop_process(process)
    shutil.rmtree(workdir, ignore_errors=True)


def http_json(url: str, query: Mapping[str, str] | None = None, timeout: float = 30) -> Any:
    """GET a JSON document (HTTP errors raise ``urllib.error.HTTPError``)."""
    if query:
        url += "?" + urllib.parse.urlencode(query)
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.load(response)
