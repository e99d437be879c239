"""The chart's alert rules, evaluated by promtool (built from the pinned Prometheus module) on
synthetic series: each alert fires when it should, with the labels and text it should have,
and stays quiet when it should."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.testbed.processes import observability_binary
from tests.packaging.conftest import Render, only

POOL = {"namespace": "shop", "pool": "emails"}


@pytest.fixture(scope="session")
def promtool() -> str:
    return str(observability_binary("promtool"))


@pytest.fixture(scope="module")
def rules(render: Render) -> dict[str, dict[str, Any]]:
    rule = only(render("--set", "metrics.prometheusRule.enabled=true"), "PrometheusRule")
    return {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}


def annotations(rule: dict[str, Any], labels: dict[str, str], value: str = "") -> dict[str, str]:
    """The rule's annotations as Prometheus renders them for ``labels`` and ``value`` (only
    the template forms the chart uses)."""

    def render(text: str) -> str:
        text = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m[1]], text)
        return re.sub(r"\{\{ \$value( \| humanizeDuration)? \}\}", value, text)

    return {k: render(v) for k, v in rule["annotations"].items()}


def alert(rule: dict[str, Any], labels: dict[str, str], value: str = "") -> dict[str, Any]:
    return {
        "exp_labels": {**labels, **rule["labels"]},
        "exp_annotations": annotations(rule, labels, value),
    }


def case(
    series: list[tuple[str, str]], name: str, at: str, fired: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "interval": "1m",
        "input_series": [{"series": s, "values": v} for s, v in series],
        "alert_rule_test": [{"eval_time": at, "alertname": name, "exp_alerts": fired}],
    }


def promtool_cases(rules: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    pool = 'namespace="shop", pool="emails"'
    job = re.search(r'job="([^"]+)", namespace="([^"]+)"', rules["JetpoolOperatorDown"]["expr"])
    assert job is not None
    operator_up = f'up{{job="{job[1]}", namespace="{job[2]}", instance="10.0.0.7:8080"}}'
    worker = {**POOL, "worker": "emails-worker-7d9-x2"}

    def latency(le: str) -> str:
        return f'jetpool_task_duration_seconds_bucket{{{pool}, worker="w1", le="{le}"}}'

    return [
        case(
            [(operator_up, "0x10")],
            "JetpoolOperatorDown",
            "6m",
            [alert(rules["JetpoolOperatorDown"], {})],
        ),
        case([(operator_up, "1x10")], "JetpoolOperatorDown", "6m", []),
        case(
            [(f"jetpool_pool_breaker_open{{{pool}}}", "0 1x5")],
            "JetpoolCircuitBreakerOpen",
            "3m",
            [alert(rules["JetpoolCircuitBreakerOpen"], POOL)],
        ),
        case(
            [(f"jetpool_pool_backlog{{{pool}}}", "20000x20")],
            "JetpoolBacklogHigh",
            "16m",
            [alert(rules["JetpoolBacklogHigh"], POOL, "20000")],
        ),
        case([(f"jetpool_pool_backlog{{{pool}}}", "20000x20")], "JetpoolBacklogHigh", "14m", []),
        case(
            [
                (f"jetpool_pool_backlog{{{pool}}}", "5x15"),
                (f"jetpool_pool_throughput{{{pool}}}", "0x15"),
            ],
            "JetpoolBacklogStalled",
            "11m",
            [alert(rules["JetpoolBacklogStalled"], POOL)],
        ),
        case(
            [
                (f"jetpool_pool_backlog{{{pool}}}", "5x15"),
                (f"jetpool_pool_throughput{{{pool}}}", "2x15"),
            ],
            "JetpoolBacklogStalled",
            "11m",
            [],
        ),
        case(
            [
                (f"jetpool_pool_desired_replicas{{{pool}}}", "3x20"),
                (f"jetpool_pool_ready_replicas{{{pool}}}", "1x20"),
            ],
            "JetpoolPoolReplicasMissing",
            "16m",
            [alert(rules["JetpoolPoolReplicasMissing"], POOL)],
        ),
        case(
            [
                (
                    'jetpool_fetching_paused{namespace="shop", pool="emails", '
                    'worker="emails-worker-7d9-x2", reason="memory"}',
                    "1x10",
                )
            ],
            "JetpoolWorkerMemoryPaused",
            "6m",
            [alert(rules["JetpoolWorkerMemoryPaused"], worker)],
        ),
        case(
            [
                (
                    'jetpool_fetching_paused{namespace="shop", pool="emails", '
                    'worker="emails-worker-7d9-x2", reason="memory"}',
                    "1x3 0x7",
                )
            ],
            "JetpoolWorkerMemoryPaused",
            "6m",
            [],
        ),
        # every run took between 60 s and 300 s: p95 interpolates to 60 + 0.95 x 240 = 288 s
        case(
            [
                (latency("60"), "0x30"),
                (latency("300"), "0+10x30"),
                (latency("+Inf"), "0+10x30"),
            ],
            "JetpoolTaskLatencyHigh",
            "25m",
            [alert(rules["JetpoolTaskLatencyHigh"], POOL, "4m 48s")],
        ),
        case(
            [
                (latency("60"), "0+10x30"),
                (latency("300"), "0+10x30"),
                (latency("+Inf"), "0+10x30"),
            ],
            "JetpoolTaskLatencyHigh",
            "25m",
            [],
        ),
        case(
            [(f'jetpool_pool_health_issue{{{pool}, type="StuckTasks"}}', "1x10")],
            "JetpoolTasksStuck",
            "6m",
            [alert(rules["JetpoolTasksStuck"], POOL)],
        ),
        case(
            [(f'jetpool_pool_health_issue{{{pool}, type="WorkersNotFetching"}}', "1x10")],
            "JetpoolWorkersNotFetching",
            "3m",
            [alert(rules["JetpoolWorkersNotFetching"], POOL)],
        ),
        case(
            [(f'jetpool_pool_health_issue{{{pool}, type="WorkersMemoryPaused"}}', "1x10")],
            "JetpoolWorkersNotFetching",
            "3m",
            [],
        ),
    ]


def promtool_test(
    promtool: str, tmp_path: Path, rules: list[dict[str, Any]], tests: list[dict[str, Any]]
) -> None:
    """``promtool test rules`` of ``tests`` against ``rules``; fails with its report."""
    (tmp_path / "rules.yaml").write_text(
        yaml.safe_dump({"groups": [{"name": "jetpool", "rules": rules}]})
    )
    suite = {"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": tests}
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(suite))
    proc = subprocess.run(
        [promtool, "test", "rules", "tests.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_alert_fires_when_it_should_and_stays_quiet_otherwise(
    promtool: str, rules: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    tests = promtool_cases(rules)
    tested = {t["alert_rule_test"][0]["alertname"] for t in tests}
    assert tested >= set(rules) - {"JetpoolDeadLettersGrowing"}  # its own test below
    promtool_test(promtool, tmp_path, list(rules.values()), tests)


def test_dead_letter_growth_fires_once_the_window_sees_more_than_the_threshold(
    promtool: str, rules: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    rule = rules["JetpoolDeadLettersGrowing"]
    series = 'jetpool_pool_dead_letters{namespace="shop", pool="emails"}'
    quiet = case([(series, "7x40")], "JetpoolDeadLettersGrowing", "30m", [])
    # growing: its value is delta's extrapolation, so the firing alert is checked as a series
    growing = {
        "interval": "1m",
        "input_series": [{"series": series, "values": "0x20 5x20"}],
        "promql_expr_test": [
            {
                "expr": 'ALERTS{alertname="JetpoolDeadLettersGrowing", alertstate="firing"}',
                "eval_time": "25m",
                "exp_samples": [
                    {
                        "labels": 'ALERTS{alertname="JetpoolDeadLettersGrowing", '
                        'alertstate="firing", namespace="shop", pool="emails", '
                        f'severity="{rule["labels"]["severity"]}"}}',
                        "value": 1,
                    }
                ],
            }
        ],
    }
    promtool_test(promtool, tmp_path, [rule], [quiet, growing])
