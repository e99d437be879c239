"""Calling the handler: timeout, tracing span, and in-progress heartbeats.

Sync handlers run in a thread pool. Python cannot kill a thread, so when a sync handler
overruns its timeout the task is failed (and retried) at once, but the thread keeps running
until the function returns; its concurrency slot stays taken until then, so ``concurrency``
always bounds the number of handler threads really running. Async handlers are cancelled.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import inspect
import logging
import time
import traceback
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from opentelemetry import propagate, trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from jetpool_protocol.envelope import Task
from jetpool_protocol.telemetry import tracing_enabled
from jetpool_worker.eager import resume
from jetpool_worker.handlers import Handler

log = logging.getLogger(__name__)
_tracer = trace.get_tracer("jetpool_worker")


class Acknowledgeable(Protocol):
    async def in_progress(self) -> None: ...


@dataclass(slots=True)
class Outcome:
    """What one handler call did; ``lingering`` is a timed-out sync call still running."""

    error: BaseException | None = None
    traceback: str | None = None
    duration_seconds: float = 0.0
    result: Any = None
    lingering: concurrent.futures.Future[Any] | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def format_traceback(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def trace_context(headers: Mapping[str, str]) -> Any:
    """OpenTelemetry context from a task's ``traceparent``/``tracestate`` headers."""
    return propagate.extract(dict(headers))


async def call_handler(
    handler: Handler,
    argument: Task | list[Task],
    *,
    timeout_seconds: float,
    executor: concurrent.futures.Executor,
) -> Outcome:
    """Run the handler once with a timeout; never raises (except on cancellation).

    Must be called from the task that owns this one delivery (never from the fetch loop):
    user code binds timeouts, task groups and cancel scopes to ``asyncio.current_task()``.
    """
    started = time.perf_counter()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_seconds
    lingering: concurrent.futures.Future[Any] | None = None
    try:
        if handler.is_async:
            # The first step runs before any timeout scope exists: a handler that finishes
            # without waiting cannot be interrupted by one anyway, and most do.
            coro = handler.func(argument)
            if type(coro) is not types.CoroutineType:
                async with asyncio.timeout_at(deadline):
                    result = await coro
            else:
                try:
                    yielded = coro.send(None)
                except StopIteration as stop:
                    result = stop.value
                else:
                    async with asyncio.timeout_at(deadline):  # no extra task, unlike wait_for
                        result = await resume(coro, yielded)
        else:
            context = contextvars.copy_context()
            lingering = executor.submit(context.run, handler.func, argument)
            async with asyncio.timeout_at(deadline):
                result = await asyncio.wrap_future(lingering)
                lingering = None
                if inspect.isawaitable(result):
                    # A sync wrapper around an async function (a decorator without
                    # ``markcoroutinefunction``): its result is the real work, still undone.
                    result = await result
    except TimeoutError:
        error = TimeoutError(f"handler {handler.name} exceeded its timeout of {timeout_seconds:g}s")
        return Outcome(
            error=error,
            traceback=None,
            duration_seconds=time.perf_counter() - started,
            lingering=lingering if lingering is not None and not lingering.done() else None,
        )
    except asyncio.CancelledError as exc:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise
        # The handler raised CancelledError without this task being cancelled (a library's
        # cancel scope leaking out): a failure of this task, not a stop of the worker.
        return Outcome(
            error=exc,
            traceback=format_traceback(exc),
            duration_seconds=time.perf_counter() - started,
        )
    except Exception as exc:
        return Outcome(
            error=exc,
            traceback=format_traceback(exc),
            duration_seconds=time.perf_counter() - started,
        )
    return Outcome(result=result, duration_seconds=time.perf_counter() - started)


async def run_task(
    handler: Handler, task: Task, *, timeout_seconds: float, executor: concurrent.futures.Executor
) -> Outcome:
    """One task inside a consumer span whose parent comes from the task's trace headers."""
    if not tracing_enabled():
        return await call_handler(handler, task, timeout_seconds=timeout_seconds, executor=executor)
    with _tracer.start_as_current_span(
        "jetpool.task",
        context=trace_context(task.headers),
        kind=SpanKind.CONSUMER,
        attributes={
            "messaging.system": "nats",
            "messaging.destination.name": task.subject,
            "messaging.message.id": task.id,
            "jetpool.attempt": task.attempt,
        },
    ) as span:
        outcome = await call_handler(
            handler, task, timeout_seconds=timeout_seconds, executor=executor
        )
        if outcome.error is not None:
            span.record_exception(outcome.error)
            span.set_status(Status(StatusCode.ERROR, str(outcome.error)))
        return outcome


async def run_batch(
    handler: Handler,
    tasks: list[Task],
    *,
    timeout_seconds: float,
    executor: concurrent.futures.Executor,
) -> list[Outcome]:
    """A batch handler call, spread back into one outcome per task."""
    links = [
        Link(trace.get_current_span(trace_context(t.headers)).get_span_context()) for t in tasks
    ]
    with _tracer.start_as_current_span(
        "jetpool.batch",
        kind=SpanKind.CONSUMER,
        links=links,
        attributes={"jetpool.batch_size": len(tasks)},
    ) as span:
        whole = await call_handler(
            handler, tasks, timeout_seconds=timeout_seconds, executor=executor
        )
        if whole.error is not None:
            span.record_exception(whole.error)
            span.set_status(Status(StatusCode.ERROR, str(whole.error)))
            return [whole] + [
                Outcome(
                    error=whole.error,
                    traceback=whole.traceback,
                    duration_seconds=whole.duration_seconds,
                )
                for _ in tasks[1:]
            ]
        return split_batch_result(whole, len(tasks))


def split_batch_result(whole: Outcome, size: int) -> list[Outcome]:
    """Map a batch handler's return value to per-task outcomes (see ``batch_handler``)."""
    result = whole.result
    if result is None:
        return [Outcome(duration_seconds=whole.duration_seconds) for _ in range(size)]
    if not isinstance(result, Sequence) or len(result) != size:
        error = TypeError(
            f"batch handler must return None or a list of {size} outcomes, got {result!r:.200}"
        )
        return [Outcome(error=error, duration_seconds=whole.duration_seconds) for _ in range(size)]
    outcomes = []
    for item in result:
        if item is None:
            outcomes.append(Outcome(duration_seconds=whole.duration_seconds))
        elif isinstance(item, BaseException):
            outcomes.append(
                Outcome(
                    error=item,
                    traceback=format_traceback(item),
                    duration_seconds=whole.duration_seconds,
                )
            )
        else:
            error = TypeError(f"batch outcome must be None or an exception, got {item!r:.200}")
            outcomes.append(Outcome(error=error, duration_seconds=whole.duration_seconds))
    return outcomes


class Heartbeats:
    """One ticker sends ``in_progress`` for every in-flight message, so long tasks keep their
    lease (ack wait) instead of being redelivered to another worker mid-run."""

    def __init__(self, interval_seconds: float) -> None:
        self.interval_seconds = interval_seconds
        self._messages: dict[int, Acknowledgeable] = {}

    def add(self, msg: Acknowledgeable) -> None:
        self._messages[id(msg)] = msg

    def remove(self, msg: Acknowledgeable) -> None:
        self._messages.pop(id(msg), None)

    def __len__(self) -> int:
        return len(self._messages)

    async def beat_once(self) -> None:
        for msg in list(self._messages.values()):
            try:
                await msg.in_progress()
            except Exception as exc:
                log.warning("in-progress heartbeat failed: %s", exc)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_seconds)
            await self.beat_once()
