"""Helpers of the three-server tests."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import nats.errors
from nats.js.client import JetStreamContext

from e2e.testbed.nats_cluster import NatsCluster
from jetpool_protocol.envelope import task_headers
from tests.worker import handlers
from tests.worker.helpers import Pool, make_pool

T = TypeVar("T")


async def answered(call: Callable[[], Awaitable[T]], within: float = 30.0) -> T:
    """``call``'s answer, asked again while the cluster elects a leader (timeouts, no
    responders, JetStream temporarily unavailable) for up to ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        try:
            return await call()
        except (nats.errors.Error, TimeoutError, OSError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


def resumed_after(kill: float, starts: list[float]) -> float:
    """Seconds from a kill to consumption resumed: to the first task start after the longest
    pause in starts that followed it (the first start, when nothing paused over 0.2 s)."""
    after = sorted(t for t in starts if t > kill)
    if not after:
        return float("inf")
    gaps = [(b - a, b) for a, b in zip([kill, *after], after, strict=False)]
    longest, resumed = max(gaps)
    return resumed - kill if longest > 0.2 else after[0] - kill


async def burst(
    js: JetStreamContext,
    cluster: NatsCluster,
    prefix: str,
    tasks: int,
    sleep: float = 0.05,
    **settings: Any,
) -> tuple[Pool, list[str]]:
    """An R3 pool of :func:`tests.worker.handlers.ledgered` workers (its ledger cleared) with
    ``tasks`` tasks of ``sleep`` seconds queued."""
    handlers.RUNS.clear()
    pool = await make_pool(
        js, cluster.url, handler="tests.worker.handlers:ledgered", replicas=3, **settings
    )
    ids = [f"{prefix}{i}" for i in range(tasks)]
    body = json.dumps({"sleep": sleep}).encode()
    now = datetime.now(UTC)
    for chunk in range(0, tasks, 500):
        await asyncio.gather(
            *(
                js.publish(pool.subject(), body, headers=task_headers(task_id=i, created_at=now))
                for i in ids[chunk : chunk + 500]
            )
        )
    return pool, ids


def runs_by_task() -> dict[str, int]:
    """How many times the handler finished each task, by its own ledger."""
    runs: dict[str, int] = {}
    for task_id, _, _ in handlers.RUNS:
        runs[task_id] = runs.get(task_id, 0) + 1
    return runs
