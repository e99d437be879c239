"""Prometheus metrics and the tiny HTTP server for ``/metrics``, ``/healthz`` and ``/readyz``.

Each :class:`Metrics` has its own registry, so several workers can run in one process (tests,
benchmarks) without clashing on the global default registry.
"""

from __future__ import annotations

import logging
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

PAUSE_REASONS = ("breaker", "memory", "draining")


DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900)


class TaskTally:
    """Per-task counts kept as plain numbers by the event loop and read at scrape time.

    A prometheus-client metric takes a lock on every update; three of those per task were a
    measurable share of the worker's hot path. Only the loop writes here; a scrape from the
    HTTP thread reads ints (atomic under the GIL), so it sees a consistent-enough snapshot.
    """

    __slots__ = ("bucket_counts", "duration_sum", "processed", "succeeded")

    def __init__(self) -> None:
        self.processed = 0
        self.succeeded = 0
        self.duration_sum = 0.0
        self.bucket_counts = [0] * (len(DURATION_BUCKETS) + 1)  # last one is +Inf

    def observe(self, duration_seconds: float, ok: bool) -> None:
        self.processed += 1
        if ok:
            self.succeeded += 1
        self.duration_sum += duration_seconds
        self.bucket_counts[bisect_left(DURATION_BUCKETS, duration_seconds)] += 1


def _le(bound: float) -> str:
    """A bucket bound as prometheus-client's own histogram prints it."""
    return "+Inf" if bound == float("inf") else repr(float(bound))


class _TallyCollector(Collector):
    """Exposes a :class:`TaskTally` as the processed/succeeded counters and the histogram."""

    def __init__(self, tally: TaskTally, labels: dict[str, str]) -> None:
        self.tally = tally
        self.names = list(labels)
        self.values = list(labels.values())
        self.created = time.time()

    def collect(self) -> Iterable[Metric]:
        t = self.tally
        processed = CounterMetricFamily(
            "jetpool_tasks_processed", "Task deliveries handled (any outcome).", labels=self.names
        )
        processed.add_metric(self.values, t.processed, created=self.created)
        succeeded = CounterMetricFamily(
            "jetpool_tasks_succeeded", "Tasks whose handler returned normally.", labels=self.names
        )
        succeeded.add_metric(self.values, t.succeeded, created=self.created)
        counts = list(t.bucket_counts)  # one snapshot, so +Inf equals the count
        buckets, running = [], 0
        for bound, count in zip((*DURATION_BUCKETS, float("inf")), counts, strict=True):
            running += count
            buckets.append((_le(bound), running))
        duration = HistogramMetricFamily(
            "jetpool_task_duration_seconds", "Handler run time.", labels=self.names
        )
        duration.add_metric(self.values, buckets, t.duration_sum)
        return [processed, succeeded, duration]


class _WaitCollector(Collector):
    """Tasks held back before they start (rate limit, busy keys), read from their gate."""

    def __init__(self, prefix: str, what: str, gate: WaitGauge, labels: dict[str, str]) -> None:
        self.prefix, self.what, self.gate = prefix, what, gate
        self.names, self.values = list(labels), list(labels.values())

    def collect(self) -> Iterable[Metric]:
        waiting = GaugeMetricFamily(
            f"{self.prefix}_waiting_tasks",
            f"Delivered tasks waiting for {self.what}.",
            labels=self.names,
        )
        waiting.add_metric(self.values, self.gate.waiting)
        waited = CounterMetricFamily(
            f"{self.prefix}_wait_seconds",
            f"Time tasks spent waiting for {self.what} (its rate(): tasks held back).",
            labels=self.names,
        )
        waited.add_metric(self.values, self.gate.waited_seconds)
        handed_back = CounterMetricFamily(
            f"{self.prefix}_handed_back",
            f"Tasks sent back to the queue unrun while waiting for {self.what}.",
            labels=self.names,
        )
        handed_back.add_metric(self.values, self.gate.handed_back)
        return [waiting, waited, handed_back]


class _LaneCollector(Collector):
    """Tasks each lane of a laned pool gave this worker, read from the puller."""

    def __init__(
        self, lanes: Callable[[], Iterable[tuple[str, str, int]]], labels: dict[str, str]
    ) -> None:
        self.lanes = lanes
        self.names, self.values = list(labels), list(labels.values())

    def collect(self) -> Iterable[Metric]:
        pulled = CounterMetricFamily(
            "jetpool_lane_tasks_pulled",
            "Tasks a lane (priority level or ordered partition) gave this worker.",
            labels=[*self.names, "lane", "consumer"],
        )
        for label, consumer, count in self.lanes():
            pulled.add_metric([*self.values, label, consumer], count)
        return [pulled]


