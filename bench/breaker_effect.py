"""How much the circuit breaker spares a failing dependency, and how fast it stops and resumes.

Two real ``jetpool-worker`` processes run tasks (``--rate`` a second, the whole run) whose
handler calls a dependency; the dependency fails while a flag file exists: healthy for
``--healthy`` s, failing for ``--failing`` s, healed for ``--healed`` s. The run is done twice:

* without the breaker (nothing writes the control key: Closed throughout);
* with it: the benchmark runs the operator's breaker as the operator does, without
  Kubernetes: every ``--tick`` it folds the workers' stats (their stats subject) with
  ``worker_stats.aggregate``, advances ``circuit_breaker.observe``/``step`` and writes
  ``control_state`` to the pool's control key when it changed.

The handler's ledger counts every dependency call. Reported: calls while failing with / without
the breaker, dead letters, the time from the failure to the breaker opening (and to the last
failing call) relative to ``windowSeconds``, the time from the heal to Closed relative to
``openSeconds``, and that no task was lost (each is done or dead-lettered).

    .venv/bin/python bench/breaker_effect.py [--rate 100] [--healthy 3] [--failing 8]
        [--healed 8] [--window 5] [--open 3] [--tick 1]
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "worker"), str(ROOT / "operator")]

from bench.lib import common, plots  # noqa: E402
from bench.lib.common import log  # noqa: E402
from bench.lib.handlers import FAIL_FLAG_ENV, LEDGER_ENV, Entry, read_ledger  # noqa: E402
from bench.lib.report import Cell, Table  # noqa: E402
from bench.lib.stats import ratio  # noqa: E402
from jetpool_operator.core import circuit_breaker as cb  # noqa: E402
from jetpool_operator.core.worker_stats import StatsConfig, StatsMemory, aggregate  # noqa: E402
from jetpool_protocol.control import BreakerState, ControlState  # noqa: E402
from jetpool_protocol.dead_letter import DeadLetterRecord  # noqa: E402
from jetpool_protocol.stats import WorkerStats  # noqa: E402

STATE_LEVEL = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}
REPUBLISH_SECONDS = 5.0
"""Like the operator, the control state is rewritten now and then even when unchanged."""


class BreakerLoop:
    """The operator's breaker tick, fed by the workers' stats subject, publishing control."""

    def __init__(
        self, env: common.Nats, stats_subject: str, control_key: str, config: cb.BreakerConfig
    ) -> None:
        self.env, self.stats_subject, self.control_key = env, stats_subject, control_key
        self.config = config
        self.stats_config = StatsConfig(window_seconds=config.window_seconds)
        self.breaker = cb.Breaker()
        self.memory = StatsMemory()
        self.snapshots: dict[str, WorkerStats] = {}
        self.states: list[tuple[float, BreakerState]] = [(time.time(), BreakerState.CLOSED)]
        self.transitions: list[tuple[float, cb.Transition]] = []

    async def _on_stats(self, msg: Any) -> None:
        stats = WorkerStats.model_validate_json(msg.data)
        self.snapshots[stats.worker] = stats

    def tick(self, now: datetime) -> ControlState:
        stats, self.memory = aggregate(
            self.memory,
            list(self.snapshots.values()),
            now,
            self.stats_config,
            epoch=self.breaker.epoch,
        )
        for gone in stats.stale_workers:
            self.snapshots.pop(gone, None)
        observation = cb.observe(self.breaker, self.memory, stats, now, self.config)
        stepped = cb.step(self.breaker, observation, now, self.config)
        self.breaker = stepped.breaker
        if stepped.transition is not None:
            at = now.timestamp()
            self.transitions.append((at, stepped.transition))
            self.states.append((at, stepped.transition.to_state))
            log.info("breaker %s: %s", stepped.transition.to_state, stepped.transition.message)
        return cb.control_state(self.breaker, self.config)

    async def run(self, stop: asyncio.Event, tick: float) -> None:
        sub = await self.env.nc.subscribe(self.stats_subject, cb=self._on_stats)
        published: ControlState | None = None
        published_at = 0.0
        try:
            while not stop.is_set():
                control = self.tick(datetime.now(UTC))
                mono = time.monotonic()
                if control != published or mono - published_at > REPUBLISH_SECONDS:
                    await self.env.kv.put(self.control_key, control.model_dump_json().encode())
                    published, published_at = control, mono
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), tick)
        finally:
            await sub.unsubscribe()


@dataclass
class Run:
    breaker: bool
    start: float
    failed_at: float
    healed_at: float
    calls: list[Entry]
    published: int
    done: set[str]
    dead: set[str]
    loop: BreakerLoop | None = None
    end: float = 0.0
    lost: set[str] = field(default_factory=set)

    def calls_while_failing(self) -> list[Entry]:
        return [e for e in self.calls if self.failed_at <= e.at < self.healed_at]

    def failing_calls(self) -> int:
        return sum(1 for e in self.calls if e.event == "fail")

    def last_call(self, event: str, before: float) -> float | None:
        return max((e.at for e in self.calls if e.event == event and e.at < before), default=None)

    def first_success_after_heal(self) -> float | None:
        first = min(
            (e.at for e in self.calls if e.event == "call" and e.at >= self.healed_at), default=None
        )
        return _after(first, self.healed_at)

    def first(self, state: BreakerState, after: float) -> float | None:
        assert self.loop is not None
        return next((t for t, s in self.loop.states if s is state and t >= after), None)


async def dead_letter_ids(env: common.Nats, stream: str) -> set[str]:
    info = await env.js.stream_info(f"{stream}-dlq")
    ids = set()
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await env.js.get_msg(f"{stream}-dlq", seq)
        ids.add(DeadLetterRecord.model_validate_json(msg.data).task_id)
    return ids


def worker_fleet(env: common.Nats, stream: str, args: Any, logs: Path) -> common.Fleet:
    return common.Fleet(
        env, stream, "worker", logs, processes=2, concurrency=args.concurrency, held=False,
        settings={
            "stats_interval_seconds": 1.0,
            "retry_max_attempts": 3,
            "retry_initial_seconds": 0.5,
            "retry_max_seconds": 2.0,
            "ack_wait_seconds": 10.0,
        },
        process_env={
            LEDGER_ENV: str(logs / f"{stream}-{{pid}}.ledger"),
            FAIL_FLAG_ENV: str(logs / f"{stream}.failing"),
        },
    )  # fmt: skip


async def one_run(env: common.Nats, args: Any, with_breaker: bool, logs: Path) -> Run:
    config = cb.BreakerConfig(
        error_rate_threshold=args.threshold,
        min_tasks=args.min_tasks,
        window_seconds=args.window,
        open_seconds=args.open,
        half_open_tasks=args.half_open_tasks,
    )
    stop = asyncio.Event()
    async with common.fresh_stream(env.js, "F", ack_wait=10.0) as stream:
        flag, ledger = logs / f"{stream}.failing", logs / f"{stream}-{{pid}}.ledger"
        fleet = worker_fleet(env, stream, args, logs)
        settings = fleet.settings_of(0)
        loop = BreakerLoop(env, settings.stats_subject, settings.control_key, config)
        async with fleet:
            driver = asyncio.create_task(loop.run(stop, args.tick)) if with_breaker else None
            try:
                await fleet.ready()
                seconds = args.healthy + args.failing + args.healed
                start = time.time()
                publisher = asyncio.create_task(
                    common.publish_at(env.js, f"{stream}.dep", args.rate, seconds)
                )
                await asyncio.sleep(args.healthy)
                flag.touch()
                failed_at = time.time()
                log.info("dependency failing (breaker %s)", "on" if with_breaker else "off")
                await asyncio.sleep(args.failing)
                flag.unlink()
                healed_at = time.time()
                log.info("dependency healed")
                ids = {f"p{i}" for i in range(len(await publisher))}

                async def settled() -> bool:
                    done = {e.task_id for e in read_ledger(ledger) if e.event == "done"}
                    if not ids <= done | await dead_letter_ids(env, stream):
                        return False
                    return await common.stream_messages(env.js, stream) == 0

                await common.until(settled, 120, 0.5, "every task done or dead-lettered")
                end = time.time()
            finally:
                stop.set()
                if driver is not None:
                    await driver
        entries = read_ledger(ledger)
        dead = await dead_letter_ids(env, stream)
    done = {e.task_id for e in entries if e.event == "done"}
    return Run(
        breaker=with_breaker,
        start=start,
        failed_at=failed_at,
        healed_at=healed_at,
        calls=[e for e in entries if e.event in ("call", "fail")],
        published=len(ids),
        done=done,
        dead=dead,
        loop=loop if with_breaker else None,
        end=end,
        lost=ids - done - dead,
    )


def figures(out: Path, off: Run, on: Run) -> list[str]:
    def timeline(run: Run, title: str) -> plots.Timeline:
        rel = run.start
        extra = {}
        if run.loop is not None:
            extra = {"breaker": [(t - rel, STATE_LEVEL[s]) for t, s in run.loop.states]}
            extra["breaker"].append((run.end - rel, extra["breaker"][-1][1]))
        return plots.Timeline(
            title,
            {
                "failing calls": [e.at - rel for e in run.calls if e.event == "fail"],
                "successful calls": [e.at - rel for e in run.calls if e.event == "call"],
            },
            0.5,
            "dependency calls/s",
            spans=[plots.Span(run.failed_at - rel, run.healed_at - rel, "dependency down")],
            end=run.end - rel,
            extra_lines=extra,
            extra_ticks=("Closed", "HalfOpen", "Open") if extra else (),
        )

    name = plots.save_timelines(
        out / "breaker_effect.png",
        "Calls to a failing dependency",
        [timeline(off, "without the circuit breaker"), timeline(on, "with the circuit breaker")],
    )
    return [name] if name else []


def _after(t: float | None, origin: float) -> float | None:
    return None if t is None else t - origin


def _per(seconds: float | None, reference: float) -> float | None:
    return None if seconds is None else seconds / reference


def table(args: Any, off: Run, on: Run) -> Table:
    opened = on.first(BreakerState.OPEN, on.failed_at)
    trial = on.first(BreakerState.HALF_OPEN, opened or on.failed_at)
    stop = _after(opened, on.failed_at)
    quiet = _after(on.last_call("fail", before=trial or on.healed_at), on.failed_at)
    resumed = _after(on.first(BreakerState.CLOSED, on.healed_at), on.healed_at)
    down_off, down_on = len(off.calls_while_failing()), len(on.calls_while_failing())
    rows: list[list[Cell]] = [
        ["dependency calls while it was down", down_off, down_on, ratio(down_on, down_off)],
        ["failing calls", off.failing_calls(), on.failing_calls(),
         ratio(on.failing_calls(), off.failing_calls())],
        ["tasks dead-lettered", len(off.dead), len(on.dead), ratio(len(on.dead), len(off.dead))],
        ["tasks done", len(off.done), len(on.done), None],
        ["tasks lost (neither done nor dead-lettered)", len(off.lost), len(on.lost), None],
        ["failure -> breaker Open (s)", None, stop, None],
        ["... / windowSeconds", None, _per(stop, args.window), None],
        ["failure -> last failing call before the first trial (s)", None, quiet, None],
        ["... / windowSeconds", None, _per(quiet, args.window), None],
        ["heal -> breaker Closed (s)", None, resumed, None],
        ["... / openSeconds", None, _per(resumed, args.open), None],
        ["heal -> first successful call (s)", off.first_success_after_heal(),
         on.first_success_after_heal(), None],
        ["breaker trips (openings)", None, on.loop.breaker.trips if on.loop else None, None],
    ]  # fmt: skip
    return Table(
        f"{args.rate:g} tasks/s; healthy {args.healthy:g} s, down {args.failing:g} s, healed "
        f"{args.healed:g} s; breaker: threshold {args.threshold:g}, minTasks {args.min_tasks}, "
        f"windowSeconds {args.window:g}, openSeconds {args.open:g}, halfOpenTasks "
        f"{args.half_open_tasks}, tick {args.tick:g} s; 2 workers x {args.concurrency}, "
        "3 attempts per task",
        ["measure", "without breaker", "with breaker", "with / without"],
        rows,
        note="Workers report stats every second and the breaker ticks every "
        f"{args.tick:g} s, as the operator's control loop does by default (pollIntervalSeconds 1).",
    )


async def main() -> None:
    parser = common.parser(__doc__)
    parser.add_argument("--rate", type=float, default=100.0, help="tasks published a second")
    parser.add_argument("--healthy", type=float, default=3.0)
    parser.add_argument("--failing", type=float, default=8.0)
    parser.add_argument("--healed", type=float, default=8.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--threshold", type=float, default=0.5, help="errorRateThreshold")
    parser.add_argument("--min-tasks", type=int, default=20)
    parser.add_argument("--window", type=float, default=5.0, help="windowSeconds")
    parser.add_argument("--open", type=float, default=3.0, help="openSeconds")
    parser.add_argument("--half-open-tasks", type=int, default=5)
    parser.add_argument("--tick", type=float, default=1.0, help="breaker tick (s)")
    run = common.begin("breaker_effect", parser)
    args, logs = run.args, run.logs
    logs.mkdir(parents=True, exist_ok=True)
    async with common.nats_env() as env:
        off = await one_run(env, args, False, logs)
        log.info("without breaker: %d calls while down", len(off.calls_while_failing()))
        on = await one_run(env, args, True, logs)
        log.info("with breaker: %d calls while down", len(on.calls_while_failing()))
    run.finish(
        "Circuit breaker: calls to a failing dependency, time to stop and to resume",
        "The same failure, once without and once with the circuit breaker, which the benchmark "
        "runs from the operator's pure core (no Kubernetes). Times are relative to the "
        "breaker's windowSeconds (stopping) and openSeconds (resuming).",
        [table(args, off, on)],
        figures(args.out, off, on),
    )


if __name__ == "__main__":
    asyncio.run(main())
