"""One operator, N WorkerPools: convergence, idle and busy cost, burst latency, per mode.

Issue #11, point 3. On the real test bed (kube-apiserver, etcd, controller-manager,
scheduler and kwok from ``e2e/cluster.sh``; a real nats-server; the operator as a real
process; process-backed worker pods for the busy pools), once per observation mode
(``JETPOOL_OBSERVATION=batched``, the new design, and ``per-pool``, the old one: each pool's
loop reads its own consumer info every second), each mode on a fresh cluster, a fresh
nats-server and a fresh operator process:

1. **converge**: ``--pools`` idle WorkerPools (``minReplicas: 0``) in one ``kubectl apply
   --server-side`` of a ``List``; time from the moment kubectl returned (every pool stored)
   until every pool has ``Ready=True`` and ``NatsReady=True`` (a ``kubectl get -w`` sees each
   status change; progress is logged as ``412/1000 ready``).
2. **idle window** (``--idle-seconds``, default 330 s: longer than the 300 s after which a
   quiescent pool re-verifies its streams and children in the batched mode, so every pool's
   periodic work falls into the window once), once the controller-manager has caught up with
   every Deployment (ReplicaSets made) and ``--settle-seconds`` more: the operator's CPU
   (utime+stime from ``/proc/<pid>/stat``, cores = CPU seconds / wall seconds) and RSS;
   JetStream API requests/s (nats-server ``/jsz`` ``api.total``, which excludes pull
   requests; no other client makes API calls in the window), split by API kind by a
   subscription on ``$JS.API.>``; messages/s the operator's connections (``name:
   jetpool-operator`` in ``/connz``) sent; kube-apiserver writes/min (``apiserver_request_total``
   from ``/metrics``, verbs POST/PUT/PATCH/APPLY/DELETE, delta over the window; server-side
   apply counts as APPLY there), all and without the node and lease heartbeats of kwok and
   the control plane; the Kubernetes Events recorded; how often a converged pool's ``Ready``
   or ``NatsReady`` left True.
3. **bursts** (``--bursts``): each to a different idle pool at zero replicas
   (``activationBacklog: 0``), ``--burst-size`` tasks published at once; time from the first
   publish until a watch on the pool's Deployment sees ``spec.replicas > 0``. The pool's
   stream is purged afterwards and it scales back to zero.
4. **busy window**: the first ``--busy`` pools carry the ``jetpool.dev/process-backed`` pod
   label, so their pods become real ``jetpool-worker`` processes (``e2e/testbed/pod_runner``);
   a steady trickle (``--busy-rate`` tasks/s per pool, ``--task-ms`` each, so something is
   always in flight and no pool goes back to zero; ``maxReplicas: 1``, so none flaps between
   sizes either) wakes them; once every busy pool runs its one worker, its backlog is drained
   and the cluster has settled, the same figures as in 2. are measured.

Output: a table on stdout, ``<out>/operator_scale.json`` (a ``bench.lib.report.Result``),
``<out>/operator_scale.md``, and in ``<out>/operator_scale/`` the raw figures
(``raw.json``), the operator logs and the busy workers' directories. Figures and their
discussion: bench/operator_scale.md.

    .venv/bin/python bench/operator_scale.py [--pools 1000] [--busy 10] \\
        [--modes batched,per-pool] [--idle-seconds 330] [--busy-seconds 60] [--bursts 5]

Starts its own cluster (``--cluster-name``, default ``jetpool-opscale``) and removes it
after each mode; ``--reuse-cluster`` uses ``JETPOOL_KUBECONFIG`` instead (writes of other
clients of that cluster then count too).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from itertools import pairwise, takewhile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import nats  # noqa: E402
from nats.aio.msg import Msg  # noqa: E402

from bench.lib.common import cli_logging, command_line, finish, log, parser, rss_bytes  # noqa: E402
from bench.lib.report import Result, Table, render_result  # noqa: E402
from bench.lib.stats import median, percentile, ratio  # noqa: E402
from e2e.testbed.cluster import Cluster, eventually, kubectl_binary  # noqa: E402
from e2e.testbed.nats_server import NatsServer  # noqa: E402
from e2e.testbed.operator_process import OperatorProcess  # noqa: E402
from e2e.testbed.pod_runner import PodRunner  # noqa: E402
from jetpool_protocol.envelope import task_headers  # noqa: E402

MODES = ("batched", "per-pool")
OBSERVATION_ENV = "JETPOOL_OBSERVATION"
PROCESS_BACKED = "jetpool.dev/process-backed"
HANDLER = "e2e.demo_handlers:work"
WRITE_VERBS = frozenset({"POST", "PUT", "PATCH", "APPLY", "DELETE", "DELETECOLLECTION"})
"""The apiserver counts a server-side apply (a PATCH on the wire, how the operator writes its
children) under its own verb, APPLY."""
HEARTBEATS = frozenset({"leases", "nodes"})
"""Written by kwok and the control plane on their own clock, whatever the operator does."""
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------- pure helpers


def cpu_seconds_from_stat(stat: str) -> float:
    """utime + stime of a ``/proc/<pid>/stat`` line, in seconds (fields 14 and 15; the
    command name in field 2 may hold spaces and parentheses, so count from its last ``)``)."""
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def cpu_seconds(pid: int) -> float:
    return cpu_seconds_from_stat(Path(f"/proc/{pid}/stat").read_text())


def peak_rss_bytes(pid: int) -> int:
    """``VmHWM``: the highest resident set size the process has had."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise ValueError(f"no VmHWM for process {pid}")


_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def apiserver_writes(metrics: str) -> dict[str, float]:
    """``"VERB resource[/subresource]" -> count`` of write requests in a kube-apiserver
    ``/metrics`` text (``apiserver_request_total``, every code)."""
    out: dict[str, float] = {}
    for line in metrics.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels_text, _, value = line.rpartition("} ")
        labels = dict(_LABEL.findall(labels_text))
        if labels.get("verb") not in WRITE_VERBS:
            continue
        resource = labels.get("resource", "")
        if labels.get("subresource"):
            resource += "/" + labels["subresource"]
        key = f"{labels['verb']} {resource}"
        out[key] = out.get(key, 0.0) + float(value)
    return out


def heartbeat(kind: str) -> bool:
    """Whether a ``"VERB resource[/sub]"`` write is a node or lease heartbeat."""
    return kind.split(" ", 1)[1].split("/", maxsplit=1)[0] in HEARTBEATS


