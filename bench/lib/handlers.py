"""The handlers of the benchmarks, for jetpool workers (``bench.lib.handlers:work``) and for the
bare nats-py baseline (:func:`load`) alike.

What a task does is the last token of its subject, so the hot path parses nothing:

* ``noop``: nothing; ``cpu``: a 1 ms busy loop on the event loop; ``io``: ``asyncio.sleep``
  of 50 ms (a remote call);
* ``hang``: the first attempt sleeps an hour (a worker is killed under it), redeliveries
  return at once;
* ``dep``: calls a dependency that fails while the file ``BENCH_FAIL_FLAG`` exists.

With ``BENCH_LEDGER`` set, every task start, task done and dependency call is appended to that
file (``event task_id attempt unix_time pid`` per line, flushed at once, so it survives a
SIGKILL of the worker); ``{pid}`` in the name gives each process a file of its own.

Imports nothing heavy: the baseline process's memory is measured.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from jetpool_worker import Task

CPU_SECONDS = 0.001
IO_SECONDS = 0.05
LOADS = ("noop", "cpu", "io")
LEDGER_ENV = "BENCH_LEDGER"
FAIL_FLAG_ENV = "BENCH_FAIL_FLAG"


def busy(seconds: float) -> None:
    """Burn CPU (not sleep) for ``seconds`` of wall time."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


async def load(kind: str) -> None:
    """One task of the named load: the same code for the worker and for the baseline."""
    if kind == "cpu":
        busy(CPU_SECONDS)
    elif kind == "io":
        await asyncio.sleep(IO_SECONDS)


class DependencyDown(Exception):
    """The benchmark's dependency is failing."""


class Ledger:
    """Append-only event file of one process (see the module docstring)."""

    def __init__(self, path: str | None) -> None:
        name = path.replace("{pid}", str(os.getpid())) if path else None
        self._file: IO[str] | None = open(name, "a") if name else None  # noqa: SIM115

    def write(self, event: str, task_id: str, attempt: int) -> None:
        if self._file is not None:
            self._file.write(f"{event} {task_id} {attempt} {time.time():.6f} {os.getpid()}\n")
            self._file.flush()


@dataclass(frozen=True)
class Entry:
    event: str
    task_id: str
    attempt: int
    at: float
    pid: int


def read_ledger(path: Path) -> list[Entry]:
    """Every complete line of a ledger, or of every process's ledger when the name holds
    ``{pid}``, in time order (a line cut by a SIGKILL is skipped)."""
    files = (
        sorted(path.parent.glob(path.name.replace("{pid}", "*"))) if path.parent.exists() else []
    )
    entries = []
    for file in files:
        for line in file.read_text().splitlines():
            fields = line.split()
            if len(fields) == 5:
                event, task_id, attempt, at, pid = fields
                entries.append(Entry(event, task_id, int(attempt), float(at), int(pid)))
    return sorted(entries, key=lambda e: e.at)


LEDGER = Ledger(os.environ.get(LEDGER_ENV))
FAIL_FLAG = os.environ.get(FAIL_FLAG_ENV, "")


def dependency(task_id: str, attempt: int) -> None:
    """The downstream service: every call is counted; it fails while the flag file exists."""
    failing = bool(FAIL_FLAG) and os.path.exists(FAIL_FLAG)
    LEDGER.write("fail" if failing else "call", task_id, attempt)
    if failing:
        raise DependencyDown("dependency is down")


async def work(task: Task) -> None:
    """The jetpool handler of every benchmark (``JETPOOL_HANDLER=bench.lib.handlers:work``)."""
    kind = task.subject.rpartition(".")[2]
    LEDGER.write("start", task.id, task.attempt)
    if kind == "hang":
        if task.attempt == 1:
            await asyncio.sleep(3600)
    elif kind == "dep":
        dependency(task.id, task.attempt)
    else:
        await load(kind)
    LEDGER.write("done", task.id, task.attempt)
