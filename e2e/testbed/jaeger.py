"""A real Jaeger (v2, built from its Go module by ``e2e/build-observability.sh jaeger``) as the
trace collector of the tests: OTLP/HTTP in, in-memory storage, its query API read back.

Ports are free ones picked here, not Jaeger's fixed defaults, so it never collides with a
collector the developer runs. ``host="0.0.0.0"`` lets kind pods reach it through the Docker
network's gateway.
"""

from __future__ import annotations

import subprocess
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from e2e.testbed.processes import (
    free_port,
    http_json,
    observability_binary,
    spawn_logged,
    stop_service,
    wait_for_port,
)

CONFIG = """\
service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  jaeger_storage:
    backends:
      memory:
        memory:
          max_traces: 100000
  jaeger_query:
    storage:
      traces: memory
    http:
      endpoint: "127.0.0.1:{query_port}"
    grpc:
      endpoint: "127.0.0.1:{query_grpc_port}"
receivers:
  otlp:
    protocols:
      http:
        endpoint: "{host}:{otlp_port}"
processors:
  batch:
    timeout: 200ms
exporters:
  jaeger_storage_exporter:
    trace_storage: memory
"""


@dataclass(frozen=True)
class Span:
    """One span of a trace as Jaeger's query API returns it."""

    span_id: str
    parent_id: str | None
    name: str
    service: str
    kind: str | None
    tags: dict[str, Any]


@dataclass
class Jaeger:
    host: str = "127.0.0.1"
    otlp_port: int = field(default_factory=free_port)
    query_port: int = field(default_factory=free_port)
    query_grpc_port: int = field(default_factory=free_port)
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="jetpool-jaeger-")))
    process: subprocess.Popen[bytes] | None = None

    @property
    def otlp_endpoint(self) -> str:
        """``OTEL_EXPORTER_OTLP_ENDPOINT`` for a process on this host."""
        return f"http://127.0.0.1:{self.otlp_port}"

    @property
    def query_url(self) -> str:
        return f"http://127.0.0.1:{self.query_port}"

    def start(self) -> Jaeger:
        config = self.workdir / "jaeger.yaml"
        config.write_text(
            CONFIG.format(
                host=self.host,
                otlp_port=self.otlp_port,
                query_port=self.query_port,
                query_grpc_port=self.query_grpc_port,
            )
        )
        self.process = spawn_logged(
            [str(observability_binary("jaeger")), "--config", str(config)],
            self.workdir / "jaeger.log",
        )
        wait_for_port(self.otlp_port, timeout=60)
        wait_for_port(self.query_port, timeout=60)
        return self

    def close(self) -> None:
        stop_service(self.process, self.workdir)
        self.process = None

    def _get(self, path: str, **query: str) -> Any:
        try:
            return http_json(f"{self.query_url}{path}", query)
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise

    def services(self) -> list[str]:
        return list((self._get("/api/services") or {}).get("data") or [])

    def trace(self, trace_id: str) -> list[Span]:
        """Every span stored for ``trace_id`` (hex), empty while none has arrived."""
        answer = self._get(f"/api/traces/{trace_id}")
        spans: list[Span] = []
        for found in (answer or {}).get("data") or []:
            processes = found.get("processes") or {}
            for raw in found.get("spans") or []:
                tags = {t["key"]: t.get("value") for t in raw.get("tags") or []}
                parents = [
                    r["spanID"] for r in raw.get("references") or [] if r["refType"] == "CHILD_OF"
                ]
                spans.append(
                    Span(
                        span_id=raw["spanID"],
                        parent_id=parents[0] if parents else None,
                        name=raw["operationName"],
                        service=processes.get(raw["processID"], {}).get("serviceName", ""),
                        kind=tags.get("span.kind"),
                        tags=tags,
                    )
                )
        return spans

    def trace_ids(self, service: str, operation: str | None = None, limit: int = 100) -> list[str]:
        query = {"service": service, "limit": str(limit), "lookback": "1h"}
        if operation is not None:
            query["operation"] = operation
        answer = self._get("/api/traces", **query)
        return [t["traceID"] for t in (answer or {}).get("data") or []]