def api_kind(subject: str) -> str:
    """``$JS.API.CONSUMER.INFO.<stream>.<consumer>`` -> ``CONSUMER.INFO``: the upper-case
    tokens after ``$JS.API`` (stream and consumer names here are lower case)."""
    return ".".join(takewhile(str.isupper, subject.split(".")[2:])) or subject


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0)}


def new_events(before: Snapshot, after: Snapshot) -> dict[str, float]:
    """Events recorded between two snapshots, by kind (new ones, and repeats of old ones)."""
    out: dict[str, float] = {}
    for uid, count in after.events.items():
        added = count - before.events.get(uid, 0.0)
        if added > 0:
            kind = after.event_kinds[uid]
            out[kind] = out.get(kind, 0.0) + added
    return out


def per(counts: dict[str, float], seconds: float, scale: float = 1.0) -> dict[str, float]:
    """Counts over a window as rates (per second, or per minute with ``scale=60``), largest
    first."""
    return {k: v * scale / seconds for k, v in sorted(counts.items(), key=lambda kv: -kv[1])}


def fresh_dir(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


class OperatorGone(Exception):
    """The operator process ended while the bench still measured it."""


def check_alive(process: subprocess.Popen[bytes]) -> None:
    """Fail at once if the operator exited (a crash, or a signal from outside the bench):
    whatever is measured after that is not the operator's."""
    code = process.poll()
    if code is not None:
        how = f"signal {-code}" if code < 0 else f"exit code {code}"
        raise OperatorGone(f"the operator process ended ({how}) before the bench stopped it")


async def guarded(process: subprocess.Popen[bytes], phase: Awaitable[None]) -> None:
    """Run a phase, stopping it with :class:`OperatorGone` as soon as the operator exits."""
    task = asyncio.ensure_future(phase)
    while not task.done():
        await asyncio.wait({task}, timeout=0.5)
        if not task.done() and process.poll() is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            check_alive(process)
    task.result()


# ---------------------------------------------------------------------------- watches


class KubectlWatch:
    """``kubectl get -w -o jsonpath=...``: one ``|``-separated line per object and event
    (kubectl's tab writer would turn tabs into spaces),
    handed to ``on_line(fields, monotonic time)`` from a reader thread (restarted if kubectl
    exits early; the restart lists every object again)."""

    def __init__(
        self,
        cluster: Cluster,
        args: list[str],
        template: str,
        on_line: Callable[[list[str], float], None],
    ) -> None:
        self.argv = [
            kubectl_binary(),
            "--kubeconfig",
            str(cluster.kubeconfig),
            "get",
            *args,
            "--watch",
            "-o",
            f"jsonpath={template}",
        ]
        self.on_line = on_line
        self.events = 0
        self._stop = threading.Event()
        self._proc: subprocess.Popen[str] | None = None
        self._thread = threading.Thread(target=self._run, name="kubectl-watch", daemon=True)

    def start(self) -> KubectlWatch:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self._proc = subprocess.Popen(
                self.argv,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                bufsize=1,
                start_new_session=True,
            )
            assert self._proc.stdout is not None
            for line in self._proc.stdout:
                now = time.monotonic()
                self.events += 1
                self.on_line(line.strip().split("|"), now)
            self._proc.wait()
            self._stop.wait(0.5)

    def stop(self) -> None:
        self._stop.set()
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(5)
        self._thread.join(5)


@dataclass
class PoolState:
    ready: bool = False
    nats_ready: bool = False
    stream: str = ""
    converged_at: float | None = None
    """Monotonic time the watch first saw Ready=True and NatsReady=True together."""


class PoolWatch:
    """Every WorkerPool of a namespace: conditions, stream name, when each converged."""

    TEMPLATE = (
        '{.metadata.name}{"|"}'
        '{.status.conditions[?(@.type=="Ready")].status}{"|"}'
        '{.status.conditions[?(@.type=="NatsReady")].status}{"|"}'
        '{.status.nats.stream}{"\\n"}'
    )

    def __init__(self, cluster: Cluster, namespace: str) -> None:
        self.pools: dict[str, PoolState] = {}
        self.drops = 0
        """Times a converged pool's Ready or NatsReady went from True to something else."""
        self._lock = threading.Lock()
        self.watch = KubectlWatch(
            cluster, ["workerpools", "-n", namespace], self.TEMPLATE, self._on
        )

    def _on(self, fields: list[str], now: float) -> None:
        if len(fields) < 4 or not fields[0]:
            return
        with self._lock:
            state = self.pools.setdefault(fields[0], PoolState())
            ready, nats_ready = fields[1] == "True", fields[2] == "True"
            if state.converged_at is not None and (
                (state.ready and not ready) or (state.nats_ready and not nats_ready)
            ):
                self.drops += 1
            state.ready, state.nats_ready = ready, nats_ready
            state.stream = fields[3] or state.stream
            if state.ready and state.nats_ready and state.converged_at is None:
                state.converged_at = now

    def counts(self) -> tuple[int, int, int]:
        """(pools seen, Ready=True, both Ready and NatsReady True) right now."""
        with self._lock:
            pools = list(self.pools.values())
        return (
            len(pools),
            sum(p.ready for p in pools),
            sum(p.ready and p.nats_ready for p in pools),
        )

    def converged_times(self) -> list[float]:
        with self._lock:
            return [p.converged_at for p in self.pools.values() if p.converged_at is not None]

    def stream(self, name: str) -> str:
        """The pool's task stream from its status ('' while the operator has not said)."""
        with self._lock:
            state = self.pools.get(name)
            return state.stream if state is not None else ""


class DeploymentWatch:
    """``spec.replicas`` of every Deployment of a namespace, when each last rose above 0, and
    which ones the controller-manager has not caught up with yet."""

    TEMPLATE = (
        '{.metadata.name}{"|"}{.spec.replicas}{"|"}{.metadata.generation}{"|"}'
        '{.status.observedGeneration}{"|"}{.status.replicas}{"\\n"}'
    )

    def __init__(self, cluster: Cluster, namespace: str) -> None:
        self.replicas: dict[str, int] = {}
        self.woke_at: dict[str, float] = {}
        self.behind: set[str] = set()
        """Deployments whose status lags their spec (generation or pod count)."""
        self._lock = threading.Lock()
        self.watch = KubectlWatch(
            cluster, ["deployments", "-n", namespace], self.TEMPLATE, self._on
        )

    def _on(self, fields: list[str], now: float) -> None:
        if len(fields) < 5 or not fields[0]:
            return
        name, replicas = fields[0], int(fields[1] or 0)
        with self._lock:
            if replicas > 0 and self.replicas.get(name, 0) == 0:
                self.woke_at[name] = now
            self.replicas[name] = replicas
            if fields[2] == fields[3] and int(fields[4] or 0) == replicas:
                self.behind.discard(name)
            else:
                self.behind.add(name)

    def get(self, name: str) -> tuple[int | None, float | None]:
        with self._lock:
            return self.replicas.get(name), self.woke_at.get(name)

    def settled(self, expected: int) -> tuple[bool, int, int]:
        """(all ``expected`` Deployments exist and the controller-manager caught up with
        each, how many exist, how many lag)."""
        with self._lock:
            seen, lagging = len(self.replicas), len(self.behind)
        return seen >= expected and lagging == 0, seen, lagging


async def wait_settled(deployments: DeploymentWatch, expected: int, label: str) -> float:
    """Wait until the controller-manager has caught up with every Deployment (ReplicaSets
    made, pods counted), so a window measures a steady state; returns the seconds waited."""
    start = last_log = time.monotonic()
    while True:
        done, seen, lagging = deployments.settled(expected)
        now = time.monotonic()
        if done:
            return now - start
        if now - start > 600:
            log.warning("%s: controller-manager still behind after 600 s; measuring anyway", label)
            return now - start
        if now - last_log >= 5:
            log.info("%s: %d/%d Deployments, %d not caught up yet", label, seen, expected, lagging)
            last_log = now
        await asyncio.sleep(0.5)


# ---------------------------------------------------------------------------- sampling


@dataclass
class Snapshot:
    at: float
    operator_cpu: float
    nats_cpu: float
    js_api: float
    operator_sent: dict[str, float]
    """cid -> in_msgs of each connection named jetpool-operator (messages it sent)."""
    operator_received: dict[str, float]
    writes: dict[str, float]
    api_kinds: dict[str, float]
    pool_events: int
    condition_drops: int
    events: dict[str, float]
    """Event uid -> count (an Event repeated in place counts up instead of being new)."""
    event_kinds: dict[str, str]
    """Event uid -> "component reason"."""


@dataclass
class Window:
    """What one measurement window saw; rates are per second unless named per minute."""

    seconds: float
    operator_cpu_cores: float
    operator_rss_mb: float
    operator_rss_max_mb: float
    operator_cpu_cores_by_10s: list[float]
    """The operator's CPU in each ~10 s of the window: periodic work shows as peaks."""
    nats_server_cpu_cores: float
    js_api_per_s: float
    js_api_by_kind_per_s: dict[str, float]
    operator_msgs_sent_per_s: float
    operator_msgs_received_per_s: float
    apiserver_writes_per_min: float
    apiserver_writes_no_heartbeats_per_min: float
    apiserver_writes_by_kind_per_min: dict[str, float]
    pool_status_events_per_min: float
    """WorkerPool changes the pool watch saw (status patches, mostly)."""
    condition_drops: int
    """Times a converged pool's Ready or NatsReady left True during the window."""
    k8s_events_by_reason_per_min: dict[str, float]
    """Kubernetes Events recorded in the window, by reporting component and reason."""


class Sampler:
    """Reads every counter of a window: /proc, nats-server monitor, apiserver metrics."""

    def __init__(
        self,
        cluster: Cluster,
        operator: subprocess.Popen[bytes],
        nats: NatsServer,
        nc: Any,
        pool_watch: PoolWatch,
    ) -> None:
        self.cluster, self.operator, self.nats, self.nc = cluster, operator, nats, nc
        self.pid = operator.pid
        self.pool_watch = pool_watch
        self.api_kinds: Counter[str] = Counter()

    async def on_api_request(self, msg: Msg) -> None:
        self.api_kinds[api_kind(msg.subject)] += 1

    def _monitor(self, path: str) -> Any:
        with urllib.request.urlopen(self.nats.monitor_url + path, timeout=10) as response:
            return json.load(response)

    def _events(self) -> dict[str, Any]:
        listed = json.loads(self.cluster.kubectl("get", "events", "-A", "-o", "json"))
        counts: dict[str, float] = {}
        kinds: dict[str, str] = {}
        for event in listed.get("items") or []:
            uid = event["metadata"]["uid"]
            component = event.get("reportingComponent") or (event.get("source") or {}).get(
                "component", "?"
            )
            counts[uid] = float(event.get("count") or 1)
            kinds[uid] = f"{component} {event.get('reason', '?')}"
        return {"events": counts, "event_kinds": kinds}

    def snapshot(self, api_kinds: dict[str, float]) -> Snapshot:
        """Every counter now; ``api_kinds`` is copied by the caller in the event loop that
        counts them (this runs in a thread)."""
        connz = self._monitor("/connz?auth=true&limit=4096")
        mine = [c for c in connz.get("connections") or [] if c.get("name") == "jetpool-operator"]
        assert self.nats.process is not None
        metrics = self.cluster.kubectl("get", "--raw", "/metrics")
        return Snapshot(
            at=time.monotonic(),
            operator_cpu=cpu_seconds(self.pid),
            nats_cpu=cpu_seconds(self.nats.process.pid),
            js_api=float(self._monitor("/jsz")["api"]["total"]),
            operator_sent={str(c["cid"]): float(c["in_msgs"]) for c in mine},
            operator_received={str(c["cid"]): float(c["out_msgs"]) for c in mine},
            writes=apiserver_writes(metrics),
            api_kinds=api_kinds,
            pool_events=self.pool_watch.watch.events,
            condition_drops=self.pool_watch.drops,
            **self._events(),
        )

    async def window(self, seconds: float, label: str) -> Window:
        # The copy of every $JS.API request costs this process CPU on a shared box: only
        # while a window runs (not while converging or timing bursts).
        spy = await self.nc.subscribe("$JS.API.>", cb=self.on_api_request)
        await self.nc.flush()
        try:
            before = await asyncio.to_thread(self.snapshot, dict(self.api_kinds))
            rss: list[int] = []
            cpu = [(before.at, before.operator_cpu)]
            deadline = before.at + seconds
            while (left := deadline - time.monotonic()) > 0:
                check_alive(self.operator)
                rss.append(rss_bytes(self.pid))
                if len(cpu) > 1:
                    log.info(
                        "%s: %.0f s left, operator RSS %.0f MB, CPU %.2f cores",
                        label,
                        left,
                        rss[-1] / 2**20,
                        (cpu[-1][1] - cpu[-2][1]) / (cpu[-1][0] - cpu[-2][0]),
                    )
                await asyncio.sleep(min(left, 10.0))
                cpu.append((time.monotonic(), cpu_seconds(self.pid)))
            rss.append(rss_bytes(self.pid))
            after = await asyncio.to_thread(self.snapshot, dict(self.api_kinds))
            check_alive(self.operator)
        finally:
            await spy.unsubscribe()
        wall = after.at - before.at
        writes = delta(after.writes, before.writes)
        quiet = {k: v for k, v in writes.items() if not heartbeat(k)}
        return Window(
            seconds=wall,
            operator_cpu_cores=(after.operator_cpu - before.operator_cpu) / wall,
            operator_rss_mb=rss[-1] / 2**20,
            operator_rss_max_mb=max(rss) / 2**20,
            operator_cpu_cores_by_10s=[
                (c1 - c0) / (t1 - t0) for (t0, c0), (t1, c1) in pairwise(cpu)
            ],
            nats_server_cpu_cores=(after.nats_cpu - before.nats_cpu) / wall,
            js_api_per_s=(after.js_api - before.js_api) / wall,
            js_api_by_kind_per_s=per(delta(after.api_kinds, before.api_kinds), wall),
            operator_msgs_sent_per_s=sum(delta(after.operator_sent, before.operator_sent).values())
            / wall,
            operator_msgs_received_per_s=sum(
                delta(after.operator_received, before.operator_received).values()
            )
            / wall,
            apiserver_writes_per_min=sum(writes.values()) * 60 / wall,
            apiserver_writes_no_heartbeats_per_min=sum(quiet.values()) * 60 / wall,
            apiserver_writes_by_kind_per_min=per(writes, wall, 60),
            pool_status_events_per_min=(after.pool_events - before.pool_events) * 60 / wall,
            condition_drops=after.condition_drops - before.condition_drops,
            k8s_events_by_reason_per_min=per(new_events(before, after), wall, 60),
        )


# ---------------------------------------------------------------------------- one mode


@dataclass
class ModeResult:
    mode: str
    pools: int
    apply_seconds: float = math.nan
    """How long the one kubectl apply of the List took."""
    converge_seconds: float = math.nan
    """From kubectl apply returning until the last pool had Ready and NatsReady True."""
    converged: int = 0
    converged_at_apply_return: int = 0
    converge_p50_seconds: float = math.nan
    converge_percentiles: dict[str, float] = field(default_factory=dict)
    """Seconds after apply returned by which 10 %, 25 % ... of the pools had converged."""
    converge_operator_cpu_cores: float = math.nan
    converge_writes_by_kind: dict[str, float] = field(default_factory=dict)
    """apiserver writes from the start of the apply until the last pool converged (the
    apply's own, the operator's and the controller-manager's)."""
    converge_events_by_kind: dict[str, float] = field(default_factory=dict)
    """The operator's mean CPU from the start of the apply until the last pool converged."""
    """Median pool: from apply returning to Ready+NatsReady (0 if it was ready before)."""
    operator_peak_rss_mb: float = math.nan
    idle_settle_seconds: float = math.nan
    """Waited after convergence until the controller-manager had caught up with every
    Deployment (ReplicaSets made), before the idle window."""
    idle: Window | None = None
    bursts_seconds: list[float] = field(default_factory=list)
    busy: Window | None = None
    operator_log_errors: int = 0
    operator_log_warnings: int = 0
    operator_log_samples: list[str] = field(default_factory=list)
    """First few distinct ERROR lines and tracebacks of the operator's log."""
    operator_log_warning_samples: list[str] = field(default_factory=list)
    operator_log: str = ""
    revision: str = ""
    """The operator code this mode ran (``-dirty``: the working tree had changes)."""
    error: str = ""
    """Why the scenario stopped early in this mode ('' when it ran to the end)."""


def pool_name(index: int) -> str:
    return f"p-{index:04d}"


def pool_manifest(name: str, nats_url: str, *, process_backed: bool) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "image": "jetpool-worker:bench",
        "handler": HANDLER,
        "nats": {"url": nats_url},
        "concurrency": 4,
        "scaling": {
            "minReplicas": 0,
            "maxReplicas": 1,
            "activationBacklog": 0,
            "targetBacklogPerReplica": 10,
            "scaleDownDelaySeconds": 5,
            "scaleToZeroDelaySeconds": 5,
        },
    }
    if process_backed:
        spec["template"] = {"labels": {PROCESS_BACKED: "true"}}
    return {
        "apiVersion": "jetpool.dev/v1alpha1",
        "kind": "WorkerPool",
        "metadata": {"name": name},
        "spec": spec,
    }


