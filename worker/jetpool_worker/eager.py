"""Run a coroutine's first step at once, and pay for an asyncio task only if it suspends.

Most no-op or cache-hit handlers finish without ever waiting; creating a task (and a loop
turn) for each of them is the single largest per-task cost. This is Python 3.12's
``eager_task_factory`` for one call site, on 3.11.
"""

from __future__ import annotations

import asyncio
import contextvars
import types
from collections.abc import Coroutine, Generator
from typing import Any, TypeVar

T = TypeVar("T")

_first_step: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "jetpool_eager_first_step", default=False
)


async def in_own_task() -> None:
    """Suspend once if running in an eager first step, so the rest runs in its own task.

    Needed before anything that acts on ``asyncio.current_task()``, above all a timeout
    scope: during the first step the current task is the caller's, which a timeout would
    cancel instead.
    """
    if _first_step.get():
        await asyncio.sleep(0)


@types.coroutine
def resume(coro: Coroutine[Any, Any, T], yielded: Any) -> Generator[Any, Any, T]:
    """Finish ``coro`` whose first step already ran and yielded ``yielded``.

    Passes every yield up to the running task and every send, throw (cancellation) and close
    back down, exactly as ``await coro`` would have.
    """
    while True:
        try:
            sent = yield yielded
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:
            try:
                yielded = coro.throw(exc)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
        else:
            try:
                yielded = coro.send(sent)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]


async def _rest(coro: Coroutine[Any, Any, T], yielded: Any) -> T:
    return await resume(coro, yielded)


def start_eagerly(coro: Coroutine[Any, Any, None]) -> asyncio.Task[None] | None:
    """Run ``coro`` until it first suspends; None when it finished, else a task finishing it.

    The first step runs in a copy of the current context, which the task then keeps, so
    context variables behave as if ``create_task`` had been called. Code that needs its own
    task (timeouts) must ``await in_own_task()`` first.
    """
    context = contextvars.copy_context()
    context.run(_first_step.set, True)
    try:
        yielded = context.run(coro.send, None)
    except StopIteration:
        return None
    except BaseException:
        coro.close()
        raise
    context.run(_first_step.set, False)
    return asyncio.get_running_loop().create_task(_rest(coro, yielded), context=context)
