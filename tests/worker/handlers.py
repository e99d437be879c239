"""Handlers the worker tests run (in-process and in subprocesses via ``tests.worker.handlers:...``).

The payload says what to do: ``{"fail_times": 2}`` fails the first two attempts, ``{"raise":
"ValueError"}`` always raises that type, ``{"sleep": 3}`` sleeps, ``{"reject": "why"}`` rejects,
``{"inner_timeout": 0.1}`` (async ``handle`` only) times out inside its own ``asyncio.timeout``.
Completions are recorded in memory (``DONE``) and, when ``JETPOOL_TEST_DONE_FILE`` is set (a
name the worker settings ignore), appended to that file so a parent process can read them.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import defaultdict

from opentelemetry import trace

from jetpool_worker import Reject, Retry, Task, TaskCancelled, batch_handler

DONE: dict[str, int] = defaultdict(int)
ATTEMPT_TIMES: dict[str, list[float]] = defaultdict(list)
BATCH_SIZES: list[int] = []
FIRST_STEP_TASKS: dict[str, asyncio.Task[object] | None] = {}


class PermanentError(Exception):
    pass


def _record_done(task: Task) -> None:
    DONE[task.id] += 1
    path = os.environ.get("JETPOOL_TEST_DONE_FILE")
    if path:
        with open(path, "a") as f:
            f.write(task.id + "\n")


def _behave(task: Task) -> float:
    """Raise as the payload says; return how long to sleep before succeeding."""
    ATTEMPT_TIMES[task.id].append(time.monotonic())
    spec = task.json() if task.payload else {}
    if "reject" in spec:
        raise Reject(spec["reject"])
    if "raise" in spec:
        raise {"ValueError": ValueError, "PermanentError": PermanentError}[spec["raise"]](
            f"told to raise for {task.id}"
        )
    if task.attempt <= spec.get("fail_times", 0):
        raise RuntimeError(f"planned failure {task.attempt} of {task.id}")
    if task.attempt <= spec.get("retry_times", 0):
        raise Retry(delay=spec.get("retry_delay"))
    return float(spec.get("sleep", 0))


async def handle(task: Task) -> None:
    FIRST_STEP_TASKS[task.id] = asyncio.current_task()
    spec = task.json() if task.payload else {}
    if "inner_timeout" in spec:  # a timeout scope of the handler's own, as httpx/anyio make
        async with asyncio.timeout(spec["inner_timeout"]):
            await asyncio.sleep(5)
    pause = _behave(task)
    if pause:
        await asyncio.sleep(pause)
    _record_done(task)


def handle_sync(task: Task) -> None:
    pause = _behave(task)
    if pause:
        time.sleep(pause)
    _record_done(task)


@batch_handler(max_size=5)
async def handle_batch(tasks: list[Task]) -> list[BaseException | None]:
    BATCH_SIZES.append(len(tasks))
    outcomes: list[BaseException | None] = []
    for task in tasks:
        try:
            _behave(task)
        except Exception as exc:
            outcomes.append(exc)
            continue
        _record_done(task)
        outcomes.append(None)
    return outcomes


FILLED: list[tuple[float, list[str]]] = []
"""The filling batch handler's record: (monotonic start, task ids) of each call."""


@batch_handler(max_size=10, fill_timeout=0.5)
async def fill_batch(tasks: list[Task]) -> None:
    FILLED.append((time.monotonic(), [t.id for t in tasks]))


async def noop(task: Task) -> None:
    """For benchmarks: do nothing at all."""


LEDGER: dict[str, list[str]] = defaultdict(list)
"""The lifecycle handlers' own record: per task id, one entry per run ("ran", then how it
ended: "returned", "raised", "cancelled")."""


async def lifecycle(task: Task) -> object:
    """``{"return": X}`` returns X, ``{"raise": msg}`` raises, ``{"sleep": s}`` sleeps first
    (cancellable), ``{"fail_once": true}`` fails its first run only."""
    spec = task.json() if task.payload else {}
    LEDGER[task.id].append("ran")
    try:
        await asyncio.sleep(float(spec.get("sleep", 0)))
    except asyncio.CancelledError:
        LEDGER[task.id].append("cancelled")
        raise
    if "raise" in spec or (spec.get("fail_once") and task.attempt == 1):
        LEDGER[task.id].append("raised")
        raise RuntimeError(spec.get("raise", "first run fails"))
    LEDGER[task.id].append("returned")
    return spec.get("return")


STARTS: dict[str, list[float]] = defaultdict(list)
"""The stamping handler's own record: per task id, the wall-clock time of each start."""


async def stamped(task: Task) -> None:
    """Notes when it started, then sleeps ``{"sleep": s}`` (rate limits, keyed concurrency)."""
    STARTS[task.id].append(time.time())
    spec = task.json() if task.payload else {}
    await asyncio.sleep(float(spec.get("sleep", 0)))


SPANS: dict[str, list[tuple[float, float]]] = defaultdict(list)
"""The spanning handler's own record: per task id, (start, end) of each run (monotonic)."""


async def spanned(task: Task) -> None:
    """Records when it ran, sleeping ``{"sleep": s}`` in between (keyed concurrency, ordered
    keys); ``{"fail_first": true}`` raises after its first run, ``{"raise": msg}`` always."""
    started = time.monotonic()
    spec = task.json() if task.payload else {}
    await asyncio.sleep(float(spec.get("sleep", 0)))
    SPANS[task.id].append((started, time.monotonic()))
    if "raise" in spec or (spec.get("fail_first") and task.attempt == 1):
        raise RuntimeError(spec.get("raise", "first run fails"))


def lifecycle_sync(task: Task) -> object:
    """The sync twin: a long run checks ``task.cancel_requested`` between steps."""
    spec = task.json() if task.payload else {}
    LEDGER[task.id].append("ran")
    deadline = time.monotonic() + float(spec.get("sleep", 0))
    while time.monotonic() < deadline:
        if task.cancel_requested:
            LEDGER[task.id].append("cancelled")
            raise TaskCancelled(task.id)
        time.sleep(0.02)
    LEDGER[task.id].append("returned")
    return spec.get("return")


def traced(task: Task) -> None:
    """A sync handler that makes its own span, as user code with the OpenTelemetry API does."""
    with trace.get_tracer("tests.handlers").start_as_current_span("charge card") as span:
        span.set_attribute("task.id", task.id)
        _record_done(task)


RUNS: list[tuple[str, float, float]] = []
"""(task id, started, finished), monotonic: the record of every run :func:`ledgered` finished."""


async def ledgered(task: Task) -> None:
    """Sleeps ``{"sleep": s}``, then records the run in :data:`RUNS`."""
    started = time.monotonic()
    await asyncio.sleep(float(task.json().get("sleep", 0)) if task.payload else 0)
    RUNS.append((task.id, started, time.monotonic()))
