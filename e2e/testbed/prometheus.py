"""A real Prometheus (built from its Go module by ``e2e/build-observability.sh prometheus``)
scraping a cluster the way prometheus-operator would from the chart's ServiceMonitor and
PodMonitor.

:func:`scrape_configs` is the translation prometheus-operator makes (selector labels, port
name, path, interval, namespaces; ``namespace``/``pod``/``container`` target labels). The one
difference: Prometheus runs on the test host, outside the cluster network, so each target is
scraped through the API server's pod proxy (``/api/v1/namespaces/N/pods/P:PORT/proxy/PATH``)
with the kubeconfig's credentials instead of at the pod's IP.
"""

from __future__ import annotations

import base64
import re
import subprocess
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from e2e.testbed.processes import (
    free_port,
    http_json,
    observability_binary,
    spawn_logged,
    stop_service,
    wait_for_port,
)


@dataclass(frozen=True)
class ApiServerProxy:
    """Where the API server is, and the client credentials files that let Prometheus in."""

    address: str
    """host:port"""
    ca_file: Path
    cert_file: Path
    key_file: Path

    @classmethod
    def from_kubeconfig(cls, kubeconfig: Path, workdir: Path) -> ApiServerProxy:
        """The current context's cluster and user (inline ``*-data`` as kind writes them)."""
        config = yaml.safe_load(kubeconfig.read_text())
        context = next(c for c in config["contexts"] if c["name"] == config["current-context"])
        cluster = next(c for c in config["clusters"] if c["name"] == context["context"]["cluster"])
        user = next(u for u in config["users"] if u["name"] == context["context"]["user"])
        files = {}
        for name, data in (
            ("ca.crt", cluster["cluster"]["certificate-authority-data"]),
            ("client.crt", user["user"]["client-certificate-data"]),
            ("client.key", user["user"]["client-key-data"]),
        ):
            path = workdir / name
            path.write_bytes(base64.b64decode(data))
            path.chmod(0o600)
            files[name] = path
        server = urllib.parse.urlsplit(cluster["cluster"]["server"])
        return cls(
            address=server.netloc,
            ca_file=files["ca.crt"],
            cert_file=files["client.crt"],
            key_file=files["client.key"],
        )


def _meta_label(key: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", key)


_ROLES = {
    # kind: (SD role, endpoint list, selector label prefix, port name label)
    "PodMonitor": (
        "pod",
        "podMetricsEndpoints",
        "__meta_kubernetes_pod_label_",
        "__meta_kubernetes_pod_container_port_name",
    ),
    "ServiceMonitor": (
        "endpointslice",
        "endpoints",
        "__meta_kubernetes_service_label_",
        "__meta_kubernetes_endpointslice_port_name",
    ),
}


def scrape_configs(
    monitors: Iterable[Mapping[str, Any]], kubeconfig: Path, proxy: ApiServerProxy
) -> list[dict[str, Any]]:
    """One scrape job per monitor endpoint, named as prometheus-operator names them."""
    jobs: list[dict[str, Any]] = []
    for monitor in monitors:
        role, endpoints_key, label_prefix, port_label = _ROLES[monitor["kind"]]
        meta, spec = monitor["metadata"], monitor["spec"]
        selector = spec.get("namespaceSelector") or {}
        discovery: dict[str, Any] = {"role": role, "kubeconfig_file": str(kubeconfig)}
        if not selector.get("any"):
            discovery["namespaces"] = {"names": selector.get("matchNames") or [meta["namespace"]]}
        keep = [
            {
                "action": "keep",
                "source_labels": [label_prefix + _meta_label(k)],
                "regex": re.escape(v),
            }
            for k, v in sorted((spec.get("selector") or {}).get("matchLabels", {}).items())
        ]
        kind = monitor["kind"][0].lower() + monitor["kind"][1:]
        for index, endpoint in enumerate(spec[endpoints_key]):
            path = endpoint.get("path", "/metrics")
            relabel = [
                *keep,
                {
                    "action": "keep",
                    "source_labels": [port_label],
                    "regex": re.escape(endpoint["port"]),
                },
                {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
                {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
                {
                    "source_labels": ["__meta_kubernetes_pod_container_name"],
                    "target_label": "container",
                },
                {
                    "source_labels": [
                        "__meta_kubernetes_namespace",
                        "__meta_kubernetes_pod_name",
                        "__address__",
                    ],
                    "regex": r"(.+);(.+);.*:(\d+)",
                    "target_label": "__metrics_path__",
                    "replacement": f"/api/v1/namespaces/$1/pods/$2:$3/proxy{path}",
                },
                {"target_label": "__address__", "replacement": proxy.address},
            ]
            job: dict[str, Any] = {
                "job_name": f"{kind}/{meta['namespace']}/{meta['name']}/{index}",
                "kubernetes_sd_configs": [discovery],
                "relabel_configs": relabel,
                "scheme": "https",
                "tls_config": {
                    "ca_file": str(proxy.ca_file),
                    "cert_file": str(proxy.cert_file),
                    "key_file": str(proxy.key_file),
                },
            }
            for ours, theirs in (
                ("scrape_interval", "interval"),
                ("scrape_timeout", "scrapeTimeout"),
            ):
                if endpoint.get(theirs):
                    job[ours] = endpoint[theirs]
            jobs.append(job)
    return jobs


@dataclass
class Prometheus:
    scrape: list[dict[str, Any]]
    port: int = field(default_factory=free_port)
    workdir: Path = field(
        default_factory=lambda: Path(tempfile.mkdtemp(prefix="jetpool-prometheus-"))
    )
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Prometheus:
        config = self.workdir / "prometheus.yml"
        config.write_text(yaml.safe_dump({"scrape_configs": self.scrape}, sort_keys=False))
        self.process = spawn_logged(
            [
                str(observability_binary("prometheus")),
                f"--config.file={config}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            self.workdir / "prometheus.log",
        )
        wait_for_port(self.port, timeout=60)
        return self

    def close(self) -> None:
        stop_service(self.process, self.workdir)
        self.process = None

    def _api(self, path: str, **query: str) -> Any:
        answer = http_json(f"{self.url}/api/v1/{path}", query)
        if answer.get("status") != "success":
            raise RuntimeError(f"{path} {query}: {answer}")
        return answer["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query's result vector (or matrix/scalar as the API returns it)."""
        data = self._api("query", query=promql)
        result = data["result"]
        return list(result) if data["resultType"] in ("vector", "matrix") else [result]

    def targets(self) -> list[dict[str, Any]]:
        return list(self._api("targets", state="active")["activeTargets"])
