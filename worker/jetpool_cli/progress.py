"""A rate-limited progress line on stderr for bulk work (publish, replay, purge)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO


class Progress:
    """Rewrites one ``\\r`` line at most every ``interval`` seconds; silent when disabled."""

    def __init__(
        self,
        verb: str,
        stream: TextIO,
        *,
        enabled: bool,
        total: int | None = None,
        interval: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.verb = verb
        self.stream = stream
        self.enabled = enabled
        self.total = total
        self.interval = interval
        self.clock = clock
        self.started = clock()
        self._last_draw: float | None = None
        self._drawn = False

    def line(self, done: int) -> str:
        elapsed = max(self.clock() - self.started, 1e-9)
        rate = done / elapsed
        count = f"{done}/{self.total}" if self.total is not None else f"{done}"
        return f"{self.verb} {count} ({rate:.0f}/s)"

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        now = self.clock()
        if self._last_draw is not None and now - self._last_draw < self.interval:
            return
        self._last_draw = now
        self.stream.write("\r" + self.line(done) + "\x1b[K")
        self.stream.flush()
        self._drawn = True

    def finish(self, done: int) -> None:
        """Draw the final count and end the line, so later output starts clean."""
        if not self.enabled:
            return
        self.stream.write("\r" + self.line(done) + "\x1b[K\n")
        self.stream.flush()
        self._drawn = False
