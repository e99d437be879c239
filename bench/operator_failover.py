"""HA failover: SIGKILL the active operator replica; how long until its standby acts.

Issue #11, point 2. On the real test bed (the local cluster, reused from ``JETPOOL_KUBECONFIG``
or started as ``--cluster-name``), a nats-server of its own and two ``jetpool-operator``
processes peered through a ClusterKopfPeering (different priorities, the same
``--peering-lifetime``) and sharded to this run's pools (``--shard-selector``, so a reused
cluster's other pools are never theirs). Pools: ``steady`` (one replica), ``burst`` (idle at
zero replicas) and ``--idle-pools`` more idle ones (a standby that takes over re-lists every
pool and starts a loop for each). Each round:

1. the active replica reconciles both pools; a fresh standby of lower priority has joined
   (its keep-alive is in the peering object) and reconciles nothing;
2. after a random wait of 0..lifetime s (so the kill lands anywhere in the keep-alive
   cycle), the active replica is SIGKILLed and a burst (``--burst`` tasks) is published to
   the idle pool;
3. from the kill, polled every 50 ms: **expiry** (the dead replica's last keep-alive in the
   peering object plus the lifetime: the earliest moment kopf lets a standby resume),
   **resumed** (the standby logs "Resuming operations after the pause"), **first reconcile**
   (its ``jetpool_operator_reconciles_total`` leaves 0) and **scale-up** (its
   ``jetpool_operator_scale_events_total{pool="burst",direction="up"}`` leaves 0; the
   Deployment's replicas are then checked to be above 0) and **every pool ticked** (each
   pool has a series in its reconciles counter);
4. the burst is purged, the pool scales back to zero; the survivor is the next round's
   active replica and a new process (lower priority again) the next standby.

``--term-rounds`` repeats it with SIGTERM instead: kopf removes its own record on the way out,
so the standby does not wait for the expiry (the floor of what peering can do).

Reported: kill -> first reconcile and kill -> scale-up as ratios to the configured lifetime
(median, max over the SIGKILL rounds), the keep-alive's age at the kill (why a round beats
the lifetime), and the resume overhead (first reconcile - expiry: the standby's re-listing,
its daemons starting, the first tick). Plot: ``<out>/operator_failover.png``.

    .venv/bin/python bench/operator_failover.py [--rounds 5] [--term-rounds 2] [--lifetime 10]
        [--idle-pools 50]
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import signal
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import nats  # noqa: E402

from bench.lib.common import Run, begin, log, parser  # noqa: E402
from bench.lib.plots import Panel, save_panels  # noqa: E402
from bench.lib.report import Table  # noqa: E402
from bench.lib.stats import median, ratio  # noqa: E402
from e2e.testbed.cluster import Cluster, eventually  # noqa: E402
from e2e.testbed.nats_server import NatsServer  # noqa: E402
from e2e.testbed.operator_process import OperatorProcess  # noqa: E402
from jetpool_operator.main import DEFAULT_PEERING_LIFETIME  # noqa: E402
from jetpool_protocol.envelope import task_headers  # noqa: E402

SHARD = "jetpool.dev/shard"
FIRST_PRIORITY = 1000
POLL = 0.05
RESUMED = "Resuming operations after the pause"


@dataclass
class Replica:
    process: OperatorProcess
    priority: int


@dataclass
class Round:
    signal: str
    keepalive_age: float | None
    """Seconds since the killed replica's last keep-alive, at the kill."""
    expiry: float | None
    """Seconds from the kill until that keep-alive expired (None for SIGTERM: removed)."""
    resumed: float | None
    first_reconcile: float
    """The standby's first control-loop tick done (a scale-up happens within a tick, so it
    can be counted a poll earlier)."""
    scale_up: float
    every_pool: float
    """Every pool of the run has had a tick of the standby."""


def arguments() -> Any:
    p = parser(__doc__)
    p.add_argument("--rounds", type=int, default=5, help="SIGKILL rounds")
    p.add_argument("--term-rounds", type=int, default=2, help="SIGTERM rounds (the baseline)")
    p.add_argument(
        "--lifetime", type=int, default=DEFAULT_PEERING_LIFETIME, help="--peering-lifetime, s"
    )
    p.add_argument("--burst", type=int, default=100, help="tasks published at the kill")
    p.add_argument(
        "--idle-pools",
        type=int,
        default=50,
        help="more pools, idle at zero replicas: the standby re-lists and restarts them all",
    )
    p.add_argument("--cluster-name", default="jetpool-failover")
    p.add_argument("--timeout", type=float, default=180.0, help="give up on a round after")
    return p


