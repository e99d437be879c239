"""The operator as a real process (``jetpool-operator``) against the test bed."""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from e2e.testbed.cluster import Cluster, eventually
from e2e.testbed.processes import free_port, stop_process


@dataclass
class OperatorProcess:
    cluster: Cluster
    args: tuple[str, ...] = ("--standalone",)
    metrics_port: int = field(default_factory=free_port)
    liveness_port: int = field(default_factory=free_port)
    log_path: Path = field(
        default_factory=lambda: Path(tempfile.mkstemp(prefix="jetpool-operator-", suffix=".log")[1])
    )
    env: dict[str, str] = field(default_factory=dict)
    """Extra environment of the operator, over the cluster's (e.g. ``JETPOOL_OBSERVATION``)."""
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> OperatorProcess:
        binary = Path(sys.executable).parent / "jetpool-operator"
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child process
        self.process = subprocess.Popen(
            [
                str(binary),
                "--metrics-port",
                str(self.metrics_port),
                "--liveness",
                f"http://127.0.0.1:{self.liveness_port}/healthz",
                "--log-format",
                "text",
                *self.args,
            ],
            env={**self.cluster.env(), **self.env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        eventually(self.alive, timeout=60, what="operator liveness endpoint")
        return self

    def alive(self) -> bool:
        assert self.process is not None
        assert self.process.poll() is None, self.logs()[-3000:]
        with urllib.request.urlopen(f"http://127.0.0.1:{self.liveness_port}/healthz", timeout=2):
            return True

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.read().decode()  # type: ignore[no-any-return]

    def reconciles(self) -> float:
        """Sum of jetpool_operator_reconciles_total over every pool and result."""
        total = 0.0
        for line in self.metrics().splitlines():
            if line.startswith("jetpool_operator_reconciles_total{"):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None:
            stop_process(self.process, sig)
            self.process = None
