"""Throughput and latency of one jetpool worker against a raw nats-py pull+ack loop.

Both consume no-op tasks from the same kind of WorkQueue stream on the same nats-server, in
the same run, alternating (raw, worker, raw, worker...) so that load from neighbours hits both
alike; the medians and their ratio say what the worker's machinery costs. Then, at a fixed
publish rate, publish->ack latency percentiles of the worker. Runs in about a minute:

    .venv/bin/python bench/worker_throughput.py [--tasks 10000] [--rounds 5] [--rate 500]
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

from bench.lib import common  # noqa: E402
from bench.lib.raw_consumer import pull_ack_loop  # noqa: E402
from bench.lib.report import Table  # noqa: E402
from bench.lib.stats import latency_ms  # noqa: E402
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
    url: str, stream: str, count: int, handler: Callable[[Task], Awaitable[None]]
) -> float:
    """Timed from the moment the worker may fetch (connected, breaker state read)."""
    worker = Worker(settings_for(url, stream), handler=Handler.wrap(handler))
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


async def main() -> None:
    parser = common.parser(__doc__)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    run = common.begin("worker_throughput", parser)
    args = run.args
    logging.getLogger("jetpool_worker").setLevel(logging.WARNING)
    raw_runs: list[float] = []
    jet_runs: list[float] = []
    async with common.nats_env() as env:
        for round_ in range(args.rounds):  # interleaved, so drift on a shared box hits both alike
            for runs in (raw_runs, jet_runs):
                async with common.fresh_stream(env.js, "B", max_ack_pending=10_000) as stream:
                    await common.fill(env.js, f"{stream}.work", args.tasks, "")
                    if runs is raw_runs:
                        runs.append(await raw_loop(env.url, stream, args.tasks))
                    else:
                        runs.append(await worker_run(env.url, stream, args.tasks, noop))
            common.log.info(
                "round %d/%d: raw %.0f/s, worker %.0f/s",
                round_ + 1, args.rounds, raw_runs[-1], jet_runs[-1],
            )  # fmt: skip
        async with common.fresh_stream(env.js, "L", max_ack_pending=10_000) as stream:
            lat = latency_ms(await latency_run(env, stream, args.rate, args.seconds))
    raw, jet = statistics.median(raw_runs), statistics.median(jet_runs)
    ratios = [j / r for r, j in zip(raw_runs, jet_runs, strict=True)]
    per_round = " ".join(f"{r:.2f}" for r in ratios)
    throughput = Table(
        f"throughput, {args.rounds} interleaved rounds of {args.tasks} no-op tasks each "
        "(one in-process worker, concurrency 128, fetch batch 64)",
        ["consumer", "median tasks/s", "runs"],
        [
            ["raw nats-py pull+ack", raw, " ".join(f"{v:.0f}" for v in raw_runs)],
            ["jetpool worker", jet, " ".join(f"{v:.0f}" for v in jet_runs)],
            ["ratio of medians (goal >= 0.80)", jet / raw, f"per round: {per_round}"],
        ],
    )
    latency = Table(
        f"latency publish -> ack received by the server, {args.rate:g}/s for {args.seconds:g} s "
        f"({int(args.rate * args.seconds)} tasks)",
        ["consumer", "p50 ms", "p95 ms", "p99 ms"],
        [["jetpool worker", *lat.values()]],
    )
    run.finish(
        "One in-process worker vs a raw nats-py pull+ack loop (no-op tasks)",
        "The worker's own cost on its hot path: a minimal nats-py loop (`fetch(64)`, ack each) "
        "and one in-process jetpool `Worker` drain the same pre-filled stream in turn; then "
        "publish -> ack latency of the worker at a fixed rate.",
        [throughput, latency],
    )


if __name__ == "__main__":
    asyncio.run(main())