def pool(name: str, url: str, shard: str, min_replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "jetpool.dev/v1alpha1",
        "kind": "WorkerPool",
        "metadata": {"name": name, "labels": {SHARD: shard}},
        "spec": {
            "image": "jetpool-worker:bench",
            "handler": "e2e.demo_handlers:work",
            "nats": {"url": url},
            "scaling": {
                "minReplicas": min_replicas,
                "maxReplicas": 4,
                "targetBacklogPerReplica": 25,
                "scaleDownDelaySeconds": 2,
                "scaleToZeroDelaySeconds": 2,
            },
        },
    }


_POOL_LABEL = re.compile(r'pool="([^"]*)"')


def metric_total(text: str, metric: str, **labels: str) -> float:
    """Sum of the series of ``metric`` in a /metrics text whose labels include ``labels``."""
    total = 0.0
    wanted = [f'{k}="{v}"' for k, v in labels.items()]
    for line in text.splitlines():
        if line.startswith(metric + "{") and all(w in line for w in wanted):
            total += float(line.rsplit(" ", 1)[1])
    return total


def ticked_pools(text: str, namespace: str) -> set[str]:
    """Pools of the namespace with a control-loop tick in a /metrics text."""
    wanted = f'namespace="{namespace}"'
    return {
        match.group(1)
        for line in text.splitlines()
        if line.startswith("jetpool_operator_reconciles_total{") and wanted in line
        for match in [_POOL_LABEL.search(line)]
        if match
    }


class Bed:
    """The cluster objects and processes of one run."""

    def __init__(self, run: Run, cluster: Cluster, url: str) -> None:
        self.run, self.cluster, self.url = run, cluster, url
        self.tag = uuid.uuid4().hex[:6]
        self.namespace = f"bench-failover-{self.tag}"
        self.peering = f"bench-failover-{self.tag}"
        self.shard = f"failover-{self.tag}"
        self.next_priority = FIRST_PRIORITY
        self.spawned: list[Replica] = []
        self.pools: set[str] = set()

    def setup(self) -> None:
        c = self.cluster
        c.kubectl("apply", "--server-side", "-k", str(REPO / "crds"))
        c.kubectl(
            "wait", "--for=condition=Established", "--timeout=60s", "crd/workerpools.jetpool.dev"
        )
        c.kubectl(
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/clusterkopfpeerings.kopf.dev",
        )
        c.kubectl("create", "namespace", self.namespace)
        c.apply(
            {
                "apiVersion": "kopf.dev/v1",
                "kind": "ClusterKopfPeering",
                "metadata": {"name": self.peering},
            }
        )
        pools = [pool("steady", self.url, self.shard, 1), pool("burst", self.url, self.shard, 0)]
        pools += [
            pool(f"idle-{i}", self.url, self.shard, 0) for i in range(self.run.args.idle_pools)
        ]
        self.pools = {p["metadata"]["name"] for p in pools}
        c.apply({"apiVersion": "v1", "kind": "List", "items": pools}, "-n", self.namespace)

    def all_ready(self) -> bool:
        """Every pool has its streams (the first replica has reconciled each once)."""
        items = self.cluster.get_json("workerpools", "-n", self.namespace)["items"]
        ready = {i["metadata"]["name"] for i in items if (i.get("status") or {}).get("nats")}
        return ready >= self.pools

    def teardown(self) -> None:
        # While a replica still runs: it removes the pools' finalizers, so the namespace goes.
        self.cluster.kubectl(
            "delete", "namespace", self.namespace, "--wait=true", "--timeout=300s", check=False
        )
        for replica in self.spawned:
            replica.process.stop()
        self.cluster.kubectl("delete", "clusterkopfpeering", self.peering, check=False)

    def replica(self) -> Replica:
        """A new replica, of lower priority than every earlier one (so it joins as standby)."""
        priority, self.next_priority = self.next_priority, self.next_priority - 1
        logs = self.run.logs
        logs.mkdir(parents=True, exist_ok=True)
        (logs / f"operator-{priority}.log").unlink(missing_ok=True)  # OperatorProcess appends
        process = OperatorProcess(
            self.cluster,
            args=(
                "--peering",
                self.peering,
                "--priority",
                str(priority),
                "--peering-lifetime",
                str(self.run.args.lifetime),
                "--shard-selector",
                f"{SHARD}={self.shard}",
            ),
            log_path=logs / f"operator-{priority}.log",
        ).start()
        replica = Replica(process, priority)
        self.spawned.append(replica)
        return replica

    def status(self, name: str) -> dict[str, Any]:
        body = self.cluster.get_json("workerpool", name, "-n", self.namespace)
        return body.get("status") or {}

    def replicas(self, name: str) -> int:
        out = self.cluster.kubectl(
            "get",
            "deployment",
            f"{name}-worker",
            "-n",
            self.namespace,
            "-o",
            "jsonpath={.spec.replicas}",
            check=False,
        )
        return int(out or 0)

    def keepalive(self, priority: int) -> datetime | None:
        """The last keep-alive of the peer of that priority in the peering object."""
        records = self.cluster.get_json("clusterkopfpeering", self.peering).get("status") or {}
        for record in records.values():
            if record.get("priority") == priority:
                return datetime.fromisoformat(record["lastseen"])
        return None