def pool_list(count: int, busy: int, nats_url: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            pool_manifest(pool_name(i), nats_url, process_backed=i < busy) for i in range(count)
        ],
    }


def scan_log(text: str, result: ModeResult) -> None:
    """Count the ERROR (and Traceback) and WARNING lines of the operator's text log and keep
    the first few distinct ones, timestamps cut and pool names folded (``p-####``)."""
    errors: list[str] = []
    warnings: list[str] = []
    for line in text.splitlines():
        shown = re.sub(r"p-\d{4}", "p-####", line.split("] ", 1)[-1])[:240]
        if "[ERROR" in line or line.startswith("Traceback"):
            result.operator_log_errors += 1
            if shown not in errors and len(errors) < 8:
                errors.append(shown)
        elif "[WARNING" in line:
            result.operator_log_warnings += 1
            if shown not in warnings and len(warnings) < 8:
                warnings.append(shown)
    result.operator_log_samples = errors
    result.operator_log_warning_samples = warnings


@dataclass
class Bed:
    """What one mode runs on; started in order, stopped in reverse."""

    cluster: Cluster | None = None
    server: NatsServer | None = None
    operator: OperatorProcess | None = None
    runner: PodRunner | None = None
    watches: list[KubectlWatch] = field(default_factory=list)

    def stop(self) -> None:
        for watch in self.watches:
            watch.stop()
        if self.runner is not None:
            self.runner.stop()
        if self.operator is not None:
            self.operator.stop()
        if self.server is not None:
            self.server.close()
        if self.cluster is not None:
            self.cluster.stop()


