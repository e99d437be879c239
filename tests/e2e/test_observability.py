"""Observability out of the box, on real containers: the images' OpenTelemetry SDK sends a
task's spans from the publisher through the worker pod to its handler as one trace (read back
from a real Jaeger), the operator pod traces its reconcile ticks, and a real Prometheus,
configured from the chart's ServiceMonitor and PodMonitor, has data for every dashboard query.

Kind only (``e2e/kind/run.sh``): the claims are about the images and the chart.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from e2e.testbed.cluster import Cluster, eventually
from e2e.testbed.jaeger import Jaeger, Span
from e2e.testbed.prometheus import ApiServerProxy, Prometheus, scrape_configs
from jetpool import Client
from tests.e2e.conftest import PROVIDER, NatsEndpoint
from tests.e2e.test_real_containers import OPERATOR_NAMESPACE, RELEASE, install_chart
from tests.e2e.test_scaling_and_breaker import status, wait_until, worker_pool

pytestmark = [
    pytest.mark.kube,
    pytest.mark.nats,
    pytest.mark.e2e,
    pytest.mark.skipif(PROVIDER != "kind", reason="needs the images and the chart (kind)"),
]

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "charts" / "jetpool" / "files" / "dashboards" / "jetpool.json"
SCRAPE_INTERVAL = "2s"
SCRAPE_TIMEOUT = "1500ms"


def docker_gateway() -> str:
    """The kind network's IPv4 gateway: how a pod reaches a process on this host."""
    configs = json.loads(
        subprocess.run(
            ["docker", "network", "inspect", "kind", "--format", "{{json .IPAM.Config}}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    return next(c["Gateway"] for c in configs if c.get("Gateway") and ":" not in c["Gateway"])


@pytest.fixture(scope="module")
def jaeger() -> Iterator[Jaeger]:
    collector = Jaeger(host="0.0.0.0").start()
    yield collector
    collector.close()


@pytest.fixture(scope="module")
def pod_otlp_endpoint(jaeger: Jaeger) -> str:
    return f"http://{docker_gateway()}:{jaeger.otlp_port}"


@pytest.fixture(scope="module")
def traced_operator(cluster: Cluster, pod_otlp_endpoint: str) -> Iterator[None]:
    """The release upgraded with the chart's tracing values, as a user switches it on."""
    install_chart(
        cluster,
        f"tracing.otlpEndpoint={pod_otlp_endpoint}",
        "tracing.env.OTEL_BSP_SCHEDULE_DELAY=200",
    )
    try:
        yield
    finally:
        install_chart(cluster)


def otel_env(endpoint: str) -> list[dict[str, str]]:
    """What a user puts in a WorkerPool's spec.template.env to trace its workers."""
    return [
        {"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": endpoint},
        {"name": "OTEL_BSP_SCHEDULE_DELAY", "value": "200"},
    ]


def traced_pool(name: str, endpoint: NatsEndpoint, bucket: str, otlp: str, **spec: Any) -> Any:
    manifest = worker_pool(name, endpoint.pod_url, bucket, **spec)
    manifest["spec"]["template"]["env"] += otel_env(otlp)
    return manifest


def ready(cluster: Cluster, namespace: str, name: str) -> None:
    eventually(
        lambda: (status(cluster, namespace, name).get("readyReplicas") or 0) >= 1,
        timeout=180,
        what=f"a ready worker of {name}",
    )


def cli_publish(
    endpoint: NatsEndpoint, subject: str, task_id: str, data: str, env: dict[str, str]
) -> None:
    """``jetpool publish`` as a user runs it, tracing through the standard OTEL_* variables."""
    command = [str(Path(sys.executable).parent / "jetpool"), "publish", subject]
    command += ["--data", data, "--id", task_id, "--nats-url", endpoint.test_url]
    if endpoint.creds_file is not None:
        command += ["--creds", str(endpoint.creds_file)]
    if endpoint.ca_file is not None:
        command += ["--tls-ca", str(endpoint.ca_file)]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        command, env=clean | env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.usefixtures("operator", "traced_operator")
@pytest.mark.timeout(420)
async def test_a_task_is_one_trace_from_the_publisher_through_the_worker_pod_to_its_handler(
    cluster: Cluster,
    namespace: str,
    nats_endpoint: NatsEndpoint,
    record: KeyValue,
    jaeger: Jaeger,
    pod_otlp_endpoint: str,
) -> None:
    name = "traced"
    cluster.apply(
        traced_pool(
            name,
            nats_endpoint,
            f"e2e-{namespace}",
            pod_otlp_endpoint,
            handler="tests.e2e.handlers:lifecycle",
        ),
        "-n",
        namespace,
    )
    ready(cluster, namespace, name)
    nc = await nats_endpoint.connect()
    subject = Client(nc, namespace=namespace, pool=name).default_subject("charge")
    await nc.close()
    task_id = f"traced-{uuid.uuid4().hex[:8]}"
    publisher = {"OTEL_EXPORTER_OTLP_ENDPOINT": jaeger.otlp_endpoint, "OTEL_SERVICE_NAME": "shop"}
    await asyncio.to_thread(
        cli_publish, nats_endpoint, subject, task_id, '{"return": "charged"}', publisher
    )

    async def returned() -> bool:
        if not await _has(record, f"end.{task_id}"):
            return False
        return (await record.get(f"end.{task_id}")).value == b"returned"

    await wait_until(returned, 120, "the handler's own record of the task")

    def whole_trace() -> list[Span]:
        traces = jaeger.trace_ids("shop")
        spans = jaeger.trace(traces[0]) if len(traces) == 1 else []
        return spans if {s.name for s in spans} >= {"jetpool.task", "e2e.lifecycle"} else []

    spans = eventually(whole_trace, timeout=60, interval=0.5, what="the task's whole trace")
    by_name = {s.name: s for s in spans}
    created, task = by_name[f"create {subject}"], by_name["jetpool.task"]
    handler = by_name["e2e.lifecycle"]
    assert (created.service, created.kind, created.parent_id) == ("shop", "producer", None)
    assert (task.service, task.kind) == ("jetpool-worker", "consumer")
    assert task.parent_id == created.span_id
    assert task.tags["messaging.message.id"] == task_id
    assert (handler.service, handler.parent_id) == ("jetpool-worker", task.span_id)

    def reconcile_of_the_pool() -> Span | None:
        for trace_id in jaeger.trace_ids("jetpool-operator", "jetpool.reconcile", limit=200):
            for span in jaeger.trace(trace_id):
                if span.tags.get("jetpool.pool") == name:
                    return span
        return None

    tick = eventually(reconcile_of_the_pool, timeout=60, interval=1, what="a reconcile span")
    assert tick.tags["k8s.namespace.name"] == namespace
    assert "jetpool.desired_replicas" in tick.tags
    print({"trace": [(s.service, s.name) for s in spans], "reconcile": tick.tags})


async def _has(kv: KeyValue, key: str) -> bool:
    try:
        await kv.get(key)
    except KeyNotFoundError:
        return False
    return True


def chart_monitors(cluster: Cluster) -> list[dict[str, Any]]:
    """The release's ServiceMonitor and PodMonitor, rendered from the chart with the values a
    user sets to have prometheus-operator scrape jetpool (interval shortened for the test)."""
    server = json.loads(cluster.kubectl("version", "-o", "json"))["serverVersion"]["gitVersion"]
    rendered = subprocess.run(
        [
            os.environ["JETPOOL_E2E_HELM"],
            "template",
            RELEASE,
            str(REPO / "charts" / "jetpool"),
            *("--namespace", OPERATOR_NAMESPACE, "--kube-version", server),
            *(
                arg
                for monitor in ("serviceMonitor", "podMonitor")
                for arg in (
                    *("--set", f"metrics.{monitor}.enabled=true"),
                    *("--set", f"metrics.{monitor}.interval={SCRAPE_INTERVAL}"),
                    *("--set", f"metrics.{monitor}.scrapeTimeout={SCRAPE_TIMEOUT}"),
                )
            ),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    return [
        doc
        for doc in yaml.safe_load_all(rendered)
        if doc and doc["kind"] in ("ServiceMonitor", "PodMonitor")
    ]


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) for every target, with the dashboard's variables at "All"."""
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        (panel["title"], target["expr"].replace("$namespace", ".*").replace("$pool", ".*"))
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]


@pytest.fixture
def prometheus(cluster: Cluster, tmp_path: Path) -> Iterator[Prometheus]:
    proxy = ApiServerProxy.from_kubeconfig(Path(cluster.kubeconfig), tmp_path)
    server = Prometheus(scrape_configs(chart_monitors(cluster), Path(cluster.kubeconfig), proxy))
    server.start()
    yield server
    server.close()


@pytest.mark.usefixtures("operator")
@pytest.mark.timeout(600)
async def test_prometheus_scraping_through_the_charts_monitors_has_data_for_every_dashboard_query(
    cluster: Cluster,
    namespace: str,
    nats_endpoint: NatsEndpoint,
    record: KeyValue,
    prometheus: Prometheus,
) -> None:
    name = "watched"
    cluster.apply(
        worker_pool(
            name,
            nats_endpoint.pod_url,
            f"e2e-{namespace}",
            handler="tests.e2e.handlers:lifecycle",
            priorities={
                "levels": [{"name": "high", "weight": 9}, {"name": "low", "weight": 1}],
                "default": "low",
            },
            retry={"maxAttempts": 2, "backoff": {"initialSeconds": 0.2, "maxSeconds": 0.5}},
        ),
        "-n",
        namespace,
    )
    # A pool whose NATS cannot be reached: the operator's errors panel has something to show.
    cluster.apply(
        worker_pool("unreachable", "nats://nats.invalid:4222", f"e2e-{namespace}"),
        "-n",
        namespace,
    )
    ready(cluster, namespace, name)
    nc = await nats_endpoint.connect()
    client = Client(nc, namespace=namespace, pool=name)
    work = [
        *({"return": i} for i in range(20)),
        *({"fail_once": True, "id": i} for i in range(5)),  # a retry each
        *({"raise": "declined"} for _ in range(3)),  # dead-lettered after 2 runs
    ]
    handles = [await client.publish(payload, priority="high") for payload in work[:10]]
    handles += [await client.publish(payload) for payload in work[10:]]
    await nc.close()

    async def all_ended() -> bool:
        ended = [await _has(record, f"end.{h.id}") for h in handles]
        return all(ended)

    await wait_until(all_ended, 180, "every task's run recorded by the handler")

    def scraped() -> bool:
        targets = prometheus.targets()
        up = {t["scrapePool"].split("/")[0] for t in targets if t["health"] == "up"}
        return up >= {"serviceMonitor", "podMonitor"}

    eventually(scraped, timeout=120, interval=1, what="operator and worker targets up")

    queries = dashboard_queries()

    def empty() -> list[str]:
        return [f"{title}: {expr}" for title, expr in queries if not prometheus.query(expr)]

    missing: list[str] = []

    def all_answered() -> bool:
        missing[:] = empty()
        return not missing

    try:
        eventually(all_answered, timeout=120, interval=2, what="data for every dashboard query")
    except Exception:
        pytest.fail("dashboard queries without data:\n" + "\n".join(missing))
    print({"queries": len(queries), "targets": len(prometheus.targets())})
