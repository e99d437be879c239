"""The local Kubernetes test bed, as seen by the tests.

Reuses a running cluster when ``JETPOOL_KUBECONFIG`` names its kubeconfig; otherwise starts
its own with ``e2e/cluster.sh`` (real kube-apiserver, etcd, controller-manager, scheduler and
kwok nodes from pinned Go modules) and stops it afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
CLUSTER_SCRIPT = REPO / "e2e" / "cluster.sh"


def kubectl_binary() -> str:
    beside_python = Path(sys.executable).parent / "kubectl"
    return str(beside_python) if beside_python.exists() else "kubectl"


class KubectlError(RuntimeError):
    def __init__(self, args: list[str], returncode: int, stderr: str) -> None:
        super().__init__(f"kubectl {' '.join(args)} failed ({returncode}): {stderr.strip()}")
        self.stderr = stderr


@dataclass
class Cluster:
    kubeconfig: Path
    name: str
    owned: bool

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        cmd = [kubectl_binary(), "--kubeconfig", str(self.kubeconfig), *args]
        proc = subprocess.run(
            cmd, input=input, capture_output=True, text=True, timeout=120, check=False
        )
        if check and proc.returncode != 0:
            raise KubectlError(list(args), proc.returncode, proc.stderr)
        return proc.stdout

    def apply(self, manifest: str | dict[str, Any], *extra: str) -> str:
        text = manifest if isinstance(manifest, str) else json.dumps(manifest)
        return self.kubectl("apply", "-f", "-", *extra, input=text)

    def get_json(self, *args: str) -> dict[str, Any]:
        return json.loads(self.kubectl("get", *args, "-o", "json"))  # type: ignore[no-any-return]

    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    @classmethod
    def start(cls, name: str = "jetpool-test") -> Cluster:
        given = os.environ.get("JETPOOL_KUBECONFIG")
        if given:
            return cls(Path(given), name="external", owned=False)
        subprocess.run(["bash", str(CLUSTER_SCRIPT), "up", name], check=True, timeout=1800)
        return cls(REPO / ".jetpool" / name / "kubeconfig", name=name, owned=True)

    def stop(self) -> None:
        if self.owned:
            subprocess.run(
                ["bash", str(CLUSTER_SCRIPT), "down", self.name], check=False, timeout=300
            )


def eventually(
    condition: Callable[[], Any], *, timeout: float = 60.0, interval: float = 0.5, what: str = ""
) -> Any:
    """Poll ``condition`` until it returns a truthy value; fail with the last error or value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = condition()
            if last:
                return last
        except (KubectlError, AssertionError, KeyError, IndexError, OSError) as exc:
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout}s waiting for {what or condition}: {last!r}"
            )
        time.sleep(interval)
