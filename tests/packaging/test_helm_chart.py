"""The Helm chart: lint-clean, renders for every mode, validates values, least-privilege RBAC."""

from __future__ import annotations

import json
import re
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from jetpool_operator import metrics as operator_metrics
from jetpool_operator.api.v1alpha1 import WorkerPoolSpec
from jetpool_operator.core.children import PoolRef, build_deployment
from jetpool_operator.core.tenancy import SubjectGrants
from jetpool_operator.main import parse_args
from jetpool_worker.metrics import Metrics as WorkerMetrics
from tests.packaging.conftest import (
    CHART,
    CRDS,
    GENERATOR,
    Render,
    container,
    env_of,
    kinds,
    only,
    parse,
)

POOL_METRICS = {
    "jetpool_pool_backlog",
    "jetpool_pool_desired_replicas",
    "jetpool_pool_ready_replicas",
    "jetpool_pool_error_rate",
    "jetpool_pool_throughput",
    "jetpool_pool_breaker_open",
    "jetpool_pool_dead_letters",
}


def exposed_operator_series() -> set[str]:
    """Every series name the operator's /metrics can show (counters get _total, ...)."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    names: set[str] = set()
    for found in vars(operator_metrics).values():
        value = found.gauge if isinstance(found, operator_metrics.PoolBreakdown) else found
        if isinstance(value, MetricWrapperBase):
            for family in value.describe():
                names |= {family.name + suffix for suffix in suffixes[family.type]}
    return names


def exposed_worker_series() -> set[str]:
    """Every series name a worker's /metrics shows (a laned pool's worker: every family)."""
    metrics = WorkerMetrics("p", "ns", "w")
    metrics.watch_lanes(lambda: [("high", "workers-high", 1)])
    metrics.failed("ValueError")
    metrics.retried("ValueError")
    metrics.dead_lettered("max_attempts", "ValueError")
    text = metrics.render().decode()
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line[:1] != "#"}


NAMESPACED_MODE = ("--set", "watch.namespaces={team-a,team-b}")
EVERYTHING_ON = (
    "--set",
    "metrics.serviceMonitor.enabled=true",
    "--set",
    "metrics.podMonitor.enabled=true",
    "--set",
    "metrics.prometheusRule.enabled=true",
    "--set",
    "networkPolicy.enabled=true",
)


def rules_of(role: dict[str, Any]) -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) triples: order- and grouping-independent."""
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


# -- lint ------------------------------------------------------------------------------------


