"""Process-backed pods: a tiny stand-in for the kubelet on kwok nodes.

kwok marks pods Running without running anything. For end-to-end tests and the demo, each
Running worker pod is backed by a real process started from the pod's own spec (command, args,
env, secret volumes), and stopped with SIGTERM (then SIGKILL after the pod's grace period) when
the pod goes away — so scaling the Deployment really adds and removes consumers.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes

log = logging.getLogger("jetpool.pod_runner")

DEFAULT_SELECTOR = "app.kubernetes.io/name=jetpool-worker,jetpool.dev/process-backed=true"
"""Only pods that opt in (a label set through the pool's template.labels) get a process."""


@dataclass
class PodProcess:
    uid: str
    namespace: str
    name: str
    process: subprocess.Popen[bytes]
    grace_seconds: float
    workdir: Path
    stop_requested_at: float | None = None


@dataclass
class PodRunner:
    kubeconfig: str
    label_selector: str = DEFAULT_SELECTOR
    extra_env: dict[str, str] = field(default_factory=dict)
    poll_seconds: float = 0.25
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="jetpool-pods-")))
    processes: dict[str, PodProcess] = field(default_factory=dict)
    exited: list[tuple[str, int]] = field(default_factory=list)
    """(pod name, exit code) of every process that ended, for assertions (not those a test
    killed on purpose with :meth:`kill`)."""
    killed: set[str] = field(default_factory=set)
    """Pods whose process a test killed."""

    def __post_init__(self) -> None:
        api_client = kubernetes.config.new_client_from_config(config_file=self.kubeconfig)
        self._core = kubernetes.client.CoreV1Api(api_client)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pod-runner", daemon=True)
        self._lock = threading.Lock()
        self._crashes: dict[str, tuple[int, float]] = {}
        """pod uid -> (restarts so far, monotonic time before which it is not restarted)"""

    def start(self) -> PodRunner:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        with self._lock:
            for proc in self.processes.values():
                self._terminate(proc)
            deadline = time.monotonic() + 30
            for proc in self.processes.values():
                try:
                    proc.process.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    proc.process.kill()
                    proc.process.wait()
            self.processes.clear()

    def running_pods(self, namespace: str | None = None) -> list[str]:
        """Names of pods whose process is alive (optionally in one namespace)."""
        with self._lock:
            return sorted(
                p.name
                for p in self.processes.values()
                if p.process.poll() is None and namespace in (None, p.namespace)
            )

    def kill(self, name: str) -> None:
        """SIGKILL a pod's process (a crash: no graceful stop); it is restarted like a
        kubelet would, after the crash-loop delay."""
        with self._lock:
            for proc in self.processes.values():
                if proc.name == name and proc.process.poll() is None:
                    log.info("killing pod %s/%s (SIGKILL)", proc.namespace, proc.name)
                    self.killed.add(proc.name)
                    proc.process.kill()
                    return
        raise LookupError(f"no running process for pod {name}")

    # -- loop ---------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._sync()
            except Exception:  # the test bed must survive API hiccups
                log.exception("pod runner sync failed")
            self._stop.wait(self.poll_seconds)

    def _sync(self) -> None:
        pods: list[Any] = self._core.list_pod_for_all_namespaces(
            label_selector=self.label_selector
        ).items
        live: dict[str, Any] = {
            pod.metadata.uid: pod
            for pod in pods
            if pod.status.phase == "Running" and pod.metadata.deletion_timestamp is None
        }
        with self._lock:
            now = time.monotonic()
            for uid, pod in live.items():
                _, not_before = self._crashes.get(uid, (0, 0.0))
                if uid not in self.processes and now >= not_before:
                    self.processes[uid] = self._launch(pod)
            for uid, proc in list(self.processes.items()):
                if uid not in live:
                    self._terminate(proc)
                code = proc.process.poll()
                if code is not None:
                    if proc.name not in self.killed:
                        self.exited.append((proc.name, code))
                    log.info("pod %s/%s process exited with %s", proc.namespace, proc.name, code)
                    del self.processes[uid]
                    if uid in live:
                        # Like a kubelet with restartPolicy Always: start it again, with
                        # CrashLoopBackOff-style delays (1 s, 2 s, 4 s ... 30 s).
                        restarts = self._crashes.get(uid, (0, 0.0))[0]
                        self._crashes[uid] = (restarts + 1, now + min(30.0, 2.0**restarts))
                elif proc.stop_requested_at is not None and (
                    time.monotonic() - proc.stop_requested_at > proc.grace_seconds
                ):
                    proc.process.kill()

    # -- one pod ------------------------------------------------------------------------------

    def _terminate(self, proc: PodProcess) -> None:
        if proc.stop_requested_at is None and proc.process.poll() is None:
            log.info("stopping pod %s/%s (SIGTERM)", proc.namespace, proc.name)
            proc.stop_requested_at = time.monotonic()
            with contextlib.suppress(ProcessLookupError):
                proc.process.send_signal(signal.SIGTERM)

    def _launch(self, pod: Any) -> PodProcess:
        container = pod.spec.containers[0]
        poddir = self.workdir / f"{pod.metadata.namespace}-{pod.metadata.name}"
        poddir.mkdir(parents=True, exist_ok=True)
        mounts = self._materialize_volumes(pod, container, poddir)
        env = {**os.environ, **self.extra_env}
        env.update(self._container_env(pod, container, mounts))
        env["JETPOOL_METRICS_PORT"] = "0"  # many pods share one host: no fixed ports
        argv = [*(container.command or ["jetpool-worker"]), *(container.args or [])]
        argv[0] = self._resolve(argv[0])
        log.info("starting pod %s/%s: %s", pod.metadata.namespace, pod.metadata.name, argv)
        with open(poddir / "output.log", "ab") as out:  # the child keeps its own copy
            process = subprocess.Popen(
                argv,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=poddir,
                start_new_session=True,
            )
        grace = pod.spec.termination_grace_period_seconds
        return PodProcess(
            uid=pod.metadata.uid,
            namespace=pod.metadata.namespace,
            name=pod.metadata.name,
            process=process,
            grace_seconds=float(30 if grace is None else grace),
            workdir=poddir,
        )

    @staticmethod
    def _resolve(program: str) -> str:
        beside_python = Path(sys.executable).parent / program
        if beside_python.exists():
            return str(beside_python)
        return shutil.which(program) or program

    def _materialize_volumes(self, pod: Any, container: Any, poddir: Path) -> dict[str, Path]:
        """Write secret, configMap and projected volumes to files (``items`` honoured, as the
        kubelet does); returns mountPath -> local directory."""
        volumes = {v.name: v for v in pod.spec.volumes or []}
        mounts: dict[str, Path] = {}
        for mount in container.volume_mounts or []:
            volume = volumes.get(mount.name)
            if volume is None:
                continue
            sources: list[tuple[str, str, Any]] = []
            if volume.secret is not None:
                sources.append(("secret", volume.secret.secret_name, volume.secret.items))
            elif volume.config_map is not None:
                sources.append(("configMap", volume.config_map.name, volume.config_map.items))
            elif volume.projected is not None:
                for source in volume.projected.sources or []:
                    if source.secret is not None:
                        sources.append(("secret", source.secret.name, source.secret.items))
                    elif source.config_map is not None:
                        cm = source.config_map
                        sources.append(("configMap", cm.name, cm.items))
            if not sources:
                continue  # emptyDir and friends: the process simply uses the host path
            local = poddir / "volumes" / mount.name
            local.mkdir(parents=True, exist_ok=True)
            for kind, name, items in sources:
                data = self._volume_data(kind, name, pod.metadata.namespace)
                wanted = [(i.key, i.path) for i in items] if items else [(k, k) for k in data]
                for key, path in wanted:
                    target = local / path
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.touch(mode=0o600)
                    target.write_bytes(data[key])
            mounts[mount.mount_path.rstrip("/")] = local
        return mounts

    def _volume_data(self, kind: str, name: str, namespace: str) -> dict[str, bytes]:
        if kind == "secret":
            secret = self._core.read_namespaced_secret(name, namespace)
            return {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}
        cm = self._core.read_namespaced_config_map(name, namespace)
        return {k: str(v).encode() for k, v in (cm.data or {}).items()}

    def _container_env(self, pod: Any, container: Any, mounts: dict[str, Path]) -> dict[str, str]:
        env: dict[str, str] = {}
        for var in container.env or []:
            if var.value is not None:
                env[var.name] = var.value
            elif var.value_from is not None:
                env[var.name] = self._env_value_from(pod, var.value_from)
        for name, value in env.items():
            for mount_path, local in mounts.items():
                if value == mount_path or value.startswith(mount_path + "/"):
                    env[name] = str(local) + value[len(mount_path) :]
        return env

    def _env_value_from(self, pod: Any, source: Any) -> str:
        if source.field_ref is not None:
            path = source.field_ref.field_path
            fields: dict[str, str] = {
                "metadata.name": pod.metadata.name,
                "metadata.namespace": pod.metadata.namespace,
                "metadata.uid": pod.metadata.uid,
                "status.podIP": pod.status.pod_ip or "127.0.0.1",
                "spec.nodeName": pod.spec.node_name or "",
            }
            return fields.get(path, "")
        if source.secret_key_ref is not None:
            ref = source.secret_key_ref
            secret = self._core.read_namespaced_secret(ref.name, pod.metadata.namespace)
            return base64.b64decode((secret.data or {})[ref.key]).decode()
        if source.config_map_key_ref is not None:
            ref = source.config_map_key_ref
            cm = self._core.read_namespaced_config_map(ref.name, pod.metadata.namespace)
            return str((cm.data or {})[ref.key])
        return ""


def main() -> None:
    """Run the pod runner in the foreground until SIGTERM/SIGINT (used by ``make demo``)."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--selector", default=DEFAULT_SELECTOR)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s pod-runner %(message)s")
    runner = PodRunner(kubeconfig=args.kubeconfig, label_selector=args.selector)
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        runner.workdir = args.workdir
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    runner.start()
    stop.wait()
    runner.stop()


if __name__ == "__main__":
    main()