class WaitGauge(Protocol):
    """What a gate that holds tasks back reports."""

    @property
    def waiting(self) -> int: ...
    @property
    def waited_seconds(self) -> float: ...
    @property
    def handed_back(self) -> int: ...


class Metrics:
    def __init__(self, pool: str, namespace: str, worker: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        labels = {"pool": pool, "namespace": namespace, "worker": worker}
        self._labels = labels
        names = list(labels)
        r = self.registry
        self.tally = TaskTally()
        r.register(_TallyCollector(self.tally, labels))
        self._failed = Counter(
            "jetpool_tasks_failed",
            "Handler failures, by error type.",
            [*names, "error_type"],
            registry=r,
        )
        self._retried = Counter(
            "jetpool_tasks_retried",
            "Failures nak'ed for a later retry, by error type.",
            [*names, "error_type"],
            registry=r,
        )
        self._dead_lettered = Counter(
            "jetpool_tasks_dead_lettered",
            "Tasks moved to the dead-letter stream.",
            [*names, "reason", "error_type"],
            registry=r,
        )
        self.in_flight = Gauge(
            "jetpool_tasks_in_flight", "Tasks being handled right now.", names, registry=r
        ).labels(**labels)
        """Call ``in_flight.set_function`` to have it read at scrape time."""
        self._paused = Gauge(
            "jetpool_fetching_paused",
            "1 while fetching is held back, by reason.",
            [*names, "reason"],
            registry=r,
        )
        self.rss = Gauge(
            "jetpool_worker_rss_bytes",
            "Resident memory seen by the memory guard.",
            names,
            registry=r,
        ).labels(**labels)
        self.lingering_threads = Gauge(
            "jetpool_lingering_handler_threads",
            "Sync handlers that overran their timeout and still hold a thread.",
            names,
            registry=r,
        ).labels(**labels)
        for reason in PAUSE_REASONS:
            self._paused.labels(**labels, reason=reason).set(0)

    def watch_waits(self, prefix: str, what: str, gate: WaitGauge) -> None:
        """Export a gate's waits as ``<prefix>_waiting_tasks``, ``_wait_seconds_total`` and
        ``_handed_back_total``."""
        self.registry.register(_WaitCollector(prefix, what, gate, self._labels))

    def watch_lanes(self, lanes: Callable[[], Iterable[tuple[str, str, int]]]) -> None:
        """Export ``jetpool_lane_tasks_pulled_total`` from (label, consumer, count) rows."""
        self.registry.register(_LaneCollector(lanes, self._labels))

    def failed(self, error_type: str) -> None:
        self._failed.labels(**self._labels, error_type=error_type).inc()

    def retried(self, error_type: str) -> None:
        self._retried.labels(**self._labels, error_type=error_type).inc()

    def dead_lettered(self, reason: str, error_type: str) -> None:
        self._dead_lettered.labels(**self._labels, reason=reason, error_type=error_type).inc()

    def set_paused(self, reason: str, paused: bool) -> None:
        self._paused.labels(**self._labels, reason=reason).set(1 if paused else 0)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class HealthServer:
    """Serves ``/metrics``, ``/healthz`` (loop not wedged), ``/readyz`` (connected, consuming)."""

    def __init__(
        self,
        port: int,
        metrics: Metrics,
        healthy: Callable[[], tuple[bool, str]],
        ready: Callable[[], tuple[bool, str]],
        host: str = "0.0.0.0",
    ) -> None:
        outer = self

        class _Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, outer.metrics.render(), CONTENT_TYPE_LATEST)
                elif path in ("/healthz", "/readyz"):
                    ok, why = (outer.healthy if path == "/healthz" else outer.ready)()
                    self._send(200 if ok else 503, (why or "ok").encode() + b"\n", "text/plain")
                else:
                    self._send(404, b"not found\n", "text/plain")

            def _send(self, code: int, body: bytes, content_type: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                log.debug("http: " + format, *args)

        self.metrics = metrics
        self.healthy = healthy
        self.ready = ready
        self._server = ThreadingHTTPServer((host, port), _Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> HealthServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
