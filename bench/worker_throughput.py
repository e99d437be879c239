"""Throughput and latency of one jetpool worker against a raw nats-py pull+ack loop, and the
cost of task state tracking.

Both consume no-op tasks from the same kind of WorkQueue stream on the same nats-server, in
the same run, alternating (raw, worker, raw, worker...) so that load from neighbours hits both
alike; the medians and their ratio say what the worker's machinery costs. In the same rounds
the worker also drains the same tasks with task state tracking on (a task-state KV bucket made
as the operator makes it; ``--tracking on,memory,results``: results off, the bucket in memory,
results kept): the ratio tracking on / off says what tracking costs. Then, at a fixed publish
rate, publish->ack latency percentiles of the worker. Runs in about a minute:

    .venv/bin/python bench/worker_throughput.py [--tasks 10000] [--rounds 5] [--rate 500]
        [--tracking on,memory,results]
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "worker")]

import nats  # noqa: E402

from bench.lib import common, plots, tracking  # noqa: E402
from bench.lib.raw_consumer import pull_ack_loop  # noqa: E402
from bench.lib.report import Cell, Table  # noqa: E402
from bench.lib.stats import latency_ms, median, ratio  # noqa: E402
from bench.lib.tracking import TRACKING_LABEL, Tracking  # noqa: E402
from jetpool_protocol.envelope import Task  # noqa: E402
from jetpool_protocol.worker_settings import WorkerSettings  # noqa: E402
from jetpool_worker.consumer_loop import Worker  # noqa: E402
from jetpool_worker.handlers import Handler  # noqa: E402

BATCH = 64


async def raw_loop(url: str, stream: str, count: int) -> float:
    """Baseline: fetch a batch, ack each message, repeat."""
    nc = await nats.connect(url)
    sub = await nc.jetstream().pull_subscribe_bind(common.CONSUMER, stream=stream)
    started = time.perf_counter()
    await pull_ack_loop(sub, BATCH, count)
    elapsed = time.perf_counter() - started
    await nc.close()
    return count / elapsed


def settings_for(url: str, stream: str, **extra: Any) -> WorkerSettings:
    return common.worker_settings(
        url,
        stream,
        "bench",
        concurrency=2 * BATCH,
        fetch_batch=BATCH,
        stats_interval_seconds=1.0,
        **extra,
    )


async def noop(task: Task) -> None:
    return None


async def worker_run(
    url: str,
    stream: str,
    count: int,
    handler: Callable[[Task], Awaitable[None]],
    extra: dict[str, Any] | None = None,
) -> float:
    """Timed from the moment the worker may fetch (connected, breaker state read, and with
    tracking on the pending cancellations read) until it has settled ``count`` tasks."""
    worker = Worker(settings_for(url, stream, **(extra or {})), handler=Handler.wrap(handler))
    stop = asyncio.Event()
    run = asyncio.create_task(worker.run(stop))
    await common.until(lambda: worker.consuming and worker.gate.known, interval=0.002)
    started = time.perf_counter()
    await common.until(lambda: worker.counters.succeeded >= count, interval=0.002)
    elapsed = time.perf_counter() - started
    stop.set()
    await run
    return count / elapsed


async def latency_run(env: common.Nats, stream: str, rate: float, seconds: float) -> list[float]:
    """Publish at ``rate``/s to a worker; latency ends when the server receives the ack
    (:class:`bench.lib.common.AckWatch`)."""
    async with common.AckWatch(env.nc, stream) as acks:
        worker = Worker(settings_for(env.url, stream), handler=Handler.wrap(noop))
        stop = asyncio.Event()
        run = asyncio.create_task(worker.run(stop))
        await common.until(lambda: worker.consuming and worker.gate.known, interval=0.002)
        nc = await nats.connect(env.url)
        sent = await common.publish_at(nc.jetstream(), f"{stream}.work", rate, seconds)
        await common.until(lambda: len(acks.acked) >= len(sent), interval=0.002)
        stop.set()
        await run
        await nc.close()
    return [acks.acked[seq] - t for seq, t in sent.items()]


async def tracked_run(env: common.Nats, stream: str, count: int, variant: Tracking) -> float:
    """The worker on a pool with this tracking; then checks that every task's state (and
    result) reached the bucket, untimed (the writes are buffered publishes)."""
    async with tracking.task_state(env.js, stream, variant) as extra:
        rate = await worker_run(env.url, stream, count, noop, extra)
        want = count * tracking.WRITES_PER_TASK[variant]

        async def written() -> bool:
            return await tracking.entries(env.js, extra) >= want

        await common.until(written, within=30.0, what=f"{want} task-state entries")
    return rate


async def pinned_tracking(
    rounds: int, tasks: int, variants: list[Tracking]
) -> dict[Tracking, list[float]]:
    """Tracking off and on again, with the server pinned apart (production runs nats-server
    on machines of its own; on two shared cores the server's storing competes with the
    worker for CPU, which the unpinned rounds include)."""
    chosen = [v for v in variants if v in ("off", "on")]
    if rounds <= 0 or len(chosen) < 2:
        return {}
    runs: dict[Tracking, list[float]] = {v: [] for v in chosen}
    async with common.nats_env(pin=True) as env:
        for round_ in range(rounds):
            for side in tracking.rotated(chosen, round_):
                async with common.fresh_stream(env.js, "P", max_ack_pending=10_000) as stream:
                    await common.fill(env.js, f"{stream}.work", tasks, "")
                    runs[side].append(await tracked_run(env, stream, tasks, side))
            common.log.info(
                "pinned round %d/%d: %s",
                round_ + 1,
                rounds,
                ", ".join(f"{TRACKING_LABEL[v]} {r[-1]:.0f}/s" for v, r in runs.items()),
            )
    return runs


def per_round(values: list[float]) -> str:
    return " ".join(f"{v:.2f}" for v in values)


def tracking_table(
    rounds: int, tasks: int, runs: dict[Tracking, list[float]], where: str = ""
) -> tuple[Table, dict[Tracking, float]]:
    """Each variant's median, its runs and its ratio to tracking off (of medians, per round)."""
    off = median(runs["off"])
    rows: list[list[Cell]] = []
    ratios: dict[Tracking, float] = {}
    for variant, values in runs.items():
        ratios[variant] = ratio(median(values), off)
        rounds_ratio = [ratio(v, o) for v, o in zip(values, runs["off"], strict=True)]
        rows.append(
            [
                TRACKING_LABEL[variant],
                median(values),
                " ".join(f"{v:.0f}" for v in values),
                ratios[variant],
                per_round(rounds_ratio) if variant != "off" else "-",
            ]
        )
    table = Table(
        f"task state tracking: the same worker and {tasks} no-op tasks, in the same {rounds} "
        f"rounds (variants in rotating order){where}",
        ["worker", "median tasks/s", "runs", "/ tracking off (ratio of medians)", "per round"],
        rows,
        note="Goal: tracking on / off >= 0.80. Tracking on writes each task's final state (one "
        "buffered publish into the bucket); results kept adds its result (a second one).",
    )
    return table, ratios