@contextlib.contextmanager
def bed(args: Any) -> Iterator[Bed]:
    parts = Bed()
    try:
        if args.reuse_cluster:
            parts.cluster = Cluster.start(args.cluster_name)
        else:
            saved = os.environ.pop("JETPOOL_KUBECONFIG", None)
            try:
                parts.cluster = Cluster.start(args.cluster_name)
            finally:
                if saved is not None:
                    os.environ["JETPOOL_KUBECONFIG"] = saved
        yield parts
    finally:
        parts.stop()


async def wait_converged(
    watch: PoolWatch, pools: int, applied_at: float, limit: float
) -> float | None:
    """Log progress until every pool converged; the monotonic time the last one did."""
    last_log = 0.0
    while True:
        seen, ready, both = watch.counts()
        now = time.monotonic()
        if both >= pools:
            log.info("converged: %d/%d ready (Ready and NatsReady)", both, pools)
            return max(watch.converged_times())
        if now - last_log >= 2.0:
            log.info(
                "converging: %d/%d ready (%d seen, %d Ready=True) %.0f s after apply",
                both,
                pools,
                seen,
                ready,
                now - applied_at,
            )
            last_log = now
        if now - applied_at > limit:
            log.warning("not converged after %.0f s: %d/%d", limit, both, pools)
            return None
        await asyncio.sleep(0.2)


