"""Beyond one operator (issue #11.2): shards that never both act on a pool, and the HA standby
taking over from a SIGKILLed active replica.

Real operator processes (``jetpool-operator``) against the local test bed, each with its own
``/metrics``: a pool a process reconciles shows up in its ``jetpool_operator_reconciles_total``
(the series is dropped again when that pool's loop stops). The operators here are started by
the tests themselves, with shard selectors unique to the test, so pools of other tests are never
theirs; on kind the operator is the chart's and these tests are skipped.
"""

from __future__ import annotations

import asyncio
import re
import signal
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from e2e.testbed.cluster import Cluster, eventually
from e2e.testbed.operator_process import OperatorProcess
from jetpool_protocol.envelope import task_headers
from tests.e2e.conftest import (
    PROVIDER,
    SHARD_LABEL,
    NatsEndpoint,
    extra_namespace,
    pool_manifest,
    wait_for_condition,
)

pytestmark = [
    pytest.mark.kube,
    pytest.mark.nats,
    pytest.mark.e2e,
    pytest.mark.skipif(PROVIDER != "local", reason="starts operator processes on this machine"),
]

SHARD = SHARD_LABEL
FINALIZER = "jetpool.dev/finalizer"
_SERIES = re.compile(r"^(\w+)\{([^}]*)\} (\S+)$")
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def series(operator: OperatorProcess, metric: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Every series of ``metric`` on the operator's /metrics: sorted labels -> value."""
    out = {}
    for line in operator.metrics().splitlines():
        match = _SERIES.match(line)
        if match and match.group(1) == metric:
            out[tuple(sorted(_LABEL.findall(match.group(2))))] = float(match.group(3))
    return out


def reconciled_pools(operator: OperatorProcess) -> dict[tuple[str, str], float]:
    """(namespace, pool) -> control-loop ticks, as this operator's /metrics has them now."""
    ticks: dict[tuple[str, str], float] = {}
    for labels, value in series(operator, "jetpool_operator_reconciles_total").items():
        found = dict(labels)
        key = (found["namespace"], found["pool"])
        ticks[key] = ticks.get(key, 0.0) + value
    return ticks


def scaled_up(operator: OperatorProcess, namespace: str, pool: str) -> float:
    return sum(
        value
        for labels, value in series(operator, "jetpool_operator_scale_events_total").items()
        if dict(labels).get("namespace") == namespace
        and dict(labels).get("pool") == pool
        and dict(labels).get("direction") == "up"
    )


class Sampler:
    """Reads each operator's /metrics every half second in a thread: which pools each one ever
    ran a tick for, between :meth:`mark` calls (a pool's series vanishes when its loop stops,
    so a single late look could miss a tick)."""

    def __init__(self, operators: dict[str, OperatorProcess]) -> None:
        self.operators = operators
        self.seen: dict[str, set[tuple[str, str]]] = {name: set() for name in operators}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self.sample()

    def sample(self) -> None:
        for name, operator in self.operators.items():
            try:
                pools = set(reconciled_pools(operator))
            except OSError:
                continue  # a killed or restarting operator
            with self._lock:
                self.seen[name] |= pools

    def mark(self) -> dict[str, set[tuple[str, str]]]:
        """What was seen since the last mark (one last sample included); starts afresh."""
        self.sample()
        with self._lock:
            seen, self.seen = self.seen, {name: set() for name in self.operators}
        return seen

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)


def labelled(manifest: dict[str, Any], shard: str | None) -> dict[str, Any]:
    if shard is not None:
        manifest["metadata"]["labels"] = {SHARD: shard}
    return manifest


