"""The jetpool worker runtime: pulls tasks from JetStream and runs the pool's handler.

Handlers import only what they need from here::

    from jetpool_worker import Reject, Retry, TaskCancelled, batch_handler
"""

from jetpool_protocol.envelope import Task
from jetpool_worker.errors import Reject, Retry, TaskCancelled
from jetpool_worker.handlers import batch_handler

__all__ = ["Reject", "Retry", "Task", "TaskCancelled", "batch_handler"]
