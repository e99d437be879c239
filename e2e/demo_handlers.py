"""The demo's task handler: sleeps ``ms`` milliseconds, fails while the demo's switch is on.

Synchronous on purpose: the worker runs sync handlers in threads, as most real handlers are.
"""

from __future__ import annotations

import os
import time

from jetpool_protocol.envelope import Task


class DemoFailure(RuntimeError):
    """Raised while the demo's failure switch file exists."""


def work(task: Task) -> None:
    switch = os.environ.get("JETPOOL_DEMO_FAIL_FILE")
    if switch and os.path.exists(switch):
        raise DemoFailure(f"failure switched on for {task.id}")
    body = task.json() if task.payload else {}
    time.sleep(float(body.get("ms", 0)) / 1000 if isinstance(body, dict) else 0)
