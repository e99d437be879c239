"""Example handlers that ship with the worker image, for smoke tests and first steps.

handler: jetpool_worker.examples:echo
"""

from __future__ import annotations

import logging

from jetpool_protocol.envelope import Task

log = logging.getLogger(__name__)


async def echo(task: Task) -> None:
    """Log the task and succeed: proves publishing, delivery and acking end to end."""
    log.info(
        "task %s on %s (attempt %d, %d bytes)",
        task.id,
        task.subject,
        task.attempt,
        len(task.payload),
        extra={"task_id": task.id, "subject": task.subject},
    )
