"""The e2e's Prometheus is configured from the chart's monitors as prometheus-operator would:
selector labels, port name, path, interval and namespaces become one scrape job each."""

from __future__ import annotations

from pathlib import Path

from e2e.testbed.prometheus import ApiServerProxy, scrape_configs

PROXY = ApiServerProxy("127.0.0.1:6443", Path("ca"), Path("crt"), Path("key"))
POD_MONITOR = {
    "kind": "PodMonitor",
    "metadata": {"name": "jetpool-workers", "namespace": "jetpool-system"},
    "spec": {
        "namespaceSelector": {"any": True},
        "selector": {"matchLabels": {"app.kubernetes.io/name": "jetpool-worker"}},
        "podMetricsEndpoints": [{"port": "metrics", "path": "/metrics", "interval": "2s"}],
    },
}
SERVICE_MONITOR = {
    "kind": "ServiceMonitor",
    "metadata": {"name": "jetpool", "namespace": "jetpool-system"},
    "spec": {
        "namespaceSelector": {"matchNames": ["jetpool-system"]},
        "selector": {"matchLabels": {"app.kubernetes.io/instance": "jetpool"}},
        "endpoints": [{"port": "metrics", "path": "/metrics", "scrapeTimeout": "1s"}],
    },
}


def test_a_pod_monitor_keeps_pods_by_label_and_port_name_in_every_namespace() -> None:
    (job,) = scrape_configs([POD_MONITOR], Path("kc"), PROXY)
    assert job["job_name"] == "podMonitor/jetpool-system/jetpool-workers/0"
    assert job["kubernetes_sd_configs"] == [{"role": "pod", "kubeconfig_file": "kc"}]
    assert job["scrape_interval"] == "2s"
    keeps = [(r["source_labels"], r["regex"]) for r in job["relabel_configs"] if r.get("action")]
    assert keeps == [
        (["__meta_kubernetes_pod_label_app_kubernetes_io_name"], r"jetpool\-worker"),
        (["__meta_kubernetes_pod_container_port_name"], "metrics"),
    ]


def test_a_service_monitor_keeps_endpoints_of_its_services_in_its_namespaces() -> None:
    (job,) = scrape_configs([SERVICE_MONITOR], Path("kc"), PROXY)
    (discovery,) = job["kubernetes_sd_configs"]
    assert discovery["role"] == "endpointslice"
    assert discovery["namespaces"] == {"names": ["jetpool-system"]}
    assert job["scrape_timeout"] == "1s"
    assert "scrape_interval" not in job
    sources = [r["source_labels"][0] for r in job["relabel_configs"] if r.get("action")]
    assert sources == [
        "__meta_kubernetes_service_label_app_kubernetes_io_instance",
        "__meta_kubernetes_endpointslice_port_name",
    ]


def test_targets_are_scraped_through_the_api_servers_pod_proxy_with_pod_labels() -> None:
    (job,) = scrape_configs([POD_MONITOR], Path("kc"), PROXY)
    relabel = job["relabel_configs"]
    path = next(r for r in relabel if r.get("target_label") == "__metrics_path__")
    assert path["replacement"] == "/api/v1/namespaces/$1/pods/$2:$3/proxy/metrics"
    address = next(r for r in relabel if r.get("target_label") == "__address__")
    assert address["replacement"] == "127.0.0.1:6443"
    assert {r.get("target_label") for r in relabel} >= {"namespace", "pod", "container"}
    assert job["scheme"] == "https"
    assert job["tls_config"] == {"ca_file": "ca", "cert_file": "crt", "key_file": "key"}
