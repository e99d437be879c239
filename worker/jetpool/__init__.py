"""The jetpool client library: publish tasks to a WorkerPool and follow them by id.

    from jetpool import Client

See docs/tasks.md. Worker-side APIs live in :mod:`jetpool_worker`.
"""

from jetpool_cli.client import Cancellation, CancelOutcome, Client, TaskHandle
from jetpool_cli.errors import ClientError
from jetpool_cli.publishing import TaskOptions
from jetpool_protocol.task_state import TaskPhase, TaskResult, TaskState

__all__ = [
    "CancelOutcome",
    "Cancellation",
    "Client",
    "ClientError",
    "TaskHandle",
    "TaskOptions",
    "TaskPhase",
    "TaskResult",
    "TaskState",
]