async def publish(url: str, subject: str, count: int, tag: str) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    now = datetime.now(UTC)
    await asyncio.gather(
        *(
            js.publish(subject, b"{}", headers=task_headers(task_id=f"{tag}-{i}", created_at=now))
            for i in range(count)
        )
    )
    await nc.close()


async def purge(url: str, stream: str) -> None:
    nc = await nats.connect(url)
    await nc.jetstream().purge_stream(stream)
    await nc.close()


def one_round(bed: Bed, replicas: tuple[Replica, Replica], sig: int, index: int) -> Round:
    """Signal the active replica of ``replicas`` (active, standby); time the standby."""
    args = bed.run.args
    lifetime = args.lifetime
    active, standby = (r.process for r in replicas)
    eventually(lambda: active.reconciles() > 0, timeout=120, what="the active replica reconciling")
    # A standby starts paused (kopf logs nothing until it resumes): wait until it has joined.
    eventually(lambda: bed.keepalive(replicas[1].priority), timeout=120, what="the standby joining")
    eventually(
        lambda: bed.status("burst").get("desiredReplicas") == 0 and bed.replicas("burst") == 0,
        timeout=120,
        what="the burst pool back at zero",
    )
    assert standby.reconciles() == 0, "the standby reconciles while the active one lives"
    time.sleep(random.uniform(0, lifetime))  # anywhere in the keep-alive cycle
    assert active.process is not None
    logged = len(standby.logs())
    killed_wall, killed = time.time(), time.monotonic()
    active.process.send_signal(sig)
    asyncio.run(publish(bed.url, f"tasks.{bed.namespace}.burst.job", args.burst, f"r{index}"))
    lastseen = bed.keepalive(replicas[0].priority) if sig == signal.SIGKILL else None
    marks: dict[str, float] = {}
    while len(marks) < 4:
        now = time.monotonic() - killed
        if now > args.timeout:
            raise SystemExit(f"round {index}: the standby did not take over in time: {marks}")
        if "resumed" not in marks and RESUMED in standby.logs()[logged:]:
            marks["resumed"] = now
        try:
            text = standby.metrics()
        except OSError:
            text = ""
        ns = bed.namespace
        if "first_reconcile" not in marks and metric_total(
            text, "jetpool_operator_reconciles_total"
        ):
            marks["first_reconcile"] = now
        if "scale_up" not in marks and metric_total(
            text, "jetpool_operator_scale_events_total", namespace=ns, pool="burst", direction="up"
        ):
            marks["scale_up"] = now
        if "every_pool" not in marks and ticked_pools(text, ns) >= bed.pools:
            marks["every_pool"] = now
        time.sleep(POLL)
    assert active.process.wait(30) is not None
    if bed.replicas("burst") <= 0:
        raise SystemExit(f"round {index}: the scale-up never reached the Deployment")
    age = expiry = None
    if lastseen is not None:
        age = killed_wall - lastseen.timestamp()
        expiry = lastseen.timestamp() + lifetime - killed_wall
    stream = bed.status("burst")["nats"]["stream"]
    asyncio.run(purge(bed.url, stream))
    return Round(
        signal=signal.Signals(sig).name,
        keepalive_age=age,
        expiry=expiry,
        resumed=marks.get("resumed"),
        first_reconcile=marks["first_reconcile"],
        scale_up=marks["scale_up"],
        every_pool=marks["every_pool"],
    )