async def burst(
    js: Any, deployments: DeploymentWatch, namespace: str, pool: str, stream: str, size: int
) -> float:
    """Publish ``size`` tasks to an idle pool; seconds until its Deployment asks for workers."""
    if not stream:
        raise RuntimeError(f"{pool} has no stream in its status")
    deployment = f"{pool}-worker"
    replicas, _ = deployments.get(deployment)
    if replicas != 0:
        raise RuntimeError(f"{deployment} is not at zero replicas ({replicas}) before its burst")
    now = datetime.now(UTC)
    body = json.dumps({"ms": 1}).encode()
    t0 = time.monotonic()
    acks = [
        await js.publish_async(
            f"tasks.{namespace}.{pool}.burst",
            body,
            headers=task_headers(task_id=f"{pool}-burst-{i}", created_at=now),
        )
        for i in range(size)
    ]
    await asyncio.gather(*acks)
    while True:
        _, woke = deployments.get(deployment)
        if woke is not None and woke >= t0:
            break
        if time.monotonic() - t0 > 60:
            raise TimeoutError(f"{deployment} never scaled up after a burst of {size}")
        await asyncio.sleep(0.01)
    await js.purge_stream(stream)
    return woke - t0


async def trickle(js: Any, namespace: str, pools: list[str], rate: float, task_ms: int) -> None:
    """``rate`` tasks/s to each pool, evenly spaced, until cancelled."""
    body = json.dumps({"ms": task_ms}).encode()
    sent = 0
    start = time.monotonic()
    while True:
        now = datetime.now(UTC)
        for pool in pools:
            await js.publish(
                f"tasks.{namespace}.{pool}.busy",
                body,
                headers=task_headers(task_id=f"{pool}-busy-{sent}", created_at=now),
            )
        sent += 1
        await asyncio.sleep(max(0.0, start + sent / rate - time.monotonic()))


async def backlog(js: Any, stream: str) -> int:
    info = await js.consumer_info(stream, "workers")
    return int(info.num_pending)


@dataclass
class ModeRun:
    """One mode's scenario on its own bed; each phase fills part of ``result``."""

    args: Any
    source: OperatorSource
    result: ModeResult
    parts: Bed
    namespace: str
    pid: int
    js: Any
    pools: PoolWatch
    deployments: DeploymentWatch
    sampler: Sampler
    pods_dir: Path
    """Where the busy pools' worker processes run and log (replaced by each run)."""

    @property
    def label(self) -> str:
        return f"[{self.result.mode}]"

    @property
    def cluster(self) -> Cluster:
        assert self.parts.cluster is not None
        return self.parts.cluster

    async def converge(self, nats_url: str) -> None:
        args, result = self.args, self.result
        manifest = json.dumps(pool_list(args.pools, args.busy, nats_url))
        log.info("%s applying %d pools in one List", self.label, args.pools)
        argv = [kubectl_binary(), "--kubeconfig", str(self.cluster.kubeconfig), "apply"]
        argv += ["--server-side", "--field-manager=jetpool-bench", "-n", self.namespace, "-f", "-"]
        before = await asyncio.to_thread(self.sampler.snapshot, {})
        t_apply, cpu_apply = time.monotonic(), cpu_seconds(self.pid)
        proc = await asyncio.to_thread(
            subprocess.run, argv, input=manifest, capture_output=True, text=True, timeout=1200
        )
        applied = time.monotonic()
        if proc.returncode != 0:
            raise RuntimeError(f"kubectl apply failed: {proc.stderr[-2000:]}")
        result.apply_seconds = applied - t_apply
        log.info("%s apply returned after %.1f s", self.label, result.apply_seconds)
        last = await wait_converged(self.pools, args.pools, applied, args.converge_timeout)
        times = self.pools.converged_times()
        result.converged = len(times)
        result.converged_at_apply_return = sum(t <= applied for t in times)
        after_apply = [max(0.0, t - applied) for t in times]
        result.converge_p50_seconds = median(after_apply)
        result.converge_percentiles = {
            f"p{q}": percentile(after_apply, q) for q in (10, 25, 50, 75, 90, 99, 100)
        }
        if last is not None:
            result.converge_seconds = max(0.0, last - applied)
        result.converge_operator_cpu_cores = (cpu_seconds(self.pid) - cpu_apply) / (
            time.monotonic() - t_apply
        )
        after = await asyncio.to_thread(self.sampler.snapshot, {})
        writes = delta(after.writes, before.writes)
        result.converge_writes_by_kind = dict(sorted(writes.items(), key=lambda kv: -kv[1]))
        result.converge_events_by_kind = new_events(before, after)

    async def idle(self) -> None:
        self.result.idle_settle_seconds = await wait_settled(
            self.deployments, self.args.pools, f"{self.label} settling"
        )
        log.info("%s settling %.0f s more", self.label, self.args.settle_seconds)
        await asyncio.sleep(self.args.settle_seconds)
        self.result.idle = await self.sampler.window(
            self.args.idle_seconds, f"{self.label} idle window"
        )
        log.info("%s idle: %s", self.label, short(self.result.idle))

    async def bursts(self) -> None:
        args = self.args
        burst_pools = [pool_name(i) for i in range(args.busy, args.busy + args.bursts)]
        for index, pool in enumerate(burst_pools):
            try:
                seconds = await burst(
                    self.js,
                    self.deployments,
                    self.namespace,
                    pool,
                    self.pools.stream(pool),
                    args.burst_size,
                )
            except (RuntimeError, TimeoutError) as exc:
                log.warning("%s burst %d failed: %s", self.label, index + 1, exc)
                continue
            self.result.bursts_seconds.append(seconds)
            log.info(
                "%s burst %d/%d: scale-up after %.2f s",
                self.label,
                index + 1,
                len(burst_pools),
                seconds,
            )
            # A random gap, so bursts do not keep one phase against a 1 s loop.
            await asyncio.sleep(args.burst_gap + random.random())
        started = time.monotonic()
        while any(self.deployments.get(f"{p}-worker")[0] for p in burst_pools):
            if time.monotonic() - started > 120:
                log.warning("%s burst pools still not back at zero replicas", self.label)
                break
            await asyncio.sleep(0.5)

    async def busy(self) -> None:
        args = self.args
        busy_pools = [pool_name(i) for i in range(args.busy)]
        streams = [self.pools.stream(p) for p in busy_pools]
        runner = self.parts.runner = PodRunner(
            kubeconfig=str(self.cluster.kubeconfig),
            extra_env={
                "PYTHONPATH": os.pathsep.join([*self.source.pythonpath, str(REPO)]),
                "JETPOOL_LOG_FORMAT": "text",
            },
            workdir=self.pods_dir,
        ).start()
        publisher = asyncio.create_task(
            trickle(self.js, self.namespace, busy_pools, args.busy_rate, args.task_ms)
        )
        try:
            started = time.monotonic()
            while True:
                pending = [await backlog(self.js, s) for s in streams]
                working = len(runner.running_pods(self.namespace))
                asked = [self.deployments.get(f"{p}-worker")[0] for p in busy_pools]
                if (
                    working == args.busy
                    and all(r == 1 for r in asked)
                    and max(pending) <= 2 * args.busy_rate
                ):
                    break
                if time.monotonic() - started > 180:
                    raise TimeoutError(
                        f"busy pools not drained: {working} worker processes, backlogs {pending}"
                    )
                log.info(
                    "%s busy warm-up: %d/%d worker processes, max backlog %d",
                    self.label,
                    working,
                    args.busy,
                    max(pending),
                )
                await asyncio.sleep(2)
            await wait_settled(self.deployments, args.pools, f"{self.label} settling")
            await asyncio.sleep(args.settle_seconds)
            self.result.busy = await self.sampler.window(
                args.busy_seconds, f"{self.label} busy window"
            )
            log.info("%s busy: %s", self.label, short(self.result.busy))
        finally:
            publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await publisher


