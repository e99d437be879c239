"""Prometheus metrics and the tiny HTTP server for ``/metrics``, ``/healthz`` and ``/readyz``.

Each :class:`Metrics` has its own registry, so several workers can run in one process (tests,
benchmarks) without clashing on the global default registry.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

log = logging.getLogger(__name__)

PAUSE_REASONS = ("breaker", "memory", "draining")


class Metrics:
    def __init__(self, pool: str, namespace: str, worker: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        labels = {"pool": pool, "namespace": namespace, "worker": worker}
        self._labels = labels
        names = list(labels)
        r = self.registry
        self.processed = Counter(
            "jetpool_tasks_processed", "Task deliveries handled (any outcome).", names, registry=r
        ).labels(**labels)
        self.succeeded = Counter(
            "jetpool_tasks_succeeded", "Tasks whose handler returned normally.", names, registry=r
        ).labels(**labels)
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
        self.duration = Histogram(
            "jetpool_task_duration_seconds",
            "Handler run time.",
            names,
            registry=r,
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900),
        ).labels(**labels)
        self.in_flight = Gauge(
            "jetpool_tasks_in_flight", "Tasks being handled right now.", names, registry=r
        ).labels(**labels)
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
