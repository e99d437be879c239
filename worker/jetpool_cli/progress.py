"""Progress of bulk work (publish, replay, purge) on stderr, drawn by ``rich.progress``.

On a terminal the line is redrawn in place (with a bar when the total is known); on anything
else (a log file, CI, a pipe) rich draws nothing while the work runs and one final line when it
ends, so logs keep ``published 100/100 (523/s) 0:00:00`` and no carriage-return noise.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
)
from rich.progress import Progress as RichProgress
from rich.text import Text


class RateColumn(ProgressColumn):
    """Items per second since the start, ``(523/s)``: the average the command's summary reports
    (rich's own speed columns are for bytes or use a sliding window)."""

    def render(self, task: Task) -> Text:
        elapsed = task.finished_time if task.finished else task.elapsed
        rate = task.completed / elapsed if elapsed else 0.0
        return Text(f"({rate:.0f}/s)", style="progress.data.speed")


class Progress:
    """``verb done/total (rate/s) elapsed`` on ``stream``, silent when disabled.

    The display starts with the first ``update``, so a command that fails before any work
    shows nothing, and it is redrawn at most every ``interval`` seconds (no refresh thread).
    """

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
        # the stream's own answer, not rich's FORCE_COLOR/TTY_COMPATIBLE: CI logs get one line
        console = Console(file=stream, force_terminal=stream.isatty(), highlight=False)
        columns: list[ProgressColumn] = [TextColumn("{task.description}", markup=False)]
        if total is not None:
            if console.is_terminal:
                columns.append(BarColumn())
            columns.append(MofNCompleteColumn())
        else:
            columns.append(TextColumn("{task.completed:.0f}", markup=False))
        self._bar = RichProgress(
            *columns,
            RateColumn(),
            TimeElapsedColumn(),
            console=console,
            auto_refresh=False,
            # the command's own output keeps going to its own streams, never into the bar
            redirect_stdout=False,
            redirect_stderr=False,
            get_time=clock,
            disable=not enabled,
        )
        self._task = self._bar.add_task(verb, total=total)
        self._last_draw: float | None = None
        self._stop: weakref.finalize[[], Progress] | None = None

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        self._show(done)
        now = self.clock()
        if self._last_draw is None or now - self._last_draw >= self.interval:
            self._last_draw = now
            self._bar.refresh()

    def finish(self, done: int) -> None:
        """Draw the final count and end the line, so later output starts clean."""
        if not self.enabled:
            return
        self._show(done)
        self._bar.stop_task(self._task)
        assert self._stop is not None
        self._stop()

    def _show(self, done: int) -> None:
        self._bar.update(self._task, completed=done)
        if self._stop is None:
            self._bar.live.start()  # the first refresh draws it
            # work cut short (Ctrl-C, an error) still gets its last line and the cursor back
            self._stop = weakref.finalize(self, self._bar.stop)
