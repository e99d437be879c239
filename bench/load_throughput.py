"""Throughput of real jetpool-worker processes under three loads, against bare nats-py processes.

For each load (no-op; 1 ms of CPU; 50 ms of I/O), a concurrency sweep with one process and a
sweep of processes at a fixed concurrency: a fresh WorkQueue stream is pre-filled, then either
bare nats-py consumers (``bench.lib.raw_consumer``: fetch a batch as large as the concurrency,
run the handlers concurrently, ack each) or real ``jetpool-worker`` processes (held by their
circuit breaker until the start) consume it for ``--seconds``. Rate = tasks acked on the
server (the stream shrinks by one per ack) / time from the start signal. Baseline and worker
alternate cell by cell; the table gives medians over ``--rounds`` and the worker/baseline
ratio, and for I/O the ratio to the ideal ``processes * concurrency / 50 ms``.

Task state tracking: for each load, one worker process at ``--tracking-concurrency`` also
runs with tracking on (``--tracking on,results``: a task-state KV bucket made as the operator
makes it; results off, then kept), measured right beside its tracking-off cell (the worker
variants in rotating order); the table gives tracking on / off.

    .venv/bin/python bench/load_throughput.py [--seconds 1.5] [--rounds 2]
        [--concurrency 1,8,32,128] [--processes 1,2,4] [--process-concurrency 32]
        [--tracking on,results] [--tracking-concurrency 32]
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "worker")]

from bench.lib import common, plots, tracking  # noqa: E402
from bench.lib.common import SIDE_LABEL, SIDES, Side, log  # noqa: E402
from bench.lib.handlers import CPU_SECONDS, IO_SECONDS, LOADS  # noqa: E402
from bench.lib.report import Cell, Table  # noqa: E402
from bench.lib.stats import median, ratio  # noqa: E402
from bench.lib.tracking import TRACKING_LABEL, Tracking  # noqa: E402

LOAD_LABEL = {"noop": "no-op", "cpu": "1 ms CPU", "io": "50 ms I/O"}


@dataclass(frozen=True)
class Setup:
    load: str
    concurrency: int
    processes: int
    tracking: Tracking = "off"
    """Task state tracking of the workers (the baseline has none: measured for "off" only)."""

    def ideal(self) -> float:
        """The rate a perfect consumer reaches: only meaningful for I/O (the CPU is not shared)."""
        return self.processes * self.concurrency / IO_SECONDS if self.load == "io" else float("nan")

    def guess(self) -> float:
        """A first guess of the rate on a 2-core box, to size the backlog (never the result)."""
        per_process = {
            "noop": min(2500.0 * self.concurrency, 15000.0),
            "cpu": 0.9 / CPU_SECONDS,
            "io": min(self.concurrency / IO_SECONDS, 4000.0),
        }[self.load]
        return per_process * min(self.processes, 2)


async def measure(
    env: common.Nats, setup: Setup, side: Side, seconds: float, rate: float, logs: Path
) -> float:
    count = int(min(150_000, max(100, rate * seconds * 1.5)))
    async with (
        common.fresh_stream(env.js, "L") as stream,
        tracking.task_state(env.js, stream, setup.tracking) as extra,
        common.Fleet(
            env,
            stream,
            side,
            logs,
            processes=setup.processes,
            concurrency=setup.concurrency,
            settings=extra,
        ) as fleet,
    ):
        await common.fill(env.js, f"{stream}.{setup.load}", count)
        await fleet.ready()
        started = time.perf_counter()
        await fleet.go()
        while True:
            await asyncio.sleep(0.02)
            left = await common.stream_messages(env.js, stream)
            elapsed = time.perf_counter() - started
            if left == 0 or elapsed >= seconds:
                return (count - left) / elapsed


def row(setup: Setup, rates: dict[Side, list[float]]) -> list[Cell]:
    raw, jet = median(rates["raw"]), median(rates["worker"])
    ideal = setup.ideal()
    return [
        LOAD_LABEL[setup.load],
        setup.concurrency,
        setup.processes,
        raw,
        jet,
        ratio(jet, raw),
        ideal,
        ratio(jet, ideal),
        ratio(raw, ideal),
    ]


COLUMNS = [
    "load",
    "concurrency",
    "processes",
    "bare nats-py tasks/s",
    "jetpool tasks/s",
    "worker / baseline",
    "ideal tasks/s (I/O)",
    "worker / ideal",
    "baseline / ideal",
]


@dataclass(frozen=True)
class Sweep:
    """One axis of the benchmark: concurrency with one process, or processes."""

    name: str
    axis: str
    values: list[int]
    per_process: int | None = None
    """Fixed concurrency of the process sweep; None for the concurrency sweep."""

    def setup(self, load: str, value: int) -> Setup:
        if self.per_process is None:
            return Setup(load, value, 1)
        return Setup(load, self.per_process, value)


Rates = dict[Setup, dict[Side, list[float]]]


def plot(out: Path, rates: Rates, sweeps: list[Sweep], loads: list[str]) -> list[str]:
    def rate(setup: Setup, side: Side) -> float:
        return median(rates[setup][side])

    figures: list[str | None] = []
    for sweep in sweeps:
        panels = []
        for load in loads:
            points = [sweep.setup(load, x) for x in sweep.values]
            series = {SIDE_LABEL[s]: [rate(p, s) for p in points] for s in SIDES}
            if load == "io":
                series["ideal"] = [p.ideal() for p in points]
            panels.append(
                plots.Panel(LOAD_LABEL[load], sweep.values, series, "tasks/s", sweep.axis, True)
            )
        figures.append(
            plots.save_panels(
                out / f"load_throughput_{sweep.name}.png", f"Throughput by {sweep.name}", panels
            )
        )
    ratio_panels = [
        plots.Panel(
            f"worker / baseline by {sweep.name}",
            sweep.values,
            {
                LOAD_LABEL[load]: [
                    ratio(rate(sweep.setup(load, x), "worker"), rate(sweep.setup(load, x), "raw"))
                    for x in sweep.values
                ]
                for load in loads
            },
            "ratio",
            sweep.axis,
            log_x=True,
            reference=1.0,
            reference_label="baseline",
        )
        for sweep in sweeps
    ]
    figures.append(
        plots.save_panels(
            out / "load_throughput_ratio.png", "jetpool worker / bare nats-py", ratio_panels
        )
    )
    return [f for f in figures if f]


def tracking_table(
    rates: Rates, bases: list[Setup], variants: list[Tracking], rounds: int, seconds: float
) -> Table:
    """Worker processes with tracking on / off, per load (medians; ratios of medians)."""
    columns = ["load", "concurrency", "processes", "tracking off tasks/s"]
    for variant in variants[1:]:
        columns += [f"{TRACKING_LABEL[variant]} tasks/s", f"{TRACKING_LABEL[variant]} / off"]
    rows: list[list[Cell]] = []
    for base in bases:
        off = median(rates[base]["worker"])
        row_: list[Cell] = [LOAD_LABEL[base.load], base.concurrency, base.processes, off]
        for variant in variants[1:]:
            on = median(rates[replace(base, tracking=variant)]["worker"])
            row_ += [on, ratio(on, off)]
        rows.append(row_)
    return Table(
        f"task state tracking, jetpool worker processes: medians of {rounds} round(s), "
        f"{seconds:g} s windows",
        columns,
        rows,
        note="Goal: tracking on / off >= 0.80. The same worker process and tasks, tracking off "
        "(no bucket), on (each task's final state written to the pool's task-state KV bucket, "
        "made as the operator makes it) and on with results kept (its result too).",
    )


def plot_tracking(
    out: Path, rates: Rates, bases: list[Setup], variants: list[Tracking]
) -> str | None:
    labels = [LOAD_LABEL[b.load] for b in bases]

    def rate(base: Setup, variant: Tracking) -> float:
        return median(rates[replace(base, tracking=variant)]["worker"])

    return plots.save_panels(
        out / "load_throughput_tracking.png",
        f"Task state tracking: one worker process, concurrency {bases[0].concurrency}",
        [
            plots.Panel(
                "tasks/s",
                labels,
                {TRACKING_LABEL[v]: [rate(b, v) for b in bases] for v in variants},
                "tasks/s",
                log_y=True,
            ),
            plots.Panel(
                "tracking on / off",
                labels,
                {  # "off" too (1.0): the same colours as the left panel
                    TRACKING_LABEL[v]: [ratio(rate(b, v), rate(b, "off")) for b in bases]
                    for v in variants
                },
                "ratio",
                reference=0.8,
                reference_label="goal",
            ),
        ],
        bars=True,
    )


def schedule(
    cells: list[Setup], tracked: list[Setup], variants: list[Tracking], round_: int
) -> list[tuple[Setup, Side]]:
    """One round's measurements in order: baseline then worker for each cell; a cell with
    tracking variants has them right after its baseline, the worker variants rotated by round
    so that none is always first."""
    steps: list[tuple[Setup, Side]] = []
    for setup in cells:
        steps.append((setup, "raw"))
        if setup in tracked:
            order = tracking.rotated(variants, round_)
            steps += [(replace(setup, tracking=v), "worker") for v in order]
        else:
            steps.append((setup, "worker"))
    return steps


def int_list(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


async def main() -> None:
    parser = common.parser(__doc__)
    parser.add_argument("--seconds", type=float, default=1.5, help="measuring window per run")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds (median)")
    parser.add_argument("--loads", default=",".join(LOADS))
    parser.add_argument("--concurrency", type=int_list, default=[1, 8, 32, 128])
    parser.add_argument("--processes", type=int_list, default=[1, 2, 4])
    parser.add_argument("--process-concurrency", type=int, default=32)
    parser.add_argument(
        "--tracking",
        default="on,results",
        help="worker variants measured beside tracking off: on (task states), results (task "
        "states and results); '' for none",
    )
    parser.add_argument(
        "--tracking-concurrency",
        type=int,
        default=32,
        help="concurrency of the one worker process measured with tracking on and off",
    )
    run = common.begin("load_throughput", parser)
    args = run.args
    loads = [v for v in args.loads.split(",") if v]
    variants = tracking.variants(args.tracking)
    sweeps = [
        Sweep("concurrency", "concurrency (1 process)", args.concurrency),
        Sweep(
            "processes",
            f"processes (concurrency {args.process_concurrency} each)",
            args.processes,
            args.process_concurrency,
        ),
    ]
    cells: list[Setup] = []
    for load in loads:
        for sweep in sweeps:
            cells += [
                sweep.setup(load, x) for x in sweep.values if sweep.setup(load, x) not in cells
            ]
    tracked = (
        [Setup(load, args.tracking_concurrency, 1) for load in loads] if len(variants) > 1 else []
    )
    cells += [base for base in tracked if base not in cells]
    rates: Rates = defaultdict(lambda: {"raw": [], "worker": []})
    async with common.nats_env() as env:
        for round_ in range(args.rounds):
            steps = schedule(cells, tracked, variants, round_)
            for i, (setup, side) in enumerate(steps):
                # alternating, so drift on a shared box hits both alike
                base = replace(setup, tracking="off")
                seen = rates[base]["raw"] + rates[base]["worker"]
                expect = max(seen) if seen else setup.guess()
                value = await measure(env, setup, side, args.seconds, expect, run.logs)
                rates[setup][side].append(value)
                log.info(
                    "round %d/%d, %d/%d: %s c=%d p=%d %s%s %.0f tasks/s",
                    round_ + 1,
                    args.rounds,
                    i + 1,
                    len(steps),
                    setup.load,
                    setup.concurrency,
                    setup.processes,
                    side,
                    "" if setup.tracking == "off" else f" ({TRACKING_LABEL[setup.tracking]})",
                    value,
                )
    tables = [
        Table(
            f"{sweep.axis}: medians of {args.rounds} round(s), {args.seconds:g} s windows",
            COLUMNS,
            [
                row(sweep.setup(load, x), rates[sweep.setup(load, x)])
                for load in loads
                for x in sweep.values
            ],
        )
        for sweep in sweeps
    ]
    figures = plot(args.out, rates, sweeps, loads)
    if tracked:
        tables.append(tracking_table(rates, tracked, variants, args.rounds, args.seconds))
        figures.append(plot_tracking(args.out, rates, tracked, variants) or "")
    run.finish(
        "Throughput under load: jetpool worker processes vs bare nats-py processes",
        "Tasks acked per second from a pre-filled stream. Baseline: the same number of bare "
        "nats-py processes (fetch a batch of `concurrency`, run the handlers concurrently, "
        "ack each) running the same handler. I/O ideal: processes x concurrency / 50 ms. "
        "1 ms CPU runs on the event loop of each process, so on 2 cores it cannot exceed "
        "about 2 x 1000/s whatever the concurrency. Task state tracking: one worker process "
        "per load also runs with tracking on (the pool's task-state KV bucket made as the "
        "operator makes it), right beside its tracking-off run.",
        tables,
        figures,
    )


if __name__ == "__main__":
    asyncio.run(main())
