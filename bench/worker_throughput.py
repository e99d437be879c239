"""Throughput and latency of one jetpool worker against a raw nats-py pull+ack loop.

Both consume no-op tasks from the same kind of WorkQueue stream on the same nats-server, in
the same run, so the ratio says what the worker's machinery costs. Then, at a fixed publish
rate, publish->ack latency percentiles of the worker. Runs in well under two minutes:

    .venv/bin/python bench/worker_throughput.py [--tasks 20000] [--rate 500]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "worker")]

import nats  # noqa: E402
from nats.js import api  # noqa: E402

from e2e.testbed.nats_server import NatsServer  # noqa: E402
from jetpool_protocol.envelope import Task  # noqa: E402
from jetpool_protocol.worker_settings import WorkerSettings  # noqa: E402
from jetpool_worker.consumer_loop import Worker  # noqa: E402
from jetpool_worker.handlers import Handler  # noqa: E402

BATCH = 64


async def until(condition) -> None:
    """Poll a condition owned by another coroutine (the benchmark must not change the worker)."""
    while not condition():  # noqa: ASYNC110 - the worker exposes counters, not events
        await asyncio.sleep(0.002)


async def make_stream(js, name: str) -> str:
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


async def fill(js, subject: str, count: int) -> None:
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


def settings_for(url: str, stream: str, **extra) -> WorkerSettings:
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


async def worker_run(url: str, stream: str, count: int, handler) -> float:
    worker = Worker(settings_for(url, stream), handler=Handler.wrap(handler))
    stop = asyncio.Event()
    run = asyncio.create_task(worker.run(stop))
    await until(lambda: worker.consuming)
    started = time.perf_counter()
    await until(lambda: worker.counters.succeeded >= count)
    elapsed = time.perf_counter() - started
    stop.set()
    await run
    return count / elapsed


async def latency_run(url: str, stream: str, rate: float, seconds: float) -> list[float]:
    """Publish at ``rate``/s; each task's handler notes publish->handled; ack follows at once."""
    latencies: list[float] = []

    async def handler(task: Task) -> None:
        latencies.append(time.time() - float(task.headers["Sent-At"]))

    worker = Worker(settings_for(url, stream), handler=Handler.wrap(handler))
    stop = asyncio.Event()
    run = asyncio.create_task(worker.run(stop))
    await until(lambda: worker.consuming)
    nc = await nats.connect(url)
    js = nc.jetstream()
    total = int(rate * seconds)
    start = time.perf_counter()
    for i in range(total):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await js.publish_async(f"{stream}.work", b"{}", headers={"Sent-At": repr(time.time())})
    await until(lambda: len(latencies) >= total)
    stop.set()
    await run
    await nc.close()
    return latencies


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] * 1000


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    server = NatsServer().start()
    try:
        nc = await nats.connect(server.url)
        js = nc.jetstream()

        async def noop(task: Task) -> None:
            return None

        results = {}
        for label in ("raw nats-py pull+ack", "jetpool worker"):
            stream = f"B{uuid.uuid4().hex[:8]}"
            subject = await make_stream(js, stream)
            await fill(js, subject, args.tasks)
            if label.startswith("raw"):
                results[label] = await raw_loop(server.url, stream, args.tasks)
            else:
                results[label] = await worker_run(server.url, stream, args.tasks, noop)
        stream = f"L{uuid.uuid4().hex[:8]}"
        await make_stream(js, stream)
        lat = await latency_run(server.url, stream, args.rate, args.seconds)
        await nc.close()
    finally:
        server.close()
    raw, jet = results["raw nats-py pull+ack"], results["jetpool worker"]
    print(f"{'consumer':<24}{'tasks/s':>10}")
    for label, value in results.items():
        print(f"{label:<24}{value:>10.0f}")
    print(f"{'ratio worker/raw':<24}{jet / raw:>10.2f}   (goal >= 0.80)")
    print(
        f"latency publish->handled at {args.rate:.0f}/s over {len(lat)} tasks: "
        f"p50 {pct(lat, 50):.2f} ms  p95 {pct(lat, 95):.2f} ms  p99 {pct(lat, 99):.2f} ms"
    )


if __name__ == "__main__":
    asyncio.run(main())