async def run_mode(args: Any, result: ModeResult, logs: Path, source: OperatorSource) -> None:
    """The whole scenario in one mode, on a bed of its own (removed afterwards)."""
    mode = result.mode
    namespace = f"opscale-{mode}"
    if args.reuse_cluster:  # a shared cluster may hold an earlier run's namespace
        namespace += f"-{int(time.time())}"
    with bed(args) as parts:
        cluster = parts.cluster
        assert cluster is not None
        await asyncio.to_thread(cluster.kubectl, "apply", "--server-side", "-k", str(REPO / "crds"))
        await asyncio.to_thread(
            eventually,
            lambda: cluster.kubectl(
                "wait", "--for=condition=Established", "crd/workerpools.jetpool.dev"
            ),
            timeout=60,
            what="the WorkerPool CRD",
        )
        # Served, not only established: an operator started earlier logs a 429 "storage is
        # (re)initializing" from its first list, which is the test bed's, not the operator's.
        await asyncio.to_thread(
            eventually,
            lambda: cluster.kubectl("get", "workerpools", "-A") is not None,
            timeout=60,
            what="WorkerPools served",
        )
        await asyncio.to_thread(cluster.kubectl, "create", "namespace", namespace)
        server = parts.server = NatsServer().start()
        log_path = logs / f"{mode}-operator.log"
        log_path.unlink(missing_ok=True)
        result.operator_log = str(
            log_path.relative_to(REPO) if log_path.is_relative_to(REPO) else log_path
        )
        result.revision = source.revision if source.pythonpath else git("describe", "--dirty")
        env = {OBSERVATION_ENV: mode}
        if source.pythonpath:
            env["PYTHONPATH"] = os.pathsep.join(source.pythonpath)
        operator = parts.operator = OperatorProcess(cluster, log_path=log_path, env=env).start()
        assert operator.process is not None
        pid = operator.process.pid
        log.info("[%s] operator pid %d, nats %s", mode, pid, server.url)
        pools = PoolWatch(cluster, namespace)
        deployments = DeploymentWatch(cluster, namespace)
        parts.watches += [pools.watch.start(), deployments.watch.start()]
        nc = await nats.connect(server.url, name="jetpool-bench")
        run = ModeRun(
            args,
            source,
            result,
            parts,
            namespace,
            pid,
            nc.jetstream(),
            pools,
            deployments,
            Sampler(cluster, operator.process, server, nc, pools),
            fresh_dir(logs / f"{mode}-pods"),
        )
        try:
            await guarded(operator.process, run.converge(server.url))
            await guarded(operator.process, run.idle())
            await guarded(operator.process, run.bursts())
            if args.busy:
                await guarded(operator.process, run.busy())
        finally:
            with contextlib.suppress(ValueError, OSError):  # gone already: no memory figures
                result.operator_peak_rss_mb = peak_rss_bytes(pid) / 2**20
            # What the operator logged under test, not while it is stopped (its NATS
            # connection going away, say).
            scan_log(log_path.read_text(errors="replace"), result)
            await nc.close()
            if args.reuse_cluster:  # the operator removes its finalizers, then the namespace goes
                await asyncio.to_thread(
                    cluster.kubectl,
                    "delete",
                    "workerpools",
                    "--all",
                    "-n",
                    namespace,
                    "--timeout=300s",
                    check=False,
                )
                await asyncio.to_thread(
                    cluster.kubectl, "delete", "namespace", namespace, "--wait=false", check=False
                )


def short(window: Window) -> str:
    return (
        f"CPU {window.operator_cpu_cores:.3f} cores, RSS {window.operator_rss_mb:.0f} MB, "
        f"JS API {window.js_api_per_s:.1f}/s, "
        f"operator msgs {window.operator_msgs_sent_per_s:.1f}/s, "
        f"apiserver writes {window.apiserver_writes_per_min:.0f}/min "
        f"({window.apiserver_writes_no_heartbeats_per_min:.0f} without heartbeats)"
    )


# ---------------------------------------------------------------------------- report


