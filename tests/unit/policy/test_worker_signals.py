"""Health sees what workers see: memory pauses, an unread breaker state, overrun handler
threads and wedged fetch loops, each named by worker id."""

from __future__ import annotations

from jetpool_operator.core.health import (
    HealthConfig,
    HealthMemory,
    HealthObservation,
    IssueType,
    Severity,
    assess,
)
from jetpool_operator.core.worker_signals import SignalLimits, WorkerSignals, named, read_signals
from jetpool_protocol.stats import WorkerStats

from .support import at

LIMITS = SignalLimits(control_stale_seconds=30, not_pulling_seconds=60)


def snap(worker: str, up: float = 120.0, **fields: object) -> WorkerStats:
    values: dict[str, object] = {
        "worker": worker,
        "pool": "p",
        "namespace": "ns",
        "at": at(up),
        "started_at": at(0),
        "concurrency": 4,
        "pulled_ago_seconds": 0.5,
        "control_read_ago_seconds": 2.0,
    }
    values.update(fields)
    return WorkerStats.model_validate(values)


class TestReadingTheWorkersStats:
    def test_a_healthy_pool_signals_nothing(self) -> None:
        assert not read_signals([snap("a"), snap("b")], LIMITS)

    def test_memory_paused_workers_are_named(self) -> None:
        signals = read_signals(
            [snap("b", fetching=False, paused_reason="memory"), snap("a")], LIMITS
        )
        assert signals.memory_paused == ("b",)

    def test_a_worker_that_stopped_reading_the_control_state_is_named(self) -> None:
        signals = read_signals([snap("a", control_read_ago_seconds=31.0), snap("b")], LIMITS)
        assert signals.control_unknown == ("a",)

    def test_a_worker_that_never_read_it_is_named_only_once_it_has_been_up_a_while(self) -> None:
        waiting = {"control_read_ago_seconds": None, "fetching": False, "paused_reason": "breaker"}
        young = snap("a", up=5, **waiting)
        old = snap("b", up=40, **waiting)
        assert read_signals([young, old], LIMITS).control_unknown == ("b",)

    def test_overrun_handler_threads_are_counted_per_worker(self) -> None:
        signals = read_signals([snap("a", lingering_threads=2), snap("b")], LIMITS)
        assert signals.lingering == (("a", 2),)

    def test_a_worker_with_free_slots_that_stopped_pulling_is_named(self) -> None:
        wedged = snap("a", pulled_ago_seconds=61.0, in_flight=1)
        busy = snap("b", pulled_ago_seconds=300.0, in_flight=4)  # every slot taken: fine
        paused = snap("c", pulled_ago_seconds=300.0, fetching=False, paused_reason="memory")
        assert read_signals([wedged, busy, paused], LIMITS).not_pulling == ("a",)

    def test_stats_of_older_workers_without_the_new_fields_raise_nothing(self) -> None:
        legacy = WorkerStats(worker="a", pool="p", namespace="ns", at=at(500), started_at=at(0))
        assert not read_signals([legacy], LIMITS)


class TestHealthIssues:
    def test_each_worker_signal_becomes_an_issue_naming_the_workers_at_once(self) -> None:
        signals = WorkerSignals(
            memory_paused=("pool-worker-1",),
            control_unknown=("pool-worker-2",),
            lingering=(("pool-worker-3", 2),),
            not_pulling=("pool-worker-4",),
        )
        obs = HealthObservation(
            pending=0, desired_replicas=4, ready_replicas=4, dead_letters=0, workers=signals
        )
        health, _ = assess(obs, HealthMemory(), at(10), _config())
        by_type = {i.type: i for i in health.issues}
        assert not health.healthy
        assert "pool-worker-1" in by_type[IssueType.WORKERS_MEMORY_PAUSED].message
        assert "pool-worker-2" in by_type[IssueType.WORKERS_CONTROL_UNKNOWN].message
        assert "pool-worker-3 (2)" in by_type[IssueType.LINGERING_HANDLERS].message
        assert by_type[IssueType.WORKERS_NOT_FETCHING].severity is Severity.CRITICAL
        assert health.issues[0].type is IssueType.WORKERS_NOT_FETCHING  # critical first

    def test_an_issue_keeps_its_onset_while_it_lasts_and_goes_when_the_workers_recover(
        self,
    ) -> None:
        paused = HealthObservation(
            pending=0,
            desired_replicas=1,
            ready_replicas=1,
            dead_letters=0,
            workers=WorkerSignals(memory_paused=("w",)),
        )
        first, memory = assess(paused, HealthMemory(), at(10), _config())
        later, memory = assess(paused, memory, at(20), _config())
        assert first.issues[0].since == later.issues[0].since == at(10)
        recovered = HealthObservation(
            pending=0, desired_replicas=1, ready_replicas=1, dead_letters=0
        )
        health, _ = assess(recovered, memory, at(30), _config())
        assert health.healthy


def test_long_lists_of_workers_are_cut_short() -> None:
    assert named([f"w{i}" for i in range(8)]) == "w0, w1, w2, w3, w4 and 3 more"
    assert named(["a", "b"]) == "a, b"


def _config() -> HealthConfig:  # the defaults: worker issues have no knobs of their own
    return HealthConfig()