def tables(rounds: list[Round], lifetime: int) -> list[Table]:
    per_round = Table(
        "Each round (seconds from the signal)",
        [
            "round",
            "signal",
            "keep-alive age at kill",
            "expiry",
            "resumed",
            "first reconcile",
            "scale-up",
            "every pool ticked",
            "first reconcile / lifetime",
        ],
        [
            [
                i + 1,
                r.signal,
                r.keepalive_age,
                r.expiry,
                r.resumed,
                r.first_reconcile,
                r.scale_up,
                r.every_pool,
                ratio(r.first_reconcile, lifetime),
            ]
            for i, r in enumerate(rounds)
        ],
        note="expiry: the dead replica's last keep-alive + the lifetime, the earliest moment kopf "
        "lets the standby resume; a SIGTERMed replica removes its record, so it has none.",
    )
    killed = [r for r in rounds if r.signal == "SIGKILL"]
    termed = [r for r in rounds if r.signal == "SIGTERM"]
    summary = Table(
        f"Failover, as a ratio to the peering lifetime ({lifetime} s)",
        ["measure", "rounds", "median", "max", "median / lifetime", "max / lifetime"],
        note="resume overhead: first reconcile - expiry (the standby re-lists, starts its "
        "daemons and ticks). The SIGTERM rows are the floor: no expiry to wait for.",
    )
    for label, group, pick in (
        ("SIGKILL -> first reconcile", killed, lambda r: r.first_reconcile),
        ("SIGKILL -> scale-up of the idle pool", killed, lambda r: r.scale_up),
        ("SIGKILL -> every pool ticked", killed, lambda r: r.every_pool),
        ("SIGKILL: keep-alive age at kill", killed, lambda r: r.keepalive_age),
        ("SIGKILL: resume overhead", killed, lambda r: _minus(r.first_reconcile, r.expiry)),
        ("SIGTERM -> first reconcile", termed, lambda r: r.first_reconcile),
        ("SIGTERM -> scale-up of the idle pool", termed, lambda r: r.scale_up),
        ("SIGTERM -> every pool ticked", termed, lambda r: r.every_pool),
    ):
        values = [v for v in (pick(r) for r in group) if v is not None]
        if not values:
            continue
        mid, top = median(values), max(values)
        summary.rows.append(
            [label, len(values), mid, top, ratio(mid, lifetime), ratio(top, lifetime)]
        )
    return [summary, per_round]


def _minus(a: float, b: float | None) -> float | None:
    return None if b is None else a - b


def main() -> None:
    run = begin("operator_failover", arguments())
    args = run.args
    cluster = Cluster.start(args.cluster_name)
    server = NatsServer().start()
    bed = Bed(run, cluster, server.url)
    rounds: list[Round] = []
    try:
        bed.setup()
        active = bed.replica()
        eventually(bed.all_ready, timeout=600, interval=2, what="every pool ready")
        plan = [signal.SIGKILL] * args.rounds + [signal.SIGTERM] * args.term_rounds
        for index, sig in enumerate(plan):
            standby = bed.replica()
            result = one_round(bed, (active, standby), sig, index)
            log.info("round %d: %s", index + 1, json.dumps(result.__dict__, default=str))
            rounds.append(result)
            active = standby
    finally:
        bed.teardown()
        server.close()
        cluster.stop()
    figure = save_panels(
        Path(args.out) / "operator_failover.png",
        f"Failover (peering lifetime {args.lifetime} s)",
        [
            Panel(
                "seconds from the signal (K: SIGKILL, T: SIGTERM)",
                [f"{r.signal[3]}{i + 1}" for i, r in enumerate(rounds)],
                {
                    "expiry": [r.expiry if r.expiry is not None else 0.0 for r in rounds],
                    "first reconcile": [r.first_reconcile for r in rounds],
                    "scale-up": [r.scale_up for r in rounds],
                    "every pool ticked": [r.every_pool for r in rounds],
                },
                ylabel="s",
                reference=float(args.lifetime),
                reference_label="lifetime",
            )
        ],
        bars=True,
    )
    run.finish(
        "HA failover: SIGKILL of the active operator replica",
        "Two peered `jetpool-operator` processes on the local test bed; the active one is "
        "SIGKILLed at a random point of its keep-alive cycle, and the time until the standby "
        "reconciles and scales an idle pool up for a burst published at the kill is measured "
        f"against the peering lifetime ({args.lifetime} s), the bound kopf's peering puts on "
        "it. SIGTERM rounds, where the replica removes its own record, are the floor.",
        tables(rounds, args.lifetime),
        [figure],
    )


if __name__ == "__main__":
    main()
