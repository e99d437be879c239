"""Finish a coroutine whose first step the caller already ran, in the caller's own task.

``call_handler`` runs an async handler's first step itself so that a handler that returns
without waiting needs no timeout scope (timer handle). This is only sound inside the task that
owns the delivery: user code binds timeouts, task groups and cancel scopes to
``asyncio.current_task()``, so it must never start in one task and go on in another (an earlier
"eager start" that ran the first step inside the fetch loop's task let a handler's
``asyncio.timeout`` cancel the fetch loop).
"""

from __future__ import annotations

import types
from collections.abc import Coroutine, Generator
from typing import Any, TypeVar

T = TypeVar("T")


@types.coroutine
def resume(coro: Coroutine[Any, Any, T], yielded: Any) -> Generator[Any, Any, T]:
    """Finish ``coro`` whose first step already ran (in this task) and yielded ``yielded``.

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
