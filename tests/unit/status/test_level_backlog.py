"""A laned pool's backlog: summed over its consumers, shown per level, exported, forgotten."""

from __future__ import annotations

from prometheus_client import REGISTRY

from jetpool_operator import metrics
from jetpool_operator.adapters.nats import ConsumerBacklog
from jetpool_operator.core.status_patch import status_patch


def _level(namespace: str, pool: str, level: str) -> float | None:
    return REGISTRY.get_sample_value(
        "jetpool_pool_level_backlog", {"namespace": namespace, "pool": pool, "level": level}
    )


def test_every_count_of_the_lanes_sums_into_the_pools_backlog() -> None:
    total = ConsumerBacklog.total(
        [ConsumerBacklog(3, 1, 0, 2), ConsumerBacklog(0, 1, 1, 2), ConsumerBacklog(5, 0, 0, 0)]
    )
    assert total == ConsumerBacklog(pending=8, ack_pending=2, redelivered=1, waiting=4)
    assert total.backlog == 10
    only = ConsumerBacklog(4, 2, 1, 0)
    assert ConsumerBacklog.total([only]) == only  # a plain pool: its one consumer


def test_the_level_backlog_is_volatile_like_the_backlog() -> None:
    old = {"backlog": 1, "backlogByLevel": {"high": 1, "low": 0}}
    new = {"backlog": 2, "backlogByLevel": {"high": 1, "low": 1}}
    assert status_patch(old, new, seconds_since_last_patch=0.5, volatile_interval=2) is None
    assert status_patch(old, new, seconds_since_last_patch=3, volatile_interval=2) == new


def test_level_series_follow_the_levels_and_go_with_the_pool() -> None:
    metrics.set_level_backlog("ns-l", "p", {"high": 2, "low": 1, "ordered": 5})
    assert (_level("ns-l", "p", "high"), _level("ns-l", "p", "ordered")) == (2.0, 5.0)
    metrics.set_level_backlog("ns-l", "p", {"high": 0, "ordered": 1})
    assert _level("ns-l", "p", "low") is None  # a level the spec dropped
    assert _level("ns-l", "p", "ordered") == 1.0
    metrics.forget_pool("ns-l", "p")
    assert _level("ns-l", "p", "high") is None
    assert _level("ns-l", "p", "ordered") is None