def plot(
    out: Path, raw: float, runs: dict[Tracking, list[float]], ratios: dict[Tracking, float]
) -> str | None:
    out.mkdir(parents=True, exist_ok=True)
    labels = ["raw nats-py", *(TRACKING_LABEL[v].replace(", ", ",\n") for v in runs)]
    return plots.save_panels(
        out / "worker_throughput.png",
        "One in-process worker, no-op tasks",
        [
            plots.Panel(
                "median tasks/s",
                labels,
                {"tasks/s": [raw, *(median(v) for v in runs.values())]},
                "tasks/s",
            ),
            plots.Panel(
                "worker / worker with tracking off",
                labels[1:],
                {"ratio": list(ratios.values())},
                "ratio",
                reference=0.8,
                reference_label="goal for tracking on",
            ),
        ],
        bars=True,
    )


async def main() -> None:
    parser = common.parser(__doc__)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--pinned-rounds",
        type=int,
        default=5,
        help="rounds of tracking off/on again with nats-server on a CPU of its own (0: none)",
    )
    parser.add_argument(
        "--tracking",
        default="on,memory,results",
        help="worker variants measured beside tracking off: on (task states), memory (the "
        "bucket in memory), results (task states and results); '' for none",
    )
    run = common.begin("worker_throughput", parser)
    args = run.args
    variants = tracking.variants(args.tracking)
    logging.getLogger("jetpool_worker").setLevel(logging.WARNING)
    raw_runs: list[float] = []
    worker_runs: dict[Tracking, list[float]] = {v: [] for v in variants}
    async with common.nats_env() as env:
        for round_ in range(args.rounds):  # interleaved, so drift on a shared box hits both alike
            sides: list[Tracking | None] = [None, *tracking.rotated(variants, round_)]
            for side in sides:  # None: the raw loop
                async with common.fresh_stream(env.js, "B", max_ack_pending=10_000) as stream:
                    await common.fill(env.js, f"{stream}.work", args.tasks, "")
                    if side is None:
                        raw_runs.append(await raw_loop(env.url, stream, args.tasks))
                    else:
                        worker_runs[side].append(await tracked_run(env, stream, args.tasks, side))
            common.log.info(
                "round %d/%d: raw %.0f/s, worker %s",
                round_ + 1,
                args.rounds,
                raw_runs[-1],
                ", ".join(f"{TRACKING_LABEL[v]} {r[-1]:.0f}/s" for v, r in worker_runs.items()),
            )
        async with common.fresh_stream(env.js, "L", max_ack_pending=10_000) as stream:
            lat = latency_ms(await latency_run(env, stream, args.rate, args.seconds))
    pinned_runs = await pinned_tracking(args.pinned_rounds, args.tasks, variants)
    jet_runs = worker_runs["off"]
    raw, jet = statistics.median(raw_runs), statistics.median(jet_runs)
    ratios = [j / r for r, j in zip(raw_runs, jet_runs, strict=True)]
    throughput = Table(
        f"throughput, {args.rounds} interleaved rounds of {args.tasks} no-op tasks each "
        "(one in-process worker, concurrency 128, fetch batch 64)",
        ["consumer", "median tasks/s", "runs"],
        [
            ["raw nats-py pull+ack", raw, " ".join(f"{v:.0f}" for v in raw_runs)],
            ["jetpool worker", jet, " ".join(f"{v:.0f}" for v in jet_runs)],
            ["ratio of medians (goal >= 0.80)", jet / raw, f"per round: {per_round(ratios)}"],
        ],
    )
    tables = [throughput]
    figure = None
    if len(variants) > 1:
        tracked, tracked_ratios = tracking_table(args.rounds, args.tasks, worker_runs)
        tables.append(tracked)
        figure = plot(Path(args.out), raw, worker_runs, tracked_ratios)
    if pinned_runs:
        pinned, _ = tracking_table(
            args.pinned_rounds,
            args.tasks,
            pinned_runs,
            "; nats-server on a CPU of its own, the worker on the other(s): the worker's own "
            "cost, without the server's share of the same two cores",
        )
        tables.append(pinned)
    tables.append(
        Table(
            f"latency publish -> ack received by the server, {args.rate:g}/s for "
            f"{args.seconds:g} s ({int(args.rate * args.seconds)} tasks; tracking off)",
            ["consumer", "p50 ms", "p95 ms", "p99 ms"],
            [["jetpool worker", *lat.values()]],
        )
    )
    run.finish(
        "One in-process worker vs a raw nats-py pull+ack loop (no-op tasks), and the cost of "
        "task state tracking",
        "The worker's own cost on its hot path: a minimal nats-py loop (`fetch(64)`, ack each) "
        "and one in-process jetpool `Worker` drain the same pre-filled stream in turn; in the "
        "same rounds the worker drains it again with task state tracking on (the pool's "
        "task-state KV bucket made as the operator makes it; results off, then kept), so "
        "tracking on / off is a ratio of the same run. Then publish -> ack latency of the "
        "worker at a fixed rate.",
        tables,
        [figure],
    )


if __name__ == "__main__":
    asyncio.run(main())