def figures(result: ModeResult) -> dict[str, float]:
    """The summary figures of one mode (``nan`` for what was not measured)."""
    nan = math.nan
    idle, busy = result.idle, result.busy
    bursts = result.bursts_seconds
    return {
        "converge_s": result.converge_seconds,
        "converge_from_start_s": result.apply_seconds + result.converge_seconds,
        "converge_p50_s": result.converge_p50_seconds,
        "apply_s": result.apply_seconds,
        "cpu_converge_cores": result.converge_operator_cpu_cores,
        "kcm_settle_s": result.idle_settle_seconds,
        "converge_writes_per_pool": sum(
            v for k, v in result.converge_writes_by_kind.items() if not heartbeat(k)
        )
        / result.pools
        if result.converge_writes_by_kind
        else nan,
        "rss_idle_mb": idle.operator_rss_mb if idle else nan,
        "rss_peak_mb": result.operator_peak_rss_mb,
        "cpu_idle_cores": idle.operator_cpu_cores if idle else nan,
        "cpu_idle_peak_cores": max(idle.operator_cpu_cores_by_10s, default=nan) if idle else nan,
        "cpu_busy_cores": busy.operator_cpu_cores if busy else nan,
        "js_api_idle_per_s": idle.js_api_per_s if idle else nan,
        "js_api_busy_per_s": busy.js_api_per_s if busy else nan,
        "nats_msgs_idle_per_s": idle.operator_msgs_sent_per_s if idle else nan,
        "nats_msgs_busy_per_s": busy.operator_msgs_sent_per_s if busy else nan,
        "nats_server_cpu_idle_cores": idle.nats_server_cpu_cores if idle else nan,
        "writes_idle_per_min": idle.apiserver_writes_per_min if idle else nan,
        "writes_idle_quiet_per_min": idle.apiserver_writes_no_heartbeats_per_min if idle else nan,
        "writes_busy_per_min": busy.apiserver_writes_per_min if busy else nan,
        "writes_busy_quiet_per_min": busy.apiserver_writes_no_heartbeats_per_min if busy else nan,
        "drops_idle": float(idle.condition_drops) if idle else nan,
        "drops_busy": float(busy.condition_drops) if busy else nan,
        "burst_median_s": median(bursts),
        "burst_max_s": max(bursts) if bursts else nan,
    }


ROWS: list[tuple[str, str, str]] = [
    ("converge_s", "converge: apply returned -> all Ready+NatsReady (s)", "<= 30"),
    ("converge_from_start_s", "converge: apply started -> all Ready+NatsReady (s)", ""),
    ("converge_p50_s", "converge: median pool, after apply returned (s)", ""),
    ("apply_s", "kubectl apply of the List (s)", ""),
    ("cpu_converge_cores", "operator CPU, apply -> converged (cores)", ""),
    ("kcm_settle_s", "then controller-manager catching up (s)", ""),
    ("converge_writes_per_pool", "apiserver writes per pool, apply -> converged (all clients)", ""),
    ("rss_idle_mb", "operator RSS, idle (MB)", "<= 250"),
    ("rss_peak_mb", "operator peak RSS, whole run (MB)", "<= 250"),
    ("cpu_idle_cores", "operator CPU, idle (cores)", "<= 0.1"),
    ("cpu_idle_peak_cores", "  busiest 10 s of the idle window (cores)", ""),
    ("cpu_busy_cores", "operator CPU, k busy (cores)", ""),
    ("js_api_idle_per_s", "JetStream API requests/s, idle", ""),
    ("js_api_busy_per_s", "JetStream API requests/s, k busy", ""),
    ("nats_msgs_idle_per_s", "operator NATS msgs sent/s, idle", ""),
    ("nats_msgs_busy_per_s", "operator NATS msgs sent/s, k busy", ""),
    ("nats_server_cpu_idle_cores", "nats-server CPU, idle (cores)", ""),
    ("writes_idle_per_min", "apiserver writes/min, idle", ""),
    ("writes_idle_quiet_per_min", "  without node/lease heartbeats", ""),
    ("writes_busy_per_min", "apiserver writes/min, k busy", ""),
    ("writes_busy_quiet_per_min", "  without node/lease heartbeats", ""),
    ("drops_idle", "Ready/NatsReady True -> not True, idle window", "0"),
    ("drops_busy", "Ready/NatsReady True -> not True, busy window", "0"),
    ("burst_median_s", "burst -> spec.replicas > 0, median (s)", "<= 2"),
    ("burst_max_s", "burst -> spec.replicas > 0, max (s)", "<= 2"),
]


def summary_table(results: list[ModeResult], args: Any) -> Table:
    by_mode = {r.mode: figures(r) for r in results}
    modes = [r.mode for r in results]
    columns = ["figure", "goal", *modes]
    both = "batched" in by_mode and "per-pool" in by_mode
    if both:
        columns.append("per-pool / batched")
    rows: list[list[str | int | float | None]] = []
    for key, label, goal in ROWS:
        row: list[str | int | float | None] = [label, goal or "-"]
        row += [by_mode[m][key] for m in modes]
        if both:
            row.append(ratio(by_mode["per-pool"][key], by_mode["batched"][key]))
        rows.append(row)
    converged = ", ".join(f"{r.mode} {r.converged}/{r.pools}" for r in results)
    return Table(
        title=f"{args.pools} pools, {args.busy} busy, one operator (converged: {converged})",
        columns=columns,
        rows=rows,
        note=(
            f"Idle window {args.idle_seconds:g} s, busy window {args.busy_seconds:g} s; "
            f"{args.bursts} bursts of {args.burst_size} "
            f"tasks; busy pools get {args.busy_rate:g} tasks/s of {args.task_ms} ms each. "
            "Each mode on a fresh cluster, nats-server and operator."
        ),
    )


def api_table(results: list[ModeResult]) -> Table:
    rows: list[list[str | int | float | None]] = []
    for r in results:
        for phase, window in (("idle", r.idle), ("busy", r.busy)):
            if window is None:
                continue
            kinds = window.js_api_by_kind_per_s
            top = ", ".join(f"{k} {v:.1f}" for k, v in list(kinds.items())[:4]) or "-"
            writes = window.apiserver_writes_by_kind_per_min
            top_writes = ", ".join(f"{k} {v:.1f}" for k, v in list(writes.items())[:5]) or "-"
            events = window.k8s_events_by_reason_per_min
            top_events = ", ".join(f"{k} {v:.1f}" for k, v in list(events.items())[:4]) or "-"
            rows.append([r.mode, phase, top, top_writes, top_events])
    return Table(
        title="What the requests were",
        columns=[
            "mode",
            "window",
            "$JS.API requests/s by kind",
            "apiserver writes/min by kind",
            "Events/min by component and reason",
        ],
        rows=rows,
        note="MSG.NEXT are the busy workers' pull requests, not the operator's.",
    )


def log_table(results: list[ModeResult]) -> Table:
    rows: list[list[str | int | float | None]] = [
        [
            r.mode,
            r.operator_log_errors,
            r.operator_log_warnings,
            " / ".join(r.operator_log_samples[:3]) or "-",
            " / ".join(r.operator_log_warning_samples[:3]) or "-",
            r.error or "-",
        ]
        for r in results
    ]
    return Table(
        title="Operator log (until the bench stops it)",
        columns=[
            "mode",
            "ERROR lines",
            "WARNING lines",
            "first errors",
            "first warnings",
            "bench stopped early",
        ],
        rows=rows,
    )