def test_helm_lint_is_clean_in_strict_mode(helm: str) -> None:
    proc = subprocess.run(
        [helm, "lint", "--strict", str(CHART), "--kube-version", "1.36.3"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout
    assert "[WARNING]" not in proc.stdout
    assert "[ERROR]" not in proc.stdout


@pytest.mark.parametrize(
    "values",
    [
        (),
        NAMESPACED_MODE + EVERYTHING_ON,
        ("--set", "replicaCount=1", "--set", "peering.enabled=false"),
    ],
    ids=["defaults", "namespaced-everything-on", "standalone"],
)
def test_helm_lint_is_clean_with_non_default_values(helm: str, values: tuple[str, ...]) -> None:
    proc = subprocess.run(
        [helm, "lint", "--strict", str(CHART), "--kube-version", "1.36.3", *values],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


# -- defaults --------------------------------------------------------------------------------


def test_defaults_render_the_ha_operator_and_its_surroundings(render: Render) -> None:
    objects = render()
    assert kinds(objects) == {
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Service",
        "Deployment",
        "PodDisruptionBudget",
        "ClusterKopfPeering",
        "ConfigMap",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    }
    deployment = only(objects, "Deployment", "jetpool-operator")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1},
    }
    assert env_of(deployment)["JETPOOL_PEERING"] == "jetpool"
    assert env_of(deployment)["JETPOOL_WATCH_NAMESPACES"] == ""
    assert only(objects, "ClusterKopfPeering")["metadata"]["name"] == "jetpool"


def test_operator_pod_meets_the_restricted_pod_security_standard(render: Render) -> None:
    deployment = only(render(), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container(deployment)["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert sc["readOnlyRootFilesystem"] is True
    assert "hostNetwork" not in pod
    assert "hostPID" not in pod


def test_operator_has_liveness_on_kopf_healthz_and_resources(render: Render) -> None:
    c = container(only(render(), "Deployment"))
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"metrics": 8080, "health": 8081}
    assert c["resources"]["requests"]
    assert c["resources"]["limits"]["memory"]


def test_rendered_environment_configures_the_operator_as_the_chart_says(
    render: Render, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The chart's env names are the ones `jetpool-operator` reads (its parse_args)."""
    deployment = only(
        render(*NAMESPACED_MODE, "--set", "health.port=9901", "--set", "metrics.port=9900"),
        "Deployment",
    )
    for name, value in env_of(deployment).items():
        monkeypatch.setenv(name, value)
    parsed = parse_args(container(deployment).get("args", []))
    assert parsed.namespace == ["team-a", "team-b"]
    assert parsed.peering == "jetpool"
    assert parsed.metrics_port == 9900
    assert parsed.liveness == "http://0.0.0.0:9901/healthz"
    assert parsed.log_format == "json"
    assert not parsed.verbose


def test_verbose_logging_and_standalone_reach_the_operator(
    render: Render, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployment = only(
        render(
            "--set",
            "logging.verbose=true",
            "--set",
            "replicaCount=1",
            "--set",
            "peering.enabled=false",
            "--set",
            "logging.format=text",
        ),
        "Deployment",
    )
    for name, value in env_of(deployment).items():
        monkeypatch.setenv(name, value)
    parsed = parse_args(container(deployment)["args"])
    assert parsed.verbose
    assert parsed.peering == ""
    assert parsed.namespace == []
    assert parsed.log_format == "text"


def test_metrics_service_targets_the_operator_pods(render: Render) -> None:
    objects = render()
    service = only(objects, "Service", "jetpool-operator-metrics")
    selector = only(objects, "Deployment")["spec"]["selector"]["matchLabels"]
    assert service["spec"]["selector"] == selector
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"


# -- CRD: one source of truth ----------------------------------------------------------------


def test_crd_is_the_generated_file_plus_chart_metadata(render: Render) -> None:
    generated = yaml.safe_load((CRDS / "workerpools.jetpool.dev.yaml").read_text())
    rendered = only(render(), "CustomResourceDefinition")
    assert rendered["spec"] == generated["spec"]
    assert rendered["metadata"]["name"] == generated["metadata"]["name"]
    assert generated["metadata"].get("labels", {}).items() <= rendered["metadata"]["labels"].items()


def test_crd_is_kept_on_uninstall_unless_told_otherwise(render: Render) -> None:
    kept = only(render(), "CustomResourceDefinition")
    assert kept["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    released = only(render("--set", "crds.keep=false"), "CustomResourceDefinition")
    assert "helm.sh/resource-policy" not in released["metadata"].get("annotations", {})


def test_crd_can_be_left_to_another_installer(render: Render) -> None:
    assert "CustomResourceDefinition" not in kinds(render("--set", "crds.enabled=false"))


def test_kopf_peering_crds_ship_in_the_charts_crds_directory_from_crds(render: Render) -> None:
    """Helm installs crds/ before templates, so the peering object can be created at install."""
    shipped = CHART / "crds" / "kopf-peering.yaml"
    assert shipped.resolve() == (CRDS / "kopf-peering.yaml").resolve()
    names = {d["metadata"]["name"] for d in yaml.safe_load_all(shipped.read_text()) if d}
    assert names == {"clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"}
    with_crds = render("--include-crds")
    assert {
        o["metadata"]["name"] for o in with_crds if o["kind"] == "CustomResourceDefinition"
    } == {
        *names,
        "workerpools.jetpool.dev",
    }


# -- RBAC ------------------------------------------------------------------------------------

EXPECTED_NAMESPACED = {
    *{("jetpool.dev", "workerpools", v) for v in ("get", "list", "watch", "patch")},
    *{("jetpool.dev", "workerpools/status", v) for v in ("get", "patch", "update")},
    *{
        ("apps", "deployments", v)
        for v in ("get", "list", "watch", "create", "patch", "update", "delete")
    },
    *{
        ("", r, v)
        for r in ("serviceaccounts", "services")
        for v in ("get", "list", "watch", "create", "patch", "delete")
    },
    *{
        ("policy", "poddisruptionbudgets", v)
        for v in ("get", "list", "watch", "create", "patch", "delete")
    },
    ("", "secrets", "get"),
    *{(g, "events", v) for g in ("", "events.k8s.io") for v in ("create", "patch")},
}
EXPECTED_CLUSTER_ONLY = {
    ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
    ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
    ("", "namespaces", "list"),
    ("", "namespaces", "watch"),
}


def test_cluster_wide_rbac_is_exactly_what_the_operator_uses(render: Render) -> None:
    role = only(render(), "ClusterRole")
    assert rules_of(role) == EXPECTED_NAMESPACED | EXPECTED_CLUSTER_ONLY | {
        *{("kopf.dev", "clusterkopfpeerings", v) for v in ("get", "list", "watch", "patch")},
    }


def test_rbac_grants_no_wildcards_and_no_secret_listing(render: Render) -> None:
    for role in (
        o for o in render(*NAMESPACED_MODE) + render() if o["kind"] in ("ClusterRole", "Role")
    ):
        for group, resource, verb in rules_of(role):
            assert "*" not in (group, resource, verb)
            if resource == "secrets":
                assert verb == "get"


def test_namespaced_mode_grants_a_role_per_watched_namespace_only(render: Render) -> None:
    objects = render(*NAMESPACED_MODE)
    roles = [o for o in objects if o["kind"] == "Role"]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    for role in roles:
        assert rules_of(role) == EXPECTED_NAMESPACED | {
            ("kopf.dev", "kopfpeerings", v) for v in ("get", "list", "watch", "patch")
        }
    bindings = [o for o in objects if o["kind"] == "RoleBinding"]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    assert rules_of(only(objects, "ClusterRole")) == EXPECTED_CLUSTER_ONLY
    assert env_of(only(objects, "Deployment"))["JETPOOL_WATCH_NAMESPACES"] == "team-a,team-b"


def test_namespaced_mode_peers_through_a_kopfpeering_per_namespace(render: Render) -> None:
    objects = render(*NAMESPACED_MODE)
    assert "ClusterKopfPeering" not in kinds(objects)
    peerings = [o for o in objects if o["kind"] == "KopfPeering"]
    assert sorted(p["metadata"]["namespace"] for p in peerings) == ["team-a", "team-b"]


def test_bindings_bind_the_operator_service_account(render: Render) -> None:
    objects = render(*NAMESPACED_MODE, "--namespace", "ops")
    sa = only(objects, "ServiceAccount")["metadata"]
    assert (
        only(objects, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == sa["name"]
    )
    for binding in (o for o in objects if o["kind"] in ("ClusterRoleBinding", "RoleBinding")):
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": sa["name"], "namespace": "ops"}
        ]


# -- standalone ------------------------------------------------------------------------------


def test_standalone_operator_uses_recreate_and_no_peering(render: Render) -> None:
    objects = render("--set", "replicaCount=1", "--set", "peering.enabled=false")
    deployment = only(objects, "Deployment")
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert env_of(deployment)["JETPOOL_PEERING"] == ""
    assert not kinds(objects) & {"ClusterKopfPeering", "KopfPeering", "PodDisruptionBudget"}
    assert not {r for r in rules_of(only(objects, "ClusterRole")) if r[0] == "kopf.dev"}


def test_several_replicas_without_peering_are_refused(render: Render) -> None:
    with pytest.raises(RuntimeError, match=r"needs peering\.enabled"):
        render("--set", "replicaCount=2", "--set", "peering.enabled=false")


# -- values.schema.json ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "complaint"),
    [
        ("logging.format=xml", "logging.format"),
        ("replicaCount=-1", "replicaCount"),
        ("metrics.port=70000", "metrics.port"),
        ("image.pullPolicy=Sometimes", "image.pullPolicy"),
        ("watch.namespaces={Not_A_Namespace}", "watch.namespaces"),
        ("metrics.prometheusRule.backlogFor=soon", "backlogFor"),
        ("replicas=3", "replicas"),
    ],
)
def test_schema_rejects_a_bad_value(render: Render, value: str, complaint: str) -> None:
    with pytest.raises(
        RuntimeError, match=r"values don't meet the specifications of the schema"
    ) as err:
        render("--set", value)
    assert complaint in str(err.value)


def test_schema_is_valid_json_and_covers_every_top_level_value() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert schema["additionalProperties"] is False
    assert set(values) <= set(schema["properties"])


# -- monitoring ------------------------------------------------------------------------------


def test_prometheus_rule_alerts_on_breaker_dlq_backlog_and_operator_down(render: Render) -> None:
    rule = only(render(*EVERYTHING_ON), "PrometheusRule")
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    assert {
        "JetpoolOperatorDown",
        "JetpoolCircuitBreakerOpen",
        "JetpoolDeadLettersGrowing",
        "JetpoolBacklogHigh",
        "JetpoolBacklogStalled",
    } <= set(alerts)
    assert 'up{job="jetpool-operator-metrics"' in alerts["JetpoolOperatorDown"]["expr"]
    assert "jetpool_pool_breaker_open" in alerts["JetpoolCircuitBreakerOpen"]["expr"]
    assert "jetpool_pool_dead_letters" in alerts["JetpoolDeadLettersGrowing"]["expr"]
    for alert in alerts.values():
        assert alert["labels"]["severity"] in {"warning", "critical"}
        used = set(re.findall(r"jetpool_\w+", alert["expr"]))
        exposed = exposed_operator_series() | exposed_worker_series()
        assert used <= exposed, used - exposed


def test_alert_thresholds_come_from_values(render: Render) -> None:
    rule = only(
        render(*EVERYTHING_ON, "--set", "metrics.prometheusRule.backlogThreshold=42"),
        "PrometheusRule",
    )
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    assert alerts["JetpoolBacklogHigh"]["expr"].endswith("> 42")


def test_service_monitor_scrapes_the_metrics_port(render: Render) -> None:
    objects = render(*EVERYTHING_ON)
    monitor = only(objects, "ServiceMonitor")
    service = only(objects, "Service")
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )


def test_monitoring_objects_are_off_by_default(render: Render) -> None:
    assert not kinds(render()) & {
        "ServiceMonitor",
        "PodMonitor",
        "PrometheusRule",
        "NetworkPolicy",
    }


def test_pod_monitor_scrapes_the_worker_pods_metrics_port(render: Render) -> None:
    pool = WorkerPoolSpec.model_validate({"image": "i", "handler": "h:f", "nats": {"url": "n"}})
    deployment = build_deployment(PoolRef("p", "team-a", uid="u"), pool, replicas=1)
    pod = deployment["spec"]["template"]
    [container] = pod["spec"]["containers"]
    monitor = only(render(*EVERYTHING_ON), "PodMonitor")
    assert monitor["spec"]["namespaceSelector"] == {"any": True}
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    [endpoint] = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] in {p["name"] for p in container["ports"]}
    namespaced = only(render(*EVERYTHING_ON, *NAMESPACED_MODE), "PodMonitor")
    assert namespaced["spec"]["namespaceSelector"] == {"matchNames": ["team-a", "team-b"]}


def test_network_policy_lets_in_only_metrics_and_out_only_dns_apiserver_nats(
    render: Render,
) -> None:
    policy = only(render(*EVERYTHING_ON), "NetworkPolicy")
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert [p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]] == ["metrics"]
    egress_ports = {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]}
    assert egress_ports == {53, 443, 6443, 4222}


