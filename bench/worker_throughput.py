"""Throughput and latency of one jetpool worker against a raw nats-py pull+ack loop.

Both consume no-op tasks from the same kind of WorkQueue stream on the same nats-server, in
the same run, alternating (raw, worker, raw, worker...) so that load from neighbours hits both
alike; the medians and their ratio say what the worker's machinery costs. Then, at a fixed
publish rate, publish->ack latency percentiles of the worker. Runs in about a minute:

    .venv/bin/python bench/worker_throughput.py [--tasks 10000] [--rounds 5] [--rate 500]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "worker")]

import nats  # noqa: E402
from nats.aio.msg import Msg  # noqa: E402
from nats.js import api  # noqa: E402
from nats.js.client import JetStreamContext  # noqa: E402

from e2e.testbed.nats_server import NatsServer  # noqa: E402
from jetpool_protocol.envelope import Task  # noqa: E402
from jetpool_protocol.worker_settings import WorkerSettings  # noqa: E402
from jetpool_worker.consumer_loop import Worker  # noqa: E402
from jetpool_worker.handlers import Handler  # noqa: E402

BATCH = 64


async def until(condition: Callable[[], bool]) -> None:
    """Poll a condition owned by another coroutine (the benchmark must not change the worker)."""
    while not condition():  # noqa: ASYNC110 - the worker exposes counters, not events
        await asyncio.sleep(0.002)


async def make_stream(js: JetStreamContext, name: str) -> str:
    await js.add_stream(
        api.StreamConfig(
            name=name, subjects=[f"{name}.>"], retention=api.RetentionPolicy.WORK_QUEUE
        )
    )
    await js.add_stream(name=f"{name}-dlq", subjects=[f"dlq.{name}.>"])
    await js.add_consumer(
        name,
        api.ConsumerConfig(
            durable_name="workers",
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=30,
            max_deliver=10,
            max_ack_pending=10_000,
        ),
    )
    return f"{name}.work"


async def fill(js: JetStreamContext, subject: str, count: int) -> None:
    """Publish ``count`` tasks quickly (async publish, bounded window)."""
    window = []
    for i in range(count):
        window.append(await js.publish_async(subject, b"{}", headers={"Jetpool-Task-Id": str(i)}))
        if len(window) >= 2000:
            await asyncio.gather(*window)
            window.clear()
    await asyncio.gather(*window)


async def raw_loop(url: str, stream: str, count: int) -> float:
    """Baseline: fetch a batch, ack each message, repeat."""
    nc = await nats.connect(url)
    sub = await nc.jetstream().pull_subscribe_bind("workers", stream=stream)
    done = 0
    started = time.perf_counter()
    while done < count:
        try:
            msgs = await sub.fetch(BATCH, timeout=0.5)
        except nats.errors.TimeoutError:
            continue
        for msg in msgs:
            await msg.ack()
        done += len(msgs)
    elapsed = time.perf_counter() - started
    await nc.close()
    return count / elapsed


def settings_for(url: str, stream: str, **extra: Any) -> WorkerSettings:
    return WorkerSettings.model_validate(
        {
            "pool_name": stream.lower(),
            "worker_id": "bench",
            "handler": "bench:noop",
            "nats_url": url,
            "stream": stream,
            "consumer": "workers",
            "dead_letter_stream": f"{stream}-dlq",
            "dead_letter_subject_prefix": f"dlq.{stream}",
            "control_key": f"bench.{stream}",
            "stats_subject": f"jetpool.stats.bench.{stream}",
            "metrics_port": 0,
            "concurrency": 2 * BATCH,
            "fetch_batch": BATCH,
            "log_format": "text",
            "log_level": "WARNING",
            **extra,
        }
    )


async def worker_run(
    url: str, stream: str, count: int, handler: Callable[[Task], Awaitable[None]]
) -> float:
    """Timed from the moment the worker may fetch (connected, breaker state read)."""
    worker = Worker(settings_for(url, stream), handler=Handler.wrap(handler))
    stop = asyncio.Event()
    run = asyncio.create_task(worker.run(stop))
    await until(lambda: worker.consuming and worker.gate.known)
    started = time.perf_counter()
    await until(lambda: worker.counters.succeeded >= count)
    elapsed = time.perf_counter() - started
    stop.set()
    await run
    return count / elapsed


async def latency_run(url: str, stream: str, rate: float, seconds: float) -> list[float]:
    """Publish at ``rate``/s to a worker; latency ends when the server receives the ack.

    Acks are observed on a second connection subscribed to ``$JS.ACK.<stream>.>``: core NATS
    delivers it a copy of every ack the worker sends. The reply subject carries the stream
    sequence, which (one publisher, fresh stream) is the publish order.
    """
    acked: dict[int, float] = {}

    async def on_ack(msg: Msg) -> None:
        if msg.data in (b"", b"+ACK"):
            acked[int(msg.subject.split(".")[5])] = time.perf_counter()

    async def noop(task: Task) -> None:
        return None

    observer = await nats.connect(url)
    await observer.subscribe(f"$JS.ACK.{stream}.>", cb=on_ack)
    await observer.flush()
    worker = Worker(settings_for(url, stream), handler=Handler.wrap(noop))
    stop = asyncio.Event()
    run = asyncio.create_task(worker.run(stop))
    await until(lambda: worker.consuming and worker.gate.known)
    nc = await nats.connect(url)
    js = nc.jetstream()
    total = int(rate * seconds)
    sent: list[float] = []
    acks = []
    start = time.perf_counter()
    for i in range(total):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        sent.append(time.perf_counter())
        acks.append(await js.publish_async(f"{stream}.work", b"{}"))
    stored = [a.seq for a in await asyncio.gather(*acks)]
    assert stored == list(range(1, total + 1)), "sequences are not the publish order"
    await until(lambda: len(acked) >= total)
    stop.set()
    await run
    await nc.close()
    await observer.close()
    return [acked[seq] - sent[seq - 1] for seq in stored]


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] * 1000


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    server = NatsServer().start()
    raw_runs: list[float] = []
    jet_runs: list[float] = []
    try:
        nc = await nats.connect(server.url)
        js = nc.jetstream()

        async def noop(task: Task) -> None:
            return None

        for _ in range(args.rounds):  # interleaved, so drift on a shared box hits both alike
            for runs in (raw_runs, jet_runs):
                stream = f"B{uuid.uuid4().hex[:8]}"
                subject = await make_stream(js, stream)
                await fill(js, subject, args.tasks)
                if runs is raw_runs:
                    runs.append(await raw_loop(server.url, stream, args.tasks))
                else:
                    runs.append(await worker_run(server.url, stream, args.tasks, noop))
                await js.delete_stream(stream)
                await js.delete_stream(f"{stream}-dlq")
        stream = f"L{uuid.uuid4().hex[:8]}"
        await make_stream(js, stream)
        lat = await latency_run(server.url, stream, args.rate, args.seconds)
        await nc.close()
    finally:
        server.close()
    raw, jet = statistics.median(raw_runs), statistics.median(jet_runs)
    ratios = [j / r for r, j in zip(raw_runs, jet_runs, strict=True)]
    print(f"throughput, {args.rounds} interleaved rounds of {args.tasks} no-op tasks each")
    print(f"{'consumer':<24}{'median/s':>10}   runs/s")
    print(f"{'raw nats-py pull+ack':<24}{raw:>10.0f}   {' '.join(f'{v:.0f}' for v in raw_runs)}")
    print(f"{'jetpool worker':<24}{jet:>10.0f}   {' '.join(f'{v:.0f}' for v in jet_runs)}")
    print(
        f"{'ratio of medians':<24}{jet / raw:>10.2f}   per round: "
        f"{' '.join(f'{r:.2f}' for r in ratios)}   (goal >= 0.80)"
    )
    print(
        f"latency publish -> ack received by the server, {args.rate:.0f}/s for "
        f"{args.seconds:g}s ({len(lat)} tasks): p50 {pct(lat, 50):.2f} ms  "
        f"p95 {pct(lat, 95):.2f} ms  p99 {pct(lat, 99):.2f} ms"
    )


if __name__ == "__main__":
    asyncio.run(main())
