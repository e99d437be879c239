"""What `jetpool top` shows, folded from worker stats and pool readings (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from jetpool_cli.top_view import PoolReading, TopModel
from jetpool_protocol.stats import WorkerStats

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
KEY = ("shop", "emails")


def stats(worker: str, t: float, succeeded: int, failed: int = 0, **more: object) -> WorkerStats:
    return WorkerStats.model_validate(
        {
            "worker": worker,
            "pool": "emails",
            "namespace": "shop",
            "at": T0 + timedelta(seconds=t),
            "started_at": more.pop("started_at", T0),
            "succeeded": succeeded,
            "failed": failed,
            "concurrency": 4,
            "in_flight": 2,
            **more,
        }
    )


def test_rates_are_the_pools_growth_over_the_window_summed_per_worker() -> None:
    model = TopModel(window=10)
    for t in range(6):
        model.saw(stats("a", t, 100 + 10 * t), now=t)
        model.saw(stats("b", t, 500 + 5 * t, failed=t), now=t)
        model.read(KEY, PoolReading(backlog=40, dead_letters=3 + t, breaker="Closed"))
        model.tick(now=t)
    [row] = model.pools(now=5)
    assert row.workers == 2
    assert (row.in_flight, row.slots) == (4, 8)
    assert row.rate == 15  # 10/s + 5/s, not the counters since the workers started
    assert row.error_rate == 5 / (75 + 5)
    assert row.dead_letter_growth == 5
    assert row.backlog == 40


def test_a_worker_that_restarts_or_leaves_never_makes_a_rate_negative() -> None:
    model = TopModel(window=10, stale_after=2)
    model.saw(stats("a", 0, 1000), now=0)
    model.tick(now=0)
    restarted = stats("a", 1, 3, started_at=T0 + timedelta(seconds=1))
    model.saw(restarted, now=1)
    model.tick(now=1)
    [row] = model.pools(now=1)
    assert row.rate == 3
    [row] = model.pools(now=10)  # silent since: gone from the view
    assert row.workers == 0


def test_the_workers_view_says_why_a_worker_is_not_fetching() -> None:
    model = TopModel()
    model.saw(stats("b", 0, 0, fetching=False, paused_reason="memory"), now=0)
    model.saw(stats("a", 0, 0, pulled_ago_seconds=0.2, lingering_threads=1), now=0)
    rows = model.workers(KEY, now=1)
    assert [(r.worker, r.state, r.lingering) for r in rows] == [
        ("a", "fetching", 1),
        ("b", "memory", 0),
    ]
    assert model.pools(now=1)[0].paused == 1


def test_a_late_snapshot_is_ignored() -> None:
    model = TopModel()
    model.saw(stats("a", 5, 50), now=5)
    model.saw(stats("a", 4, 40), now=6)
    assert model.workers(KEY, now=6)[0].rate is None  # one point only: the late one was dropped