def test_grafana_dashboard_ships_in_a_labelled_configmap(render: Render) -> None:
    configmap = only(render(), "ConfigMap", "jetpool-operator-dashboard")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(configmap["data"]["jetpool.json"])
    assert dashboard["uid"] == "jetpool-pools"


def test_dashboard_charts_every_pool_metric_and_only_series_the_operator_exposes() -> None:
    dashboard = json.loads((CHART / "files" / "dashboards" / "jetpool.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    used = {m for e in exprs for m in re.findall(r"jetpool_\w+", e)}
    assert used >= POOL_METRICS
    exposed = exposed_operator_series() | exposed_worker_series()
    assert used <= exposed, used - exposed
    # the workers' own series (scraped through the PodMonitor) are charted too
    assert {
        "jetpool_task_duration_seconds_bucket",
        "jetpool_tasks_failed_total",
        "jetpool_tasks_retried_total",
        "jetpool_tasks_dead_lettered_total",
        "jetpool_tasks_in_flight",
        "jetpool_fetching_paused",
    } <= used
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in ("replicas", "backlog", "throughput", "error rate", "breaker", "dead letters"):
        assert topic in titles
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_packaged_chart_is_self_contained_despite_the_crd_symlinks(
    helm: str, tmp_path: Path
) -> None:
    """helm follows the symlinks to crds/ when packaging: the archive holds real copies."""
    proc = subprocess.run(
        [helm, "package", str(CHART), "--destination", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    (archive,) = tmp_path.glob("jetpool-*.tgz")
    with tarfile.open(archive) as tar:
        members = {m.name: m for m in tar.getmembers()}
        crd = members["jetpool/files/crds/workerpools.jetpool.dev.yaml"]
        assert crd.isfile()
        extracted = tar.extractfile(crd)
        assert extracted is not None
        assert extracted.read() == (CRDS / "workerpools.jetpool.dev.yaml").read_bytes()
        assert members["jetpool/crds/kopf-peering.yaml"].isfile()
    assert "jetpool/files/crds/kustomization.yaml" not in members


def test_tenancy_values_reach_the_operator_and_default_to_refusing(render: Render) -> None:
    defaults = env_of(only(render(), "Deployment"))
    assert defaults["JETPOOL_ALLOW_FOREIGN_SERVICE_ACCOUNTS"] == "false"
    assert defaults["JETPOOL_ALLOW_PROJECTED_TOKENS"] == "false"
    allowed = env_of(
        only(
            render(
                "--set",
                "tenancy.allowForeignServiceAccounts=true",
                "--set",
                "tenancy.allowProjectedTokens=true",
            ),
            "Deployment",
        )
    )
    assert allowed["JETPOOL_ALLOW_FOREIGN_SERVICE_ACCOUNTS"] == "true"
    assert allowed["JETPOOL_ALLOW_PROJECTED_TOKENS"] == "true"


def test_extra_subject_spaces_reach_the_operator_as_json_and_default_to_none(
    render: Render,
) -> None:
    assert env_of(only(render(), "Deployment"))["JETPOOL_EXTRA_SUBJECT_SPACES"] == "{}"
    granted = render("--set-json", 'tenancy.extraSubjectSpaces={"billing": ["invoices.billing."]}')
    value = env_of(only(granted, "Deployment"))["JETPOOL_EXTRA_SUBJECT_SPACES"]
    assert SubjectGrants.parse(value).extra("billing") == ("invoices.billing.",)


# -- shards and HA -----------------------------------------------------------------------------

BLUE = ("--set-string", "shard.selector.matchLabels.jetpool\\.dev/shard=blue")
GREEN = ("--set-string", "shard.selector.matchLabels.jetpool\\.dev/shard=green")


def release(name: str, *args: str) -> list[dict[str, Any]]:
    """The chart's objects for release ``name`` (in the same namespace as every other)."""
    return parse(GENERATOR.helm_template(*args, release=name))


def identities(objects: list[dict[str, Any]]) -> set[tuple[str, str | None, str]]:
    """(kind, namespace, name): what two releases must not both own (Helm refuses, or worse,
    they overwrite each other's)."""
    return {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objects}


def test_shard_selector_and_peering_lifetime_reach_the_operator(
    render: Render, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployment = only(
        render(
            *BLUE,
            "--set-json",
            'shard.selector.matchExpressions=[{"key": "tier", "operator": "In", '
            '"values": ["gold", "bronze"]}, {"key": "legacy", "operator": "DoesNotExist"}, '
            '{"key": "team", "operator": "Exists"}, '
            '{"key": "env", "operator": "NotIn", "values": ["dev"]}]',
            "--set",
            "peering.lifetimeSeconds=20",
        ),
        "Deployment",
    )
    for name, value in env_of(deployment).items():
        monkeypatch.setenv(name, value)
    parsed = parse_args(container(deployment).get("args", []))
    assert parsed.shard_selector == (
        "jetpool.dev/shard=blue,tier in (bronze,gold),!legacy,team,env notin (dev)"
    )
    assert parsed.peering_lifetime == 20


def test_by_default_the_operator_takes_every_pool_and_fails_over_within_10_s(
    render: Render, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployment = only(render(), "Deployment")
    assert env_of(deployment)["JETPOOL_SHARD_SELECTOR"] == ""
    for name, value in env_of(deployment).items():
        monkeypatch.setenv(name, value)
    parsed = parse_args([])
    assert parsed.shard_selector == ""
    assert parsed.peering_lifetime == 10


@pytest.mark.parametrize(
    ("variable", "value", "complaint"),
    [
        ("JETPOOL_SHARD_SELECTOR", "shard in blue", "not a label selector requirement"),
        ("JETPOOL_SHARD_SELECTOR", "a=b,", "not a label selector requirement"),
        ("JETPOOL_SHARD_SELECTOR", "shard in ()", "lists no value"),
        ("JETPOOL_PEERING_LIFETIME", "2", "outside 5..3600"),
        ("JETPOOL_PEERING_LIFETIME", "ten", "not a whole number"),
    ],
)
def test_a_bad_shard_selector_or_lifetime_stops_the_operator_at_start(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    variable: str,
    value: str,
    complaint: str,
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SystemExit):
        parse_args([])
    assert complaint in capsys.readouterr().err


def test_the_peering_object_is_named_after_the_release_unless_named(render: Render) -> None:
    """Release "jetpool" keeps the name it always had; another release gets its own."""
    assert only(render(), "ClusterKopfPeering")["metadata"]["name"] == "jetpool"
    green = release("jetpool-green")
    assert only(green, "ClusterKopfPeering")["metadata"]["name"] == "jetpool-green"
    assert env_of(only(green, "Deployment"))["JETPOOL_PEERING"] == "jetpool-green"
    named = render("--set", "peering.name=ops")
    assert only(named, "ClusterKopfPeering")["metadata"]["name"] == "ops"
    assert env_of(only(named, "Deployment"))["JETPOOL_PEERING"] == "ops"


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (BLUE, GREEN),
        (("--set", "watch.namespaces={team-a,team-b}"), ("--set", "watch.namespaces={team-c}")),
    ],
    ids=["label-selector", "namespaces"],
)
def test_two_shard_releases_share_no_object_but_the_crd(
    first: tuple[str, ...], second: tuple[str, ...]
) -> None:
    """Two releases of the chart, one per shard, in the same namespace: nothing but the
    WorkerPool CRD is rendered by both (each has its own peering object, RBAC, policies,
    Services, dashboard ConfigMap), and with crds.enabled=false in the second, nothing at all."""
    one = release("jetpool", *first)
    two = release("jetpool-green", *second)
    assert identities(one) & identities(two) == {
        ("CustomResourceDefinition", None, "workerpools.jetpool.dev")
    }
    two = release("jetpool-green", *second, "--set", "crds.enabled=false")
    assert not identities(one) & identities(two)
    peerings = {env_of(only(objects, "Deployment"))["JETPOOL_PEERING"] for objects in (one, two)}
    assert peerings == {"jetpool", "jetpool-green"}


def test_admission_policies_apply_to_the_release_s_shard_only(render: Render) -> None:
    def match(objects: list[dict[str, Any]]) -> list[dict[str, Any] | None]:
        return [
            o["spec"].get("matchResources")
            for o in objects
            if o["kind"] == "ValidatingAdmissionPolicyBinding"
        ]

    assert match(render()) == [None, None]  # one release for every pool: everywhere
    assert (
        match(render(*BLUE))
        == [{"objectSelector": {"matchLabels": {"jetpool.dev/shard": "blue"}}}] * 2
    )
    by_namespace = {
        "namespaceSelector": {
            "matchExpressions": [
                {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["a", "b"]}
            ]
        }
    }
    assert match(render("--set", "watch.namespaces={a,b}")) == [by_namespace] * 2
    chosen = {"matchLabels": {"tenant": "yes"}}
    assert (
        match(
            render(
                "--set",
                "watch.namespaces={a,b}",
                "--set",
                "admissionPolicy.namespaceSelector.matchLabels.tenant=yes",
            )
        )
        == [{"namespaceSelector": chosen}] * 2
    )


@pytest.mark.parametrize(
    ("value", "complaint"),
    [
        ('shard.selector={"matchLabels": {"jetpool.dev/shard": "no spaces"}}', "shard"),
        ('shard.selector={"matchExpressions": [{"key": "a", "operator": "Maybe"}]}', "shard"),
        ('shard.selector={"matchExpressions": [{"key": "a", "operator": "In"}]}', "shard"),
        (
            'shard.selector={"matchExpressions": '
            '[{"key": "a", "operator": "Exists", "values": ["x"]}]}',
            "shard",
        ),
        ('shard.selector={"labels": {"a": "b"}}', "shard"),
        ('peering={"lifetimeSeconds": 1}', "lifetimeSeconds"),
    ],
)
def test_schema_rejects_a_bad_shard_selector_or_lifetime(
    render: Render, value: str, complaint: str
) -> None:
    with pytest.raises(
        RuntimeError, match=r"values don't meet the specifications of the schema"
    ) as err:
        render("--set-json", value)
    assert complaint in str(err.value)
