"""Throughput of real jetpool-worker processes under three loads, against bare nats-py processes.

For each load (no-op; 1 ms of CPU; 50 ms of I/O), a concurrency sweep with one process and a
sweep of processes at a fixed concurrency: a fresh WorkQueue stream is pre-filled, then either
bare nats-py consumers (``bench.lib.raw_consumer``: fetch a batch as large as the concurrency,
run the handlers concurrently, ack each) or real ``jetpool-worker`` processes (held by their
circuit breaker until the start) consume it for ``--seconds``. Rate = tasks acked on the
server (the stream shrinks by one per ack) / time from the start signal. Baseline and worker
alternate cell by cell; the table gives medians over ``--rounds`` and the worker/baseline
ratio, and for I/O the ratio to the ideal ``processes * concurrency / 50 ms``.

    .venv/bin/python bench/load_throughput.py [--seconds 1.5] [--rounds 2]
        [--concurrency 1,8,32,128] [--processes 1,2,4] [--process-concurrency 32]
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "worker")]

from bench.lib import common, plots  # noqa: E402
from bench.lib.common import SIDE_LABEL, SIDES, Side, log  # noqa: E402
from bench.lib.handlers import CPU_SECONDS, IO_SECONDS, LOADS  # noqa: E402
from bench.lib.report import Cell, Table  # noqa: E402
from bench.lib.stats import median, ratio  # noqa: E402

LOAD_LABEL = {"noop": "no-op", "cpu": "1 ms CPU", "io": "50 ms I/O"}


@dataclass(frozen=True)
class Setup:
    load: str
    concurrency: int
    processes: int

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
        common.Fleet(
            env, stream, side, logs, processes=setup.processes, concurrency=setup.concurrency
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
    run = common.begin("load_throughput", parser)
    args = run.args
    loads = [v for v in args.loads.split(",") if v]
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
    rates: Rates = defaultdict(lambda: {"raw": [], "worker": []})
    async with common.nats_env() as env:
        for round_ in range(args.rounds):
            for i, setup in enumerate(cells):
                for side in SIDES:  # alternating, so drift on a shared box hits both alike
                    seen = rates[setup]["raw"] + rates[setup]["worker"]
                    expect = max(seen) if seen else setup.guess()
                    value = await measure(env, setup, side, args.seconds, expect, run.logs)
                    rates[setup][side].append(value)
                    log.info(
                        "round %d/%d, %d/%d: %s c=%d p=%d %s %.0f tasks/s",
                        round_ + 1,
                        args.rounds,
                        i + 1,
                        len(cells),
                        setup.load,
                        setup.concurrency,
                        setup.processes,
                        side,
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
    run.finish(
        "Throughput under load: jetpool worker processes vs bare nats-py processes",
        "Tasks acked per second from a pre-filled stream. Baseline: the same number of bare "
        "nats-py processes (fetch a batch of `concurrency`, run the handlers concurrently, "
        "ack each) running the same handler. I/O ideal: processes x concurrency / 50 ms. "
        "1 ms CPU runs on the event loop of each process, so on 2 cores it cannot exceed "
        "about 2 x 1000/s whatever the concurrency.",
        tables,
        plot(args.out, rates, sweeps, loads),
    )


if __name__ == "__main__":
    asyncio.run(main())
