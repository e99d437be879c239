"""``make demo``: jetpool end to end on this machine, no Docker needed.

Starts the local cluster (real kube-apiserver, etcd, controller-manager, scheduler, kwok), a
nats-server with JetStream, the operator, and the pod runner that backs every worker pod with
a real ``jetpool-worker`` process. Then it applies a WorkerPool, publishes a burst of tasks and
shows ``kubectl get wp`` live while the pool scales up, drains and scales back to zero; then
it switches failures on to trip the circuit breaker, and off again to watch it close.

Everything keeps running afterwards; ``make demo-down`` (``python -m e2e.demo --down``) stops it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
STATE = REPO / ".jetpool" / "demo"
KUBECONFIG = REPO / ".jetpool" / "kubeconfig"
BIN = Path(sys.executable).parent
NAMESPACE = "default"
POOL = "demo"
SUBJECT = f"tasks.{NAMESPACE}.{POOL}.work"


def say(message: str) -> None:
    print(f"\033[1m==> {message}\033[0m", flush=True)


def kubectl(*args: str, input: str | None = None, check: bool = True) -> str:
    proc = subprocess.run(
        [str(BIN / "kubectl"), "--kubeconfig", str(KUBECONFIG), *args],
        input=input,
        capture_output=True,
        text=True,
        check=False,
    )
    if check and proc.returncode != 0:
        raise SystemExit(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def spawn(name: str, argv: list[str], env: dict[str, str] | None = None) -> int:
    """Start a detached background process; its pid goes to .jetpool/demo/<name>.pid."""
    log = open(STATE / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
    proc = subprocess.Popen(
        argv,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, **(env or {})},
        cwd=REPO,
    )
    (STATE / f"{name}.pid").write_text(str(proc.pid))
    return proc.pid


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}; logs are in {STATE}")
        time.sleep(0.5)


def pool_status() -> dict[str, Any]:
    out = kubectl("get", "wp", POOL, "-n", NAMESPACE, "-o", "json", check=False)
    return json.loads(out).get("status", {}) if out else {}


def show(seconds: float, until: Callable[[dict[str, Any]], bool] | None = None) -> None:
    """Print the pool's `kubectl get wp -o wide` row every second."""
    header = kubectl("get", "wp", "-n", NAMESPACE, "-o", "wide").splitlines()[0]
    print("   TIME " + header, flush=True)
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        rows = kubectl("get", "wp", POOL, "-n", NAMESPACE, "-o", "wide", "--no-headers")
        print(f"  {time.monotonic() - started:5.0f}s {rows.rstrip()}", flush=True)
        if until is not None and until(pool_status()):
            return
        time.sleep(1)


def publish(nats_url: str, count: int, data: str, prefix: str) -> None:
    """Publish ``count`` tasks with the jetpool CLI (ids ``<prefix>-<time>-<n>``)."""
    subprocess.run(
        [
            str(BIN / "jetpool"),
            "publish",
            SUBJECT,
            "--nats-url",
            nats_url,
            "--data",
            data,
            "--count",
            str(count),
            "--id-prefix",
            f"{prefix}-{int(time.time())}",
        ],
        check=True,
    )


