"""How fast a pool reacts to a burst, on the real test bed, beside KEDA+HPA's documented defaults.

Runs the local cluster, a nats-server, the operator and process-backed workers (the same parts
as ``make demo``), then for each round: a pool idle at zero replicas receives a burst of tasks,
and the benchmark records, from the moment the burst is published,

* first scale-up: the Deployment asks for more than zero replicas,
* full size: it asks for every replica the burst needs (``min(max, ceil(burst/target))``),
* drained: the consumer has nothing pending or unacked,
* back at zero: the Deployment is scaled to zero again.

KEDA+HPA are not run here (no images, no metrics server); their figures are derived from the
documented defaults (KEDA pollingInterval 30 s, HPA sync 15 s and scale-up max(4 pods, 100 %)
per sync, 300 s scale-down stabilization, KEDA cooldownPeriod 300 s) for the same burst, and
printed next to the measured ones with their ratio.

    .venv/bin/python bench/scaling.py [--rounds 3] [--burst 800]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import nats  # noqa: E402

from e2e.testbed.cluster import Cluster  # noqa: E402
from e2e.testbed.nats_server import NatsServer  # noqa: E402
from e2e.testbed.operator_process import OperatorProcess  # noqa: E402
from e2e.testbed.pod_runner import PodRunner  # noqa: E402
from jetpool_protocol.envelope import task_headers  # noqa: E402

KEDA_POLLING = 30.0
HPA_SYNC = 15.0
HPA_STABILIZATION = 300.0
KEDA_COOLDOWN = 300.0
MAX_REPLICAS = 8
TARGET = 25
TASK_SECONDS = 0.02


@dataclass
class Round:
    first_scale_up: float
    full_size: float
    drained: float
    back_to_zero: float


def keda_hpa(burst: int) -> Round:
    """Expected KEDA+HPA timings for the same burst from the documented defaults."""
    needed = min(MAX_REPLICAS, math.ceil(burst / TARGET))
    activation = KEDA_POLLING / 2  # the burst lands, on average, half a polling interval early
    replicas, syncs = 1, 0
    while replicas < needed:
        replicas = min(needed, replicas + max(4, replicas))  # max(4 pods, 100 %) per sync
        syncs += 1
    full = activation + HPA_SYNC / 2 + (syncs - 1) * HPA_SYNC if syncs else activation
    # N -> 1 waits out HPA's stabilization window and 1 -> 0 KEDA's cooldown; both count from
    # the end of the load, so they overlap: the later one plus the polling delay.
    return Round(activation, full, float("nan"), max(HPA_STABILIZATION, KEDA_COOLDOWN) + activation)


def pool(name: str, nats_url: str) -> dict[str, Any]:
    return {
        "apiVersion": "jetpool.dev/v1alpha1",
        "kind": "WorkerPool",
        "metadata": {"name": name},
        "spec": {
            "image": "jetpool-worker:bench",
            "handler": "e2e.demo_handlers:work",
            "nats": {"url": nats_url},
            "concurrency": 4,
            "scaling": {
                "minReplicas": 0,
                "maxReplicas": MAX_REPLICAS,
                "targetBacklogPerReplica": TARGET,
                "scaleDownDelaySeconds": 10,
                "scaleToZeroDelaySeconds": 5,
            },
            "template": {"labels": {"jetpool.dev/process-backed": "true"}},
        },
    }


def replicas(cluster: Cluster, namespace: str, name: str) -> int:
    out = cluster.kubectl(
        "get",
        "deployment",
        f"{name}-worker",
        "-n",
        namespace,
        "-o",
        "jsonpath={.spec.replicas}",
        check=False,
    )
    return int(out or 0)


async def backlog(js: Any, stream: str) -> int:
    info = await js.consumer_info(stream, "workers")
    return int(info.num_pending + info.num_ack_pending)


async def one_round(
    cluster: Cluster, namespace: str, name: str, url: str, burst: int, index: int
) -> Round:
    stream = json.loads(cluster.kubectl("get", "wp", name, "-n", namespace, "-o", "json"))[
        "status"
    ]["nats"]["stream"]
    needed = min(MAX_REPLICAS, math.ceil(burst / TARGET))
    nc = await nats.connect(url)
    js = nc.jetstream()
    body = json.dumps({"ms": TASK_SECONDS * 1000}).encode()
    now = datetime.now(UTC)
    t0 = time.monotonic()  # the clock starts when the burst starts, not when it has landed
    await asyncio.gather(
        *(
            js.publish(
                f"tasks.{namespace}.{name}.x",
                body,
                headers=task_headers(task_id=f"r{index}-{i}", created_at=now),
            )
            for i in range(burst)
        )
    )
    marks: dict[str, float] = {}
    while "back_to_zero" not in marks:
        elapsed = time.monotonic() - t0
        if elapsed > 600:
            raise SystemExit(f"round {index} did not finish: {marks}")
        current = await asyncio.to_thread(replicas, cluster, namespace, name)
        if current > 0:
            marks.setdefault("first_scale_up", elapsed)
        if current >= needed:
            marks.setdefault("full_size", elapsed)
        if "drained" not in marks and await backlog(js, stream) == 0:
            marks["drained"] = elapsed
        if "drained" in marks and current == 0:
            marks["back_to_zero"] = elapsed
        await asyncio.sleep(0.1)
    await nc.close()
    return Round(**marks)


def report(burst: int, rounds: list[Round]) -> None:
    keda = keda_hpa(burst)
    print(
        f"\nburst of {burst} tasks ({TASK_SECONDS * 1000:.0f} ms each), target {TARGET}/replica,"
        f" max {MAX_REPLICAS} replicas, {len(rounds)} rounds (median)"
    )
    print(f"{'milestone':<18}{'jetpool':>10}{'KEDA+HPA':>12}{'speed-up':>10}")
    for field in ("first_scale_up", "full_size", "drained", "back_to_zero"):
        ours = statistics.median(getattr(r, field) for r in rounds)
        theirs = getattr(keda, field)
        ratio = f"{theirs / ours:8.1f}x" if ours > 0 and not math.isnan(theirs) else "       -"
        shown = f"{theirs:10.1f}s" if not math.isnan(theirs) else "         -"
        print(f"{field:<18}{ours:9.2f}s{shown:>12}{ratio:>10}")
    print(
        "KEDA+HPA figures are derived from documented defaults, not measured "
        "(see docs/autoscaling.md). back_to_zero for jetpool uses the bench pool's 10 s "
        "scale-down window and 5 s idle delay; the shipped defaults are 30 s and 60 s."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="burst -> scale-up timings")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--burst", type=int, default=800)
    args = parser.parse_args()

    os.environ.setdefault("JETPOOL_LOG_FORMAT", "text")
    cluster = Cluster.start("jetpool-bench")
    server = NatsServer().start()
    operator = None
    runner = None
    namespace = "bench-" + str(int(time.time()))
    try:
        cluster.kubectl("apply", "--server-side", "-k", str(REPO / "crds"))
        cluster.kubectl("wait", "--for=condition=Established", "crd/workerpools.jetpool.dev")
        cluster.kubectl("create", "namespace", namespace)
        operator = OperatorProcess(cluster).start()
        runner = PodRunner(
            kubeconfig=str(cluster.kubeconfig),
            extra_env={"PYTHONPATH": str(REPO)},
            workdir=Path(tempfile.mkdtemp(prefix="jetpool-bench-pods-")),
        ).start()
        cluster.apply(pool("burst", server.url), "-n", namespace)
        deadline = time.monotonic() + 60
        while '"stream"' not in cluster.kubectl(
            "get", "wp", "burst", "-n", namespace, "-o", "json"
        ):
            if time.monotonic() > deadline:
                raise SystemExit("pool never became ready")
            time.sleep(0.5)
        rounds = []
        for index in range(args.rounds):
            result = asyncio.run(
                one_round(cluster, namespace, "burst", server.url, args.burst, index)
            )
            print(f"round {index + 1}: {result}", flush=True)
            rounds.append(result)
        report(args.burst, rounds)
    finally:
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
        if runner is not None:
            runner.stop()
        if operator is not None:
            operator.stop()
        server.close()
        cluster.stop()


if __name__ == "__main__":
    main()
