"""The baseline: a bare nats-py pull+ack loop, in-process (:func:`pull_ack_loop`) or as a
process of its own (``python -m bench.lib.raw_consumer``), running the benchmarks' handler.

What a user would write without jetpool: ``fetch(batch)``, run the batch's handlers
concurrently, ack each as its handler returns, repeat. The process announces itself on
``--ready`` once it is bound to the consumer and starts pulling on the first message to
``--go``, so it is timed exactly like a worker held by its circuit breaker.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import Any

import nats
import nats.errors

from bench.lib.handlers import load

FETCH_TIMEOUT = 0.5


async def pull_ack_loop(
    sub: Any,
    batch: int,
    count: int | None = None,
    handler: Callable[[Any], Awaitable[None]] | None = None,
) -> int:
    """Fetch up to ``batch`` messages, run ``handler`` on them concurrently (none: ack at
    once, one by one), ack each, repeat until ``count`` are acked (None: forever)."""

    async def handle_and_ack(msg: Any) -> None:
        assert handler is not None
        await handler(msg)
        await msg.ack()

    done = 0
    while count is None or done < count:
        try:
            msgs = await sub.fetch(batch, timeout=FETCH_TIMEOUT)
        except (nats.errors.TimeoutError, TimeoutError):
            continue
        if handler is None:
            for msg in msgs:
                await msg.ack()
        elif len(msgs) == 1:
            await handle_and_ack(msgs[0])
        else:
            await asyncio.gather(*(handle_and_ack(m) for m in msgs))
        done += len(msgs)
    return done


async def by_subject(msg: Any) -> None:
    """The load named by the subject's last token, as ``bench.lib.handlers.work`` does."""
    await load(msg.subject.rpartition(".")[2])


async def serve(
    url: str, stream: str, consumer: str, concurrency: int, ready: str, go: str
) -> None:
    nc = await nats.connect(url, name=f"raw-{os.getpid()}", max_reconnect_attempts=-1)
    sub = await nc.jetstream().pull_subscribe_bind(consumer, stream=stream)
    started = asyncio.Event()

    async def on_go(_: Any) -> None:
        started.set()

    await nc.subscribe(go, cb=on_go)
    await nc.publish(ready, f"raw-{os.getpid()}".encode())
    await nc.flush()
    await started.wait()
    await pull_ack_loop(sub, concurrency, None, by_subject)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--stream", required=True)
    parser.add_argument("--consumer", default="workers")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--ready", required=True, help="subject to announce readiness on")
    parser.add_argument("--go", required=True, help="subject whose first message starts it")
    args = parser.parse_args()
    asyncio.run(serve(args.url, args.stream, args.consumer, args.concurrency, args.ready, args.go))


if __name__ == "__main__":
    main()
