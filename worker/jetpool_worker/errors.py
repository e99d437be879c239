"""Exceptions a handler raises to steer what happens to its task."""

from __future__ import annotations


class Retry(Exception):
    """Retry this task (counts as an attempt); ``delay`` overrides the computed backoff."""

    def __init__(self, delay: float | None = None, message: str = "handler asked for a retry"):
        super().__init__(message)
        if delay is not None and delay < 0:
            raise ValueError("Retry delay must not be negative")
        self.delay = delay


class Reject(Exception):
    """The task can never succeed: dead-letter it at once as ``non_retryable``."""

    def __init__(self, reason: str = "rejected by handler"):
        super().__init__(reason)
        self.reason = reason


class TaskCancelled(Exception):
    """The task was cancelled (``jetpool task cancel``) while its handler ran. A sync handler
    that sees ``task.cancel_requested`` raises this (any exception does) to settle the task
    as cancelled; an async handler is cancelled for it."""


class HandlerLoadError(Exception):
    """The configured handler could not be imported; the worker exits with code 2."""
