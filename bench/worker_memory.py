"""Resident memory of a real jetpool-worker process, idle and under load, against a bare
nats-py process doing the same.

One process per side (in turn, ``--rounds`` times): a ``jetpool-worker`` (concurrency
``--concurrency``) or the bare nats-py consumer (``bench.lib.raw_consumer``, same concurrency,
same handler), both connected and pulling from an empty stream. RSS (``VmRSS``) is sampled for
``--seconds`` while idle, then while it works through a backlog of 50 ms I/O tasks that keeps
every slot busy for about as long. A bare ``python`` asleep gives the interpreter's own floor.

    .venv/bin/python bench/worker_memory.py [--concurrency 128] [--seconds 2] [--rounds 1]
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "worker")]

from bench.lib import common, plots  # noqa: E402
from bench.lib.common import SIDE_LABEL, SIDES, Side, log  # noqa: E402
from bench.lib.handlers import IO_SECONDS  # noqa: E402
from bench.lib.report import Cell, Table  # noqa: E402
from bench.lib.stats import median, ratio  # noqa: E402

MIB = 1024 * 1024


async def sample(pid: int, seconds: float, every: float = 0.1) -> list[float]:
    """RSS in MiB every ``every`` seconds for ``seconds``."""
    values = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        values.append(common.rss_bytes(pid) / MIB)
        await asyncio.sleep(every)
    return values


async def interpreter_floor(seconds: float, logs: Path) -> float:
    sleeper = [sys.executable, "-c", "import time; time.sleep(600)"]
    proc = common.spawn(sleeper, dict(os.environ), logs / "python-asleep.log")
    try:
        await asyncio.sleep(0.5)
        return median(await sample(proc.pid, min(seconds, 1.0)))
    finally:
        common.kill(proc)


async def measure(
    env: common.Nats, side: Side, concurrency: int, seconds: float, logs: Path
) -> tuple[list[float], list[float]]:
    """(idle samples, under-load samples) of one process, in MiB."""
    async with (
        common.fresh_stream(env.js, "M") as stream,
        common.Fleet(env, stream, side, logs, concurrency=concurrency) as fleet,
    ):
        await fleet.ready()
        await fleet.go()
        await asyncio.sleep(1.0)  # settle: first pulls, first stats, lazy imports
        pid = fleet.pids[0]
        idle = await sample(pid, seconds)
        count = int(concurrency / IO_SECONDS * seconds * 1.3)
        await common.fill(env.js, f"{stream}.io", count)
        loaded = await sample(pid, seconds)
        if await common.stream_messages(env.js, stream) == 0:
            log.warning("%s drained its backlog before the load window ended", side)
    return idle, loaded


async def main() -> None:
    parser = common.parser(__doc__)
    parser.add_argument("--concurrency", type=int, default=128)
    parser.add_argument("--seconds", type=float, default=2.0, help="sampling window")
    parser.add_argument("--rounds", type=int, default=1)
    run = common.begin("worker_memory", parser)
    args, logs = run.args, run.logs
    idle: dict[Side, list[float]] = {"raw": [], "worker": []}
    loaded: dict[Side, list[float]] = {"raw": [], "worker": []}
    peak: dict[Side, list[float]] = {"raw": [], "worker": []}
    async with common.nats_env() as env:
        floor = await interpreter_floor(args.seconds, logs)
        for round_ in range(args.rounds):
            for side in SIDES:
                i, load = await measure(env, side, args.concurrency, args.seconds, logs)
                idle[side].append(median(i))
                loaded[side].append(median(load))
                peak[side].append(max(load))
                log.info(
                    "round %d/%d %s: idle %.1f MiB, under load %.1f MiB (peak %.1f)",
                    round_ + 1, args.rounds, side, idle[side][-1], loaded[side][-1],
                    peak[side][-1],
                )  # fmt: skip
    mib = {side: [median(idle[side]), median(loaded[side]), median(peak[side])] for side in SIDES}
    rows: list[list[Cell]] = [["python asleep (interpreter floor)", floor, None, None]]
    rows += [[SIDE_LABEL[side], *mib[side]] for side in SIDES]
    pairs = list(zip(mib["worker"], mib["raw"], strict=True))
    rows.append(["worker / baseline", *(ratio(w, r) for w, r in pairs)])
    rows.append(["worker - baseline (MiB)", *(w - r for w, r in pairs)])
    table = Table(
        f"RSS in MiB (samples every 0.1 s; concurrency {args.concurrency}, {args.seconds:g} s "
        f"windows, median of {args.rounds} round(s))",
        ["process", "idle", "under load (median)", "under load (peak)"],
        rows,
    )
    figure = plots.save_panels(
        args.out / "worker_memory.png",
        "Resident memory of one consumer process",
        [
            plots.Panel(
                f"RSS (concurrency {args.concurrency})",
                ["idle", "under load", "peak under load"],
                {SIDE_LABEL[side]: mib[side] for side in SIDES},
                "MiB",
                reference=floor,
                reference_label="python asleep",
            )
        ],
        bars=True,
    )
    run.finish(
        "Memory per worker: jetpool-worker process vs bare nats-py process",
        "RSS (VmRSS) of one process, connected and pulling from an empty stream (idle), then "
        f"working through 50 ms I/O tasks with all {args.concurrency} slots busy. Baseline: a "
        "bare nats-py process holding the same kind of connection and pull subscription, "
        "running the same handler at the same concurrency.",
        [table],
        [figure],
    )


if __name__ == "__main__":
    asyncio.run(main())
