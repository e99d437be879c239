"""Health issues derived from one tick's observations plus remembered onsets."""

from __future__ import annotations

import json
from dataclasses import replace

from jetpool_operator.core.health import (
    Health,
    HealthConfig,
    HealthMemory,
    HealthObservation,
    IssueType,
    Severity,
    assess,
)
from jetpool_protocol.control import BreakerState

from .support import at

CONFIG = HealthConfig(
    starvation_seconds=60,
    task_timeout_seconds=30,
    stuck_task_factor=2,
    dead_letter_growth=10,
    dead_letter_window_seconds=300,
    high_error_rate=0.25,
    unavailable_seconds=120,
    nats_unreachable_seconds=5,
)
FINE = HealthObservation(pending=0, desired_replicas=2, ready_replicas=2, dead_letters=0)


def run(ticks: list[tuple[float, HealthObservation]]) -> tuple[Health, HealthMemory]:
    memory, health = HealthMemory(), Health(healthy=True)
    for t, obs in ticks:
        health, memory = assess(obs, memory, at(t), CONFIG)
    return health, memory


def types(health: Health) -> list[IssueType]:
    return [i.type for i in health.issues]


def test_a_quiet_pool_is_healthy_without_issues() -> None:
    health, _ = run([(0, FINE), (1000, FINE)])
    assert health == Health(healthy=True, issues=())


class TestStarvation:
    def test_waiting_work_with_no_progress_is_starvation_after_the_grace(self) -> None:
        starving = replace(FINE, pending=40, last_progress_at=at(0))
        health, _ = run([(0, starving), (59, starving)])
        assert types(health) == []
        health, _ = run([(0, starving), (60, starving)])
        assert types(health) == [IssueType.STARVATION]
        assert health.issues[0].severity is Severity.CRITICAL
        assert health.issues[0].since == at(0)
        assert not health.healthy

    def test_starvation_counts_from_the_last_progress_not_from_the_first_waiting_task(
        self,
    ) -> None:
        waiting = replace(FINE, pending=40, last_progress_at=at(0))
        later = replace(waiting, last_progress_at=at(50))
        health, _ = run([(0, waiting), (50, later), (100, later)])
        assert types(health) == []
        health, _ = run([(0, waiting), (50, later), (110, later)])
        assert health.issues[0].since == at(50)

    def test_no_ready_replicas_at_all_starves_too(self) -> None:
        nobody = replace(FINE, pending=40, desired_replicas=3, ready_replicas=0)
        health, _ = run([(0, nobody), (60, nobody)])
        assert IssueType.STARVATION in types(health)
        assert "no ready replicas" in health.issues[0].message

    def test_busy_workers_or_a_paused_pool_or_an_open_breaker_are_not_starving(self) -> None:
        base = replace(FINE, pending=40)
        for obs in (
            replace(base, in_flight=3),
            replace(base, paused=True),
            replace(base, breaker=BreakerState.OPEN, breaker_since=at(0)),
        ):
            health, _ = run([(0, obs), (500, obs)])
            assert IssueType.STARVATION not in types(health)


