"""Aggregation of worker stats snapshots into pool-wide rates."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from jetpool_operator.core.worker_stats import (
    PoolStats,
    StatsConfig,
    StatsMemory,
    aggregate,
    pick_trial_worker,
)
from jetpool_protocol.stats import WorkerStats

from .support import at, snapshot

CONFIG = StatsConfig(window_seconds=30, stats_interval_seconds=1, stale_after_intervals=5)


def run(
    ticks: list[tuple[float, list[WorkerStats]]],
    memory: StatsMemory | None = None,
    config: StatsConfig = CONFIG,
    epoch: int = 0,
) -> tuple[PoolStats, StatsMemory]:
    mem = memory or StatsMemory()
    stats = PoolStats()
    for t, snaps in ticks:
        stats, mem = aggregate(mem, snaps, at(t), config, epoch=epoch)
    return stats, mem


class TestCounters:
    def test_first_sight_of_a_long_running_worker_is_a_baseline_not_a_burst(self) -> None:
        stats, _ = run([(100, [snapshot("w1", 100, succeeded=5000, failed=300)])])
        assert stats.window.total == 0

    def test_rates_come_from_counter_differences_between_ticks(self) -> None:
        stats, _ = run(
            [
                (100, [snapshot("w1", 100, succeeded=100, failed=1)]),
                (101, [snapshot("w1", 101, succeeded=110, failed=3)]),
                (102, [snapshot("w1", 102, succeeded=130, failed=3)]),
            ]
        )
        assert (stats.window.succeeded, stats.window.failed) == (30, 2)
        assert stats.throughput == 15.0  # 30 succeeded over the 2 s observed so far
        assert stats.error_rate == 2 / 32

    def test_counters_of_several_workers_add_up(self) -> None:
        stats, _ = run(
            [
                (10, [snapshot("a", 10, succeeded=1), snapshot("b", 10, succeeded=7)]),
                (11, [snapshot("a", 11, succeeded=4), snapshot("b", 11, succeeded=17)]),
            ]
        )
        assert stats.window.succeeded == 13

    def test_restart_counts_the_new_incarnations_counters_whole(self) -> None:
        stats, _ = run(
            [
                (100, [snapshot("w1", 100, succeeded=100)]),
                (101, [snapshot("w1", 101, started=100.5, succeeded=3, failed=1)]),
            ]
        )
        assert (stats.window.succeeded, stats.window.failed) == (3, 1)

    def test_counters_going_backwards_without_new_start_time_count_as_a_reset(self) -> None:
        stats, _ = run(
            [
                (100, [snapshot("w1", 100, succeeded=100)]),
                (101, [snapshot("w1", 101, succeeded=4)]),
            ]
        )
        assert stats.window.succeeded == 4

    def test_resent_or_out_of_order_snapshots_add_nothing(self) -> None:
        stats, _ = run(
            [
                (100, [snapshot("w1", 100, succeeded=10)]),
                (101, [snapshot("w1", 101, succeeded=20)]),
                (102, [snapshot("w1", 101, succeeded=20)]),
                (103, [snapshot("w1", 100.5, succeeded=15)]),
            ]
        )
        assert stats.window.succeeded == 10

    def test_late_snapshot_of_a_previous_incarnation_is_ignored(self) -> None:
        stats, _ = run(
            [
                (100, [snapshot("w1", 100, started=90, succeeded=2)]),
                (101, [snapshot("w1", 99, started=50, succeeded=900)]),
            ]
        )
        assert stats.window.succeeded == 0

    def test_a_young_worker_joining_an_observed_pool_counts_from_zero(self) -> None:
        stats, _ = run(
            [
                (100, [snapshot("old", 100, succeeded=10)]),
                (
                    101,
                    [
                        snapshot("old", 101, succeeded=10),
                        snapshot("new", 101, started=99, succeeded=6),
                    ],
                ),
            ]
        )
        assert stats.window.succeeded == 6

    def test_of_several_snapshots_of_one_worker_the_newest_wins(self) -> None:
        stats, _ = run(
            [
                (100, [snapshot("w1", 100, succeeded=10)]),
                (101, [snapshot("w1", 101, succeeded=30), snapshot("w1", 100.5, succeeded=20)]),
            ]
        )
        assert stats.window.succeeded == 20


class TestWindow:
    def test_completions_older_than_the_window_are_forgotten(self) -> None:
        ticks = [(0.0, [snapshot("w1", 0, succeeded=0)])]
        ticks += [(1.0, [snapshot("w1", 1, succeeded=50, failed=50)])]
        ticks += [
            (float(t), [snapshot("w1", t, succeeded=50 + t, failed=50)]) for t in range(2, 40)
        ]
        stats, _ = run(ticks)
        assert stats.window.failed == 0
        assert stats.window.succeeded == 30  # one per second over the 30 s window

    def test_window_clipped_at_not_before_drops_completions_before_it(self) -> None:
        _, mem = run(
            [
                (0, [snapshot("w1", 0)]),
                (1, [snapshot("w1", 1, failed=40)]),
                (2, [snapshot("w1", 2, failed=40, succeeded=3)]),
                (3, [snapshot("w1", 3, failed=40, succeeded=5)]),
            ]
        )
        assert mem.window(at(3), 30).failed == 40
        clipped = mem.window(at(3), 30, not_before=at(1.5))
        assert (clipped.succeeded, clipped.failed) == (5, 0)

    def test_error_rate_is_withheld_below_min_tasks(self) -> None:
        stats, _ = run([(0, [snapshot("w1", 0)]), (1, [snapshot("w1", 1, failed=4)])])
        assert stats.window.error_rate_if(5) is None
        assert stats.window.error_rate_if(4) == 1.0

    def test_stored_buckets_stay_bounded_for_a_long_window(self) -> None:
        config = StatsConfig(window_seconds=3600, max_buckets=30)
        ticks = [(float(t), [snapshot("w1", t, succeeded=t)]) for t in range(0, 4000, 7)]
        _, mem = run(ticks, config=config)
        assert len(mem.buckets) <= 30

    def test_a_changed_bucket_width_discards_the_old_buckets(self) -> None:
        _, mem = run([(0, [snapshot("w1", 0)]), (1, [snapshot("w1", 1, succeeded=9)])])
        wider = StatsConfig(window_seconds=600)
        stats, _ = aggregate(mem, [snapshot("w1", 2, succeeded=10)], at(2), wider)
        assert stats.window.succeeded == 1

    @given(st.lists(st.integers(min_value=0, max_value=1000), min_size=1, max_size=25))
    def test_window_sums_every_counter_increase_within_it(self, increments: list[int]) -> None:
        ticks = [(0.0, [snapshot("w1", 0, succeeded=7)])]
        total = 7
        for i, inc in enumerate(increments, start=1):
            total += inc
            ticks.append((float(i), [snapshot("w1", i, succeeded=total)]))
        stats, _ = run(ticks)
        assert stats.window.succeeded == total - 7


class TestLiveness:
    def test_a_worker_silent_for_the_stale_interval_is_evicted(self) -> None:
        snap = snapshot("w1", 0, in_flight=3, oldest=12)
        stats, mem = run([(0, [snap]), (5, [snap])])
        assert stats.live_workers == ("w1",)
        assert stats.in_flight == 3
        stats, _ = aggregate(mem, [snap], at(5.5), CONFIG)
        assert stats.live_workers == ()
        assert stats.stale_workers == ("w1",)
        assert stats.in_flight == 0

    def test_an_evicted_worker_is_not_revived_by_its_old_cached_snapshot(self) -> None:
        snap = snapshot("w1", 0)
        stats, _ = run([(0, [snap]), (10, [snap]), (20, [snap])])
        assert stats.live_workers == ()

    def test_a_fresh_snapshot_brings_an_evicted_worker_back(self) -> None:
        stats, _ = run([(0, [snapshot("w1", 0)]), (10, [snapshot("w1", 10)])])
        assert stats.live_workers == ("w1",)

    def test_evicted_workers_are_forgotten_after_the_forget_period(self) -> None:
        _, mem = run([(0, [snapshot("w1", 0)]), (CONFIG.forget_after_seconds + 1, [])])
        assert mem.workers == ()

    def test_staleness_follows_the_operator_clock_not_the_workers(self) -> None:
        skewed = [snapshot("w1", t - 3600, started=-7200) for t in range(0, 20)]
        stats, _ = run([(float(t), [s]) for t, s in enumerate(skewed)])
        assert stats.live_workers == ("w1",)

    def test_in_flight_and_oldest_age_come_from_live_workers(self) -> None:
        stats, _ = run(
            [
                (
                    0,
                    [
                        snapshot("a", 0, in_flight=2, oldest=40),
                        snapshot("b", 0, in_flight=1, oldest=90, fetching=False),
                        snapshot("c", 0),
                    ],
                )
            ]
        )
        assert (stats.in_flight, stats.oldest_in_flight_seconds) == (3, 90)
        assert stats.fetching_workers == 2

    def test_last_progress_moves_only_when_tasks_finish(self) -> None:
        stats, _ = run(
            [
                (0, [snapshot("w1", 0)]),
                (1, [snapshot("w1", 1, failed=1)]),
                (2, [snapshot("w1", 2, failed=1)]),
            ]
        )
        assert stats.last_progress_at == at(1)


class TestTrials:
    def test_trial_counts_only_come_from_the_current_epoch(self) -> None:
        stats, _ = run(
            [
                (
                    0,
                    [
                        snapshot("a", 0, epoch=4, trial_succeeded=2, trial_failed=1),
                        snapshot("b", 0, epoch=3, trial_succeeded=9, trial_failed=9),
                    ],
                )
            ],
            epoch=4,
        )
        assert (stats.trial_succeeded, stats.trial_failed) == (2, 1)

    def test_trial_worker_is_the_smallest_live_name(self) -> None:
        assert pick_trial_worker(["w-b", "w-a", "w-c"]) == "w-a"

    def test_trial_worker_is_kept_while_it_stays_live(self) -> None:
        assert pick_trial_worker(["w-a", "w-c"], current="w-c") == "w-c"

    def test_a_gone_trial_worker_is_replaced(self) -> None:
        assert pick_trial_worker(["w-b"], current="w-a") == "w-b"

    def test_no_live_worker_means_no_trial_worker(self) -> None:
        assert pick_trial_worker([], current="w-a") is None