def git(*args: str) -> str:
    out = subprocess.run(
        ["git", "-C", str(REPO), *args], capture_output=True, text=True, check=False
    )
    return out.stdout.strip()


@dataclass(frozen=True)
class OperatorSource:
    """The operator (and worker) code every mode runs."""

    revision: str
    pythonpath: list[str]
    """Put before everything else on the operator's and the workers' PYTHONPATH ([] for the
    working tree, which the venv's editable install serves)."""
    reads_observation: bool
    """Whether that code mentions JETPOOL_OBSERVATION at all (if not, every mode ran the same
    code)."""
    note: str


def operator_source(kind: str, scratch: Path) -> OperatorSource:
    """``head``: a copy of the committed operator/ and worker/ (``git archive HEAD``), the
    same for every mode however the shared working tree changes meanwhile; ``worktree``: the
    working tree as each mode's processes find it."""
    if kind == "worktree":
        root = REPO
        revision = git("describe", "--always", "--dirty") or "unknown"
        pythonpath: list[str] = []
        note = "the working tree, as each mode found it"
    else:
        revision = git("rev-parse", "--short", "HEAD")
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", "HEAD", "operator", "worker"],
            capture_output=True,
            check=True,
        )
        subprocess.run(["tar", "-x", "-C", str(scratch)], input=archive.stdout, check=True)
        root = scratch
        pythonpath = [str(scratch / "operator"), str(scratch / "worker")]
        probe = subprocess.run(
            [sys.executable, "-c", "import jetpool_operator; print(jetpool_operator.__file__)"],
            env={**os.environ, "PYTHONPATH": os.pathsep.join(pythonpath)},
            capture_output=True,
            text=True,
            check=True,
        )
        if not probe.stdout.strip().startswith(str(scratch)):
            raise RuntimeError(f"the copy of HEAD is not what imports: {probe.stdout!r}")
        dirty = git("status", "--porcelain", "--", "operator", "worker")
        note = f"HEAD ({revision})" + (
            ", without the uncommitted changes of operator/ and worker/" if dirty else ""
        )
    reads = any(
        OBSERVATION_ENV in path.read_text(errors="replace")
        for path in (root / "operator" / "jetpool_operator").rglob("*.py")
    )
    return OperatorSource(revision, pythonpath, reads, note)


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--pools", type=int, default=1000, help="WorkerPools (N)")
    p.add_argument("--busy", type=int, default=10, help="pools kept busy in the busy window (k)")
    p.add_argument("--modes", default="batched,per-pool", help="JETPOOL_OBSERVATION values")
    p.add_argument(
        "--idle-seconds",
        type=float,
        default=330.0,
        help="idle window; longer than the operator's slowest periodic work (300 s)",
    )
    p.add_argument("--busy-seconds", type=float, default=60.0, help="busy window")
    p.add_argument("--settle-seconds", type=float, default=15.0, help="wait before a window")
    p.add_argument("--bursts", type=int, default=5, help="burst -> scale-up measurements")
    p.add_argument("--burst-size", type=int, default=20, help="tasks per burst")
    p.add_argument("--burst-gap", type=float, default=2.0, help="seconds between bursts")
    p.add_argument("--busy-rate", type=float, default=5.0, help="tasks/s to each busy pool")
    p.add_argument("--task-ms", type=int, default=300, help="duration of a busy task")
    p.add_argument(
        "--converge-timeout", type=float, default=600.0, help="give up converging after (s)"
    )
    p.add_argument("--cluster-name", default="jetpool-opscale", help="kwok cluster to start")
    p.add_argument(
        "--operator-source",
        choices=["head", "worktree"],
        default="head",
        help="run the committed operator (a copy of HEAD, the same for every mode) or the "
        "working tree",
    )
    p.add_argument(
        "--reuse-cluster",
        action="store_true",
        help="use the cluster JETPOOL_KUBECONFIG names instead of starting one per mode",
    )
    args = p.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    unknown = set(modes) - set(MODES)
    if unknown or not modes:
        p.error(f"--modes takes {', '.join(MODES)}; got {args.modes!r}")
    if args.busy + args.bursts > args.pools:
        p.error("--busy + --bursts must not exceed --pools")
    cli_logging()
    started = time.monotonic()
    out: Path = args.out
    logs = out / "operator_scale"
    logs.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="jetpool-opscale-src-"))
    results = [ModeResult(mode=mode, pools=args.pools) for mode in modes]
    try:
        source = operator_source(args.operator_source, scratch)
        log.info("operator code: %s", source.note)
        if not source.reads_observation:
            log.warning(
                "the operator does not read %s: every mode runs the same code", OBSERVATION_ENV
            )
        for mode_result in results:
            try:
                asyncio.run(run_mode(args, mode_result, logs, source))
            except Exception as exc:  # the other mode still runs; the report says what failed
                log.exception("[%s] failed", mode_result.mode)
                mode_result.error = f"{type(exc).__name__}: {exc}"[:500]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    reads = source.reads_observation

    tables = [summary_table(results, args), api_table(results), log_table(results)]
    about = (
        f"One operator process, {args.pools} WorkerPools (`minReplicas: 0`) applied as one "
        "`kubectl apply` of a List, on the local test bed (real kube-apiserver, etcd, kwok, "
        f"nats-server; {args.busy} pools get process-backed workers in the busy window). "
        f"Modes are `{OBSERVATION_ENV}` values, each on a fresh cluster; the ratio column is "
        "per-pool ÷ batched. Method and discussion: bench/operator_scale.md. "
        + (
            ""
            if reads
            else f"**The operator measured did not read `{OBSERVATION_ENV}`: both modes ran "
            "the same code.** "
        )
        + f"Operator code: {source.note}."
    )
    result = Result(
        name="operator_scale",
        title="Operator at scale: N pools, one operator",
        about=about,
        command=command_line(),
        tables=tables,
    )
    finish(result, out, started)
    (out / "operator_scale.md").write_text(render_result(result) + "\n")
    raw = {
        "revision": source.revision,
        "operator_source": source.note,
        "operator_reads_observation_env": reads,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "modes": [asdict(r) for r in results],
        "figures": {r.mode: figures(r) for r in results},
    }
    (logs / "raw.json").write_text(json.dumps(raw, indent=1, allow_nan=True) + "\n")
    log.info("markdown in %s, raw figures and operator logs in %s", out / "operator_scale.md", logs)


if __name__ == "__main__":
    main()