def up(burst: int) -> None:
    if any(STATE.glob("*.pid")):
        raise SystemExit("a demo is already running: `make demo-down` first")
    shutil.rmtree(STATE, ignore_errors=True)  # every demo starts from empty streams
    STATE.mkdir(parents=True)
    say("starting the local cluster (first run builds Kubernetes from Go modules: minutes)")
    subprocess.run(["bash", str(REPO / "e2e" / "cluster.sh"), "up"], check=True)

    say("starting nats-server with JetStream")
    sys.path.insert(0, str(REPO))
    from e2e.testbed.nats_server import nats_server_binary
    from e2e.testbed.processes import free_port, wait_for_port

    port = free_port()
    spawn(
        "nats",
        [
            nats_server_binary(),
            "--jetstream",
            "--store_dir",
            str(STATE / "js"),
            "--addr",
            "127.0.0.1",
            "--port",
            str(port),
        ],
    )
    wait_for_port(port)
    nats_url = f"nats://127.0.0.1:{port}"
    (STATE / "nats.url").write_text(nats_url)

    say("installing the CRDs and starting the operator")
    kubectl("apply", "--server-side", "-k", str(REPO / "crds"))
    kubectl("wait", "--for=condition=Established", "crd/workerpools.jetpool.dev")
    kube_env = {"KUBECONFIG": str(KUBECONFIG)}
    spawn(
        "operator",
        [
            str(BIN / "jetpool-operator"),
            "--standalone",
            "--log-format",
            "text",
            "--metrics-port",
            str(free_port()),
            "--liveness",
            f"http://127.0.0.1:{free_port()}/healthz",
        ],
        kube_env,
    )
    spawn(
        "pod-runner",
        [
            sys.executable,
            "-m",
            "e2e.testbed.pod_runner",
            "--kubeconfig",
            str(KUBECONFIG),
            "--workdir",
            str(STATE / "pods"),
        ],
        {"PYTHONPATH": str(REPO), "JETPOOL_LOG_FORMAT": "text"},
    )

    fail_switch = STATE / "FAIL"
    fail_switch.unlink(missing_ok=True)
    say(f"applying WorkerPool {POOL} (scale 0..8, 25 tasks per replica)")
    pool = {
        "apiVersion": "jetpool.dev/v1alpha1",
        "kind": "WorkerPool",
        "metadata": {"name": POOL, "namespace": NAMESPACE},
        "spec": {
            "image": "jetpool-worker:demo",
            "handler": "e2e.demo_handlers:work",
            "nats": {"url": nats_url},
            "concurrency": 4,
            "retry": {"maxAttempts": 3, "backoff": {"initialSeconds": 1, "maxSeconds": 5}},
            "scaling": {
                "minReplicas": 0,
                "maxReplicas": 8,
                "targetBacklogPerReplica": 25,
                "scaleDownDelaySeconds": 15,
                "scaleToZeroDelaySeconds": 10,
            },
            "circuitBreaker": {
                "errorRateThreshold": 0.5,
                "minTasks": 20,
                "windowSeconds": 10,
                "openSeconds": 10,
                "halfOpenTasks": 3,
            },
            "template": {
                "labels": {"jetpool.dev/process-backed": "true"},
                "env": [{"name": "JETPOOL_DEMO_FAIL_FILE", "value": str(fail_switch)}],
            },
        },
    }
    kubectl("apply", "-f", "-", input=json.dumps(pool))
    wait_until(lambda: bool(pool_status().get("nats")), 60, "the pool's streams")

    say(f"publishing a burst of {burst} tasks (50 ms each) with `jetpool publish`")
    publish(nats_url, burst, '{"ms": 50}', "burst")
    say("watching the pool scale up, drain the backlog and scale back to zero")
    seen_work = False

    def drained_back_to_zero(status: dict[str, Any]) -> bool:
        nonlocal seen_work
        seen_work = seen_work or bool(status.get("desiredReplicas"))
        return seen_work and status.get("desiredReplicas") == 0 and not status.get("backlog")

    show(240, until=drained_back_to_zero)

    say("switching failures on: the breaker opens and every worker stops fetching")
    fail_switch.touch()
    publish(nats_url, 300, '{"ms": 10}', "storm")
    show(90, until=lambda s: (s.get("circuitBreaker") or {}).get("state") == "Open")
    say("switching failures off: HalfOpen trial tasks succeed and the breaker closes")
    fail_switch.unlink()
    show(
        120,
        until=lambda s: (
            (s.get("circuitBreaker") or {}).get("state") == "Closed" and not s.get("backlog")
        ),
    )
    say("dead letters (tasks that failed every attempt while failures were on):")
    subprocess.run(
        [str(BIN / "jetpool"), "dlq", "stats", "--nats-url", nats_url, "-n", NAMESPACE, "-p", POOL],
        check=False,
    )
    say("the demo keeps running. Try:")
    print(f"    {BIN / 'kubectl'} --kubeconfig {KUBECONFIG} get wp -o wide -w")
    print(
        f"    {BIN / 'jetpool'} publish {SUBJECT} --nats-url {nats_url} --data '{{}}' --count 500"
    )
    print("    make demo-down        # stops everything the demo started")


def down() -> None:
    """SIGTERM every process group the demo started, wait for them, then stop the cluster."""
    groups = []
    for pidfile in sorted(STATE.glob("*.pid")):
        with contextlib.suppress(ProcessLookupError, ValueError):
            pgid = int(pidfile.read_text())
            os.killpg(pgid, signal.SIGTERM)
            groups.append(pgid)
        pidfile.unlink()
    deadline = time.monotonic() + 40  # workers get their shutdown grace period
    for pgid in groups:
        while time.monotonic() < deadline and _group_alive(pgid):
            time.sleep(0.2)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
    subprocess.run(["bash", str(REPO / "e2e" / "cluster.sh"), "down"], check=False)
    say("demo stopped")


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description="jetpool local demo")
    parser.add_argument("--down", action="store_true", help="stop everything the demo started")
    parser.add_argument("--burst", type=int, default=2000, help="tasks in the burst")
    args = parser.parse_args()
    if args.down:
        down()
    else:
        up(args.burst)


if __name__ == "__main__":
    main()