class TestOtherIssues:
    def test_a_task_in_flight_beyond_the_timeout_multiple_is_stuck(self) -> None:
        stuck = replace(FINE, in_flight=1, oldest_in_flight_seconds=61)
        health, _ = run([(0, replace(FINE, in_flight=1, oldest_in_flight_seconds=60)), (1, stuck)])
        assert types(health) == [IssueType.STUCK_TASKS]
        assert health.issues[0].since == at(1)
        assert not health.healthy  # any issue, even a Warning, makes the pool unhealthy

    def test_dead_letter_growth_beyond_the_threshold_within_the_window(self) -> None:
        ticks = [(0.0, replace(FINE, dead_letters=100)), (100.0, replace(FINE, dead_letters=110))]
        assert types(run(ticks)[0]) == []
        ticks.append((200.0, replace(FINE, dead_letters=111)))
        assert types(run(ticks)[0]) == [IssueType.DEAD_LETTER_GROWTH]

    def test_dead_letters_older_than_the_window_are_not_growth(self) -> None:
        ticks = [(0.0, replace(FINE, dead_letters=0)), (10.0, replace(FINE, dead_letters=50))]
        ticks.append((311.0, replace(FINE, dead_letters=55)))
        assert types(run(ticks)[0]) == []

    def test_a_purged_dead_letter_stream_is_not_growth(self) -> None:
        ticks = [(0.0, replace(FINE, dead_letters=500)), (5.0, replace(FINE, dead_letters=0))]
        ticks.append((6.0, replace(FINE, dead_letters=3)))
        assert types(run(ticks)[0]) == []

    def test_dead_letter_memory_stays_small(self) -> None:
        ticks = [(float(t), replace(FINE, dead_letters=t)) for t in range(1000)]
        _, memory = run(ticks)
        assert len(memory.dead_letter_samples) <= 32

    def test_a_high_error_rate_is_a_warning(self) -> None:
        health, _ = run([(0, replace(FINE, error_rate=0.3))])
        assert types(health) == [IssueType.HIGH_ERROR_RATE]
        assert health.issues[0].severity is Severity.WARNING

    def test_too_few_ready_replicas_for_long_enough_is_unavailable(self) -> None:
        short = replace(FINE, desired_replicas=5, ready_replicas=3)
        assert types(run([(0, short), (119, short)])[0]) == []
        assert types(run([(0, short), (120, short)])[0]) == [IssueType.UNAVAILABLE_REPLICAS]

    def test_a_gap_in_a_condition_restarts_its_clock(self) -> None:
        short = replace(FINE, desired_replicas=5, ready_replicas=3)
        assert types(run([(0, short), (60, FINE), (61, short), (150, short)])[0]) == []

    def test_nats_unreachable_for_a_few_seconds_is_critical(self) -> None:
        down = replace(FINE, pending=None, nats_reachable=False, dead_letters=None)
        assert types(run([(0, down), (4, down)])[0]) == []
        health, _ = run([(0, down), (5, down)])
        assert types(health) == [IssueType.NATS_UNREACHABLE]
        assert not health.healthy

    def test_an_open_breaker_is_critical_and_half_open_a_warning(self) -> None:
        opened = replace(FINE, breaker=BreakerState.OPEN, breaker_since=at(3))
        health, _ = run([(10, opened)])
        assert [(i.type, i.severity, i.since) for i in health.issues] == [
            (IssueType.BREAKER_OPEN, Severity.CRITICAL, at(3))
        ]
        half = replace(opened, breaker=BreakerState.HALF_OPEN)
        assert run([(10, half)])[0].issues[0].severity is Severity.WARNING


def test_issues_keep_their_since_across_ticks_and_come_critical_first() -> None:
    bad = HealthObservation(
        pending=40,
        desired_replicas=3,
        ready_replicas=1,
        error_rate=0.9,
        nats_reachable=True,
        last_progress_at=at(0),
        dead_letters=0,
    )
    health, _ = run([(0, bad), (100, bad), (200, bad)])
    assert [(i.type, i.since) for i in health.issues] == [
        (IssueType.STARVATION, at(0)),
        (IssueType.HIGH_ERROR_RATE, at(0)),
        (IssueType.UNAVAILABLE_REPLICAS, at(0)),
    ]


def test_memory_survives_a_json_round_trip_and_keeps_since() -> None:
    short = replace(FINE, desired_replicas=5, ready_replicas=3, dead_letters=4)
    _, memory = run([(0, short), (60, short)])
    restored = HealthMemory.from_dict(json.loads(json.dumps(memory.to_dict())))
    assert restored == memory
    health, _ = assess(short, restored, at(130), CONFIG)
    assert health.issues[0].since == at(0)


def test_unreadable_memory_starts_afresh() -> None:
    assert HealthMemory.from_dict({"since": ["not", "a", "map"]}) == HealthMemory()
