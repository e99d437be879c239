"""Loading the user's handler: ``package.module:function`` or a ``jetpool.handlers`` entry point."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, TypeVar

from jetpool_protocol.envelope import Task
from jetpool_worker.errors import HandlerLoadError

ENTRY_POINT_GROUP = "jetpool.handlers"
BATCH_ATTRIBUTE = "__jetpool_batch_max_size__"
FILL_TIMEOUT_ATTRIBUTE = "__jetpool_batch_fill_timeout__"

BatchResult = Sequence[BaseException | None] | None
"""What a batch handler returns: one outcome per task (None = success), or None for all ok."""

F = TypeVar("F", bound=Callable[..., Any])


def batch_handler(max_size: int = 16, fill_timeout: float | None = None) -> Callable[[F], F]:
    """Mark a handler as taking ``list[Task]`` (at most ``max_size`` per call).

    Without ``fill_timeout`` a batch is what arrived together; with it, the worker holds
    arrivals until ``max_size`` are there or the oldest has waited ``fill_timeout`` seconds
    (batches are also bounded by the pool's ``concurrency``: held tasks take its slots).

    Each task's outcome is still acked, retried or dead-lettered on its own: return a list
    with one entry per task (``None`` for success, an exception for failure), or ``None`` when
    all succeeded. Raising fails every task of the batch with that exception.
    """
    if max_size < 1:
        raise ValueError("max_size must be at least 1")
    if fill_timeout is not None and not 0 < fill_timeout <= 300:
        raise ValueError("fill_timeout must be more than 0 and at most 300 seconds")

    def mark(func: F) -> F:
        setattr(func, BATCH_ATTRIBUTE, max_size)
        setattr(func, FILL_TIMEOUT_ATTRIBUTE, fill_timeout)
        return func

    return mark


@dataclass(frozen=True, slots=True)
class Handler:
    """A loaded handler and how to call it."""

    func: Callable[..., Any]
    name: str
    is_async: bool
    batch_max_size: int | None = None
    batch_fill_timeout: float | None = None

    @property
    def is_batch(self) -> bool:
        return self.batch_max_size is not None

    @classmethod
    def wrap(cls, func: Callable[..., Any], name: str | None = None) -> Handler:
        batch = getattr(func, BATCH_ATTRIBUTE, None)
        fill_timeout = getattr(func, FILL_TIMEOUT_ATTRIBUTE, None)
        return cls(
            func=func,
            name=name or str(getattr(func, "__qualname__", repr(func))),
            is_async=inspect.iscoroutinefunction(func)
            or inspect.iscoroutinefunction(getattr(func, "__call__", None)),  # noqa: B004
            batch_max_size=int(batch) if batch is not None else None,
            batch_fill_timeout=float(fill_timeout) if fill_timeout is not None else None,
        )


SyncHandler = Callable[[Task], object]
AsyncHandler = Callable[[Task], Awaitable[object]]


def load_handler(spec: str) -> Handler:
    """Resolve ``spec``; raises :class:`HandlerLoadError` with a message fit for an operator."""
    if ":" in spec:
        module_name, _, attr_path = spec.partition(":")
        try:
            target: Any = importlib.import_module(module_name)
        except Exception as exc:
            raise HandlerLoadError(f"cannot import handler module {module_name!r}: {exc}") from exc
        for part in attr_path.split("."):
            try:
                target = getattr(target, part)
            except AttributeError as exc:
                raise HandlerLoadError(f"module {module_name!r} has no {attr_path!r}") from exc
    else:
        found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == spec]
        if not found:
            raise HandlerLoadError(
                f"handler {spec!r} is neither 'module:function' nor an entry point in group "
                f"{ENTRY_POINT_GROUP!r}"
            )
        try:
            target = found[0].load()
        except Exception as exc:
            raise HandlerLoadError(f"cannot load entry point {spec!r}: {exc}") from exc
    if not callable(target):
        raise HandlerLoadError(f"handler {spec!r} is not callable")
    return Handler.wrap(target, name=spec)