def pool_json(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    return cluster.get_json("workerpool", name, "-n", namespace)


def deployment_replicas(cluster: Cluster, namespace: str, name: str) -> int | None:
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
    return int(out) if out else None


def mentions(operator: OperatorProcess, namespace: str, name: str) -> list[str]:
    """Log lines of the operator naming the pool (kopf's text log prefixes every line about an
    object with ``[namespace/name]``; with --verbose it logs every event it processes)."""
    return [line for line in operator.logs().splitlines() if f"{namespace}/{name}" in line]


def untouched(pool: dict[str, Any]) -> bool:
    """No operator ever acted on the pool: no status, no finalizer, no kopf annotation."""
    meta = pool["metadata"]
    annotations = meta.get("annotations") or {}
    return (
        not pool.get("status")
        and not meta.get("finalizers")
        and not [a for a in annotations if a.startswith("jetpool.dev/")]
    )


def delete_pools(cluster: Cluster, *namespaces: str) -> None:
    """Delete the test's pools while their operators still run: each carries the operator's
    finalizer, which only a running operator of its shard removes (or the namespace would stay
    Terminating)."""
    for ns in namespaces:
        cluster.kubectl(
            "delete", "workerpools", "--all", "-n", ns, "--wait=true", "--timeout=60s", check=False
        )


@pytest.fixture
def second_namespace(cluster: Cluster, nats_endpoint: NatsEndpoint) -> Iterator[str]:
    with extra_namespace(cluster, nats_endpoint) as name:
        yield name


# -- label-selector shards --------------------------------------------------------------------


@pytest.mark.usefixtures("crds")
def test_label_shards_act_only_on_their_own_pools_and_hand_over_a_relabelled_one(
    cluster: Cluster, namespace: str, nats_endpoint: NatsEndpoint
) -> None:
    blue, green = f"blue-{namespace}", f"green-{namespace}"
    operators = {
        shard: OperatorProcess(
            cluster, args=("--standalone", "--verbose", "--shard-selector", f"{SHARD}={shard}")
        ).start()
        for shard in (blue, green)
    }
    url = nats_endpoint.pod_url
    try:
        with Sampler(operators) as sampler:
            # "stray" is labelled for a shard no operator runs (unlabelled, the suite's own
            # operator would take it)
            stray = f"nobody-{namespace}"
            for name, shard in (("b1", blue), ("mover", blue), ("g1", green), ("stray", stray)):
                cluster.apply(labelled(pool_manifest(name, url), shard), "-n", namespace)
            for name in ("b1", "mover", "g1"):
                wait_for_condition(cluster, namespace, name, "Ready", "True")
            eventually(
                lambda: (
                    {("b1", blue), ("mover", blue), ("g1", green)}
                    <= {(p, s) for s, seen in sampler.mark().items() for _, p in seen}
                ),
                what="each shard ticking for its pools",
            )
            time.sleep(3)  # more ticks, more chances to catch a trespasser
            seen = sampler.mark()
            ours = {name for ns, name in seen[blue] if ns == namespace}
            theirs = {name for ns, name in seen[green] if ns == namespace}
            assert ours == {"b1", "mover"}, seen
            assert theirs == {"g1"}, seen

            # The other shard never even received these pools: its log (kopf, --verbose, logs
            # every event of every object it watches) never names them.
            for name in ("b1", "mover"):
                assert not mentions(operators[green], namespace, name)
            assert not mentions(operators[blue], namespace, "g1")
            for name in ("b1", "mover", "g1"):
                assert pool_json(cluster, namespace, name)["metadata"]["finalizers"] == [FINALIZER]
            # A pool no selector matches is nobody's: no status, finalizer or annotation at all.
            assert untouched(pool_json(cluster, namespace, "stray"))

            # Move a pool to the other shard: blue stops its loop, green starts one.
            cluster.kubectl(
                "label", "workerpool", "mover", "-n", namespace, f"{SHARD}={green}", "--overwrite"
            )
            eventually(
                lambda: any(
                    "left this operator's view" in line
                    for line in mentions(operators[blue], namespace, "mover")
                ),
                what="blue releasing the relabelled pool",
            )
            eventually(
                lambda: (namespace, "mover") not in reconciled_pools(operators[blue]),
                what="blue's series of the moved pool dropped (its loop stopped)",
            )
            eventually(
                lambda: reconciled_pools(operators[green]).get((namespace, "mover"), 0) > 0,
                what="green ticking for the moved pool",
            )
            sampler.mark()

            # An edit after the move is carried out by the new owner alone.
            before = reconciled_pools(operators[green])[(namespace, "mover")]
            edited = labelled(pool_manifest("mover", url), green)
            edited["spec"]["scaling"]["minReplicas"] = 2
            cluster.apply(edited, "-n", namespace)
            eventually(
                lambda: deployment_replicas(cluster, namespace, "mover") == 2,
                what="the moved pool's edit carried out",
            )
            pool = eventually(
                lambda: (
                    (p := pool_json(cluster, namespace, "mover"))["status"].get(
                        "observedGeneration"
                    )
                    == p["metadata"]["generation"]
                    and p
                ),
                what="the moved pool's status up to date",
            )
            assert pool["metadata"]["finalizers"] == [FINALIZER]  # green's now; nobody fought
            assert reconciled_pools(operators[green])[(namespace, "mover")] > before
            time.sleep(2)
            seen = sampler.mark()
            assert (namespace, "mover") not in seen[blue], seen
            assert (namespace, "mover") in seen[green], seen
            assert not [
                line
                for line in mentions(operators[blue], namespace, "mover")
                if "control loop tick failed" in line
            ]

            # The new owner also handles its deletion (the finalizer is its to remove).
            cluster.kubectl("delete", "workerpool", "mover", "-n", namespace, "--wait=false")
            eventually(
                lambda: (
                    not cluster.kubectl(
                        "get",
                        "workerpool",
                        "mover",
                        "-n",
                        namespace,
                        "--ignore-not-found",
                        "-o",
                        "name",
                    ).strip()
                ),
                what="the moved pool deleted by its new owner",
            )
    finally:
        delete_pools(cluster, namespace)
        for operator in operators.values():
            operator.stop()


# -- namespace shards -------------------------------------------------------------------------


@pytest.mark.usefixtures("crds")
def test_namespace_shards_act_only_on_their_own_namespace(
    cluster: Cluster, namespace: str, second_namespace: str, nats_endpoint: NatsEndpoint
) -> None:
    first, second = namespace, second_namespace
    operators = {
        ns: OperatorProcess(cluster, args=("--standalone", "--verbose", "--namespace", ns)).start()
        for ns in (first, second)
    }
    try:
        with Sampler(operators) as sampler:
            for ns in (first, second):  # labelled: the suite's own operator leaves it alone
                pool = labelled(pool_manifest("p", nats_endpoint.pod_url), "by-namespace")
                cluster.apply(pool, "-n", ns)
            for ns in (first, second):
                wait_for_condition(cluster, ns, "p", "Ready", "True")
            eventually(
                lambda: all(
                    reconciled_pools(operators[ns]).get((ns, "p"), 0) >= 1 for ns in (first, second)
                ),
                what="each shard ticking for its pool",
            )
            seen = sampler.mark()
            assert seen[first] == {(first, "p")}, seen
            assert seen[second] == {(second, "p")}, seen
            assert not mentions(operators[first], second, "p")
            assert not mentions(operators[second], first, "p")
    finally:
        delete_pools(cluster, first, second)
        for operator in operators.values():
            operator.stop()


# -- HA: the standby takes over ---------------------------------------------------------------


async def publish_burst(endpoint: NatsEndpoint, subject: str, count: int) -> None:
    nc = await endpoint.connect()
    js = nc.jetstream()
    now = datetime.now(UTC)
    await asyncio.gather(
        *(
            js.publish(subject, b"{}", headers=task_headers(task_id=f"b{i}", created_at=now))
            for i in range(count)
        )
    )
    await nc.close()


@pytest.mark.usefixtures("crds")
async def test_the_standby_takes_over_when_the_active_operator_is_sigkilled(
    cluster: Cluster, namespace: str, nats_endpoint: NatsEndpoint
) -> None:
    """Two peered replicas of one shard; the active one is SIGKILLed (no goodbye in the peering
    object): the standby resumes once the dead one's keep-alive expires (lifetime 10 s), then
    carries out an edit made after the kill and scales an idle pool up for a burst. The bound
    here is generous; bench/operator_failover.py measures the failover time."""
    peering = f"jetpool-{namespace}"
    shard = f"ha-{namespace}"
    cluster.apply(
        {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": peering}}
    )
    common = ("--peering", peering, "--shard-selector", f"{SHARD}={shard}")
    active = OperatorProcess(cluster, args=(*common, "--priority", "200")).start()
    standby = OperatorProcess(cluster, args=(*common, "--priority", "100")).start()
    url = nats_endpoint.pod_url
    try:
        cluster.apply(labelled(pool_manifest("edited", url), shard), "-n", namespace)
        burst = pool_manifest(
            "burst",
            url,
            scaling={
                "minReplicas": 0,
                "maxReplicas": 4,
                "targetBacklogPerReplica": 25,
                "scaleToZeroDelaySeconds": 5,
            },
        )
        cluster.apply(labelled(burst, shard), "-n", namespace)
        wait_for_condition(cluster, namespace, "edited", "Ready", "True")
        eventually(
            lambda: (
                pool_json(cluster, namespace, "burst").get("status", {}).get("nats")
                and pool_json(cluster, namespace, "burst")["status"].get("desiredReplicas") == 0
            ),
            what="the burst pool idle at zero replicas",
        )
        eventually(lambda: active.reconciles() >= 2, what="the active replica reconciling")
        assert standby.reconciles() == 0, standby.logs()[-2000:]

        active.stop(signal.SIGKILL)
        killed = time.monotonic()
        edited = labelled(pool_manifest("edited", url), shard)
        edited["spec"]["scaling"]["minReplicas"] = 2
        cluster.apply(edited, "-n", namespace)
        await publish_burst(nats_endpoint, f"tasks.{namespace}.burst.job", 100)

        eventually(lambda: standby.reconciles() > 0, timeout=90, what="the standby reconciling")
        took_over = time.monotonic() - killed
        eventually(
            lambda: deployment_replicas(cluster, namespace, "edited") == 2,
            timeout=60,
            what="the edit made after the kill carried out by the standby",
        )
        eventually(
            lambda: (
                (deployment_replicas(cluster, namespace, "burst") or 0) >= 2
                and scaled_up(standby, namespace, "burst") >= 1
            ),
            timeout=60,
            what="the standby scaling the idle pool up for the burst",
        )
        scaled = time.monotonic() - killed
        ticks = reconciled_pools(standby)
        assert ticks.get((namespace, "edited"), 0) > 0, ticks
        assert ticks.get((namespace, "burst"), 0) > 0, ticks
        # The dead replica's record expired and the standby cleaned it away.
        peers = eventually(
            lambda: (
                (records := cluster.get_json("clusterkopfpeering", peering).get("status") or {})
                and all(r.get("priority") == 100 for r in records.values())
                and records
            ),
            timeout=30,
            what="the dead peer's record removed",
        )
        assert len(peers) == 1, peers
        print(f"failover: standby reconciling {took_over:.1f} s, scaled {scaled:.1f} s after kill")
    finally:
        delete_pools(cluster, namespace)
        standby.stop()
        active.stop()
        cluster.kubectl("delete", "clusterkopfpeering", peering, "--wait=false", check=False)
