"""Prometheus metrics of the operator: its own work, and one gauge set per pool.

Pool gauges mirror ``status`` so dashboards and alerts need no kube-state-metrics CRD config.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping

from prometheus_client import Counter, Gauge, Histogram

RECONCILES = Counter(
    "jetpool_operator_reconciles_total",
    "Control-loop ticks per pool, by result (ok, error).",
    ["namespace", "pool", "result"],
)
RECONCILE_SECONDS = Histogram(
    "jetpool_operator_reconcile_duration_seconds",
    "Duration of one control-loop tick.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
ERRORS = Counter(
    "jetpool_operator_errors_total",
    "Errors while reconciling, by stage (nats, kubernetes, status) and reason.",
    ["namespace", "pool", "stage", "reason"],
)
SCALE_EVENTS = Counter(
    "jetpool_operator_scale_events_total",
    "Replica changes decided by the autoscaler, by direction and reason.",
    ["namespace", "pool", "direction", "reason"],
)
BREAKER_TRIPS = Counter(
    "jetpool_operator_breaker_transitions_total",
    "Circuit-breaker transitions, by target state.",
    ["namespace", "pool", "to"],
)

_POOL = ["namespace", "pool"]
POOL_BACKLOG = Gauge("jetpool_pool_backlog", "Tasks pending or awaiting ack.", _POOL)
POOL_IN_FLIGHT = Gauge("jetpool_pool_in_flight", "Tasks delivered and not yet acked.", _POOL)
POOL_DESIRED = Gauge("jetpool_pool_desired_replicas", "Replicas the autoscaler wants.", _POOL)
POOL_READY = Gauge("jetpool_pool_ready_replicas", "Ready worker replicas.", _POOL)
POOL_THROUGHPUT = Gauge("jetpool_pool_throughput", "Tasks succeeded per second.", _POOL)
POOL_ERROR_RATE = Gauge("jetpool_pool_error_rate", "Failed / finished over the window.", _POOL)
POOL_DEAD_LETTERS = Gauge("jetpool_pool_dead_letters", "Messages in the DLQ stream.", _POOL)
POOL_BREAKER_OPEN = Gauge("jetpool_pool_breaker_open", "1 while the breaker is Open.", _POOL)
POOL_HEALTHY = Gauge("jetpool_pool_healthy", "1 when the pool has no health issue.", _POOL)

POOL_GAUGES = (
    POOL_BACKLOG,
    POOL_IN_FLIGHT,
    POOL_DESIRED,
    POOL_READY,
    POOL_THROUGHPUT,
    POOL_ERROR_RATE,
    POOL_DEAD_LETTERS,
    POOL_BREAKER_OPEN,
    POOL_HEALTHY,
)


class PoolBreakdown:
    """A per-pool gauge with one more label whose values come and go (priority levels, health
    issue types): a value a pool no longer reports loses its series, as does a deleted pool."""

    def __init__(self, gauge: Gauge) -> None:
        self.gauge = gauge
        self._seen: dict[tuple[str, str], set[str]] = {}

    def set(self, namespace: str, pool: str, values: Mapping[str, float] | None) -> None:
        current = dict(values or {})
        for gone in self._seen.pop((namespace, pool), set()) - current.keys():
            with contextlib.suppress(KeyError):
                self.gauge.remove(namespace, pool, gone)
        for label, value in current.items():
            self.gauge.labels(namespace, pool, label).set(value)
        if current:
            self._seen[(namespace, pool)] = set(current)


POOL_LEVEL_BACKLOG = PoolBreakdown(
    Gauge(
        "jetpool_pool_level_backlog",
        "Tasks pending or awaiting ack per priority level of a pool with priorities or ordered "
        "keys (level 'ordered': all ordered partitions; 'default': the unordered tasks of a "
        "pool with ordered keys only).",
        [*_POOL, "level"],
    )
)
POOL_HEALTH_ISSUES = PoolBreakdown(
    Gauge(
        "jetpool_pool_health_issue",
        "1 for each health issue a pool has now, by type (docs/health.md): what the alerts "
        "on stuck tasks and workers fire on.",
        [*_POOL, "type"],
    )
)


def set_level_backlog(namespace: str, pool: str, by_level: Mapping[str, int] | None) -> None:
    """A laned pool's ``status.backlogByLevel``; a level no longer there (or a pool whose
    backlog could not be read, or that is no longer laned) loses its series."""
    POOL_LEVEL_BACKLOG.set(namespace, pool, by_level)


def set_health_issues(namespace: str, pool: str, issue_types: Iterable[str]) -> None:
    POOL_HEALTH_ISSUES.set(namespace, pool, dict.fromkeys(issue_types, 1))


_POOL_COUNTERS = (RECONCILES, ERRORS, SCALE_EVENTS, BREAKER_TRIPS)
_counted: dict[tuple[str, str], set[tuple[Counter, tuple[str, ...]]]] = {}


def count(counter: Counter, namespace: str, pool: str, *labels: str) -> None:
    """Increment a per-pool counter, remembering the series so forget_pool can drop it."""
    counter.labels(namespace, pool, *labels).inc()
    _counted.setdefault((namespace, pool), set()).add((counter, labels))


def forget_pool(namespace: str, pool: str) -> None:
    """Drop a deleted pool's series so dashboards do not show ghosts."""
    for gauge in POOL_GAUGES:
        with contextlib.suppress(KeyError):
            gauge.remove(namespace, pool)
    set_level_backlog(namespace, pool, None)
    set_health_issues(namespace, pool, ())
    for counter, labels in _counted.pop((namespace, pool), set()):
        with contextlib.suppress(KeyError):
            counter.remove(namespace, pool, *labels)
