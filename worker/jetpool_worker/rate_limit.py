"""The pool-wide rate limit (``spec.rateLimit``): task starts counted in shared time windows.

Time is cut into windows of ``burst / perSecond`` seconds (wall clock, so every pod agrees),
each allowing ``burst`` starts across the whole pool. A delivered task waits here, holding its
slot and its ack-wait heartbeats, until its worker gets a start permit. A worker asks for all
its waiting tasks at once by adding their number to the window's counter subject, a
nats-server counter (``Nats-Incr``, server 2.12+): the increment is atomic on the stream, so
the permits granted in a window sum to at most ``burst`` whatever the replica count, and
scaling needs no coordination. Over any interval T at most ``perSecond * T + 2 * burst`` tasks
start; a pool with a backlog starts ``burst`` per window.

:class:`WindowLimit` is the pure arithmetic; :class:`StartPermits` the thin I/O. When NATS
cannot be asked the worker starts nothing (fails closed): tasks wait, none is dropped.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from jetpool_protocol.task_state import id_key
from jetpool_protocol.worker_settings import WorkerSettings

log = logging.getLogger(__name__)

INCREMENT_HEADER = "Nats-Incr"
REQUEST_TIMEOUT_SECONDS = 2.0
RETRY_SECONDS = 0.5
"""After a failed count (NATS unreachable), ask again this much later at most."""
JITTER_FRACTION = 0.2
JITTER_MAX_SECONDS = 0.05
"""Workers waiting for the next window ask at a random point of its first fifth (at most
50 ms): whichever worker asks first gets the window's permits, so the first asker must not be
the same pod (the one whose clock runs ahead) window after window."""


class PermitsClosed(Exception):
    """The worker is stopping: a task still waiting for its start permit goes back."""


@dataclass(frozen=True, slots=True)
class WindowLimit:
    """PURE: ``burst`` starts per window of ``burst / per_second`` seconds."""

    per_second: float
    burst: int

    @property
    def window_seconds(self) -> float:
        return self.burst / self.per_second

    def window(self, now: float) -> int:
        """The index of the window ``now`` (epoch seconds) falls in."""
        return math.floor(now / self.window_seconds)

    def window_ends_at(self, window: int) -> float:
        return (window + 1) * self.window_seconds

    def granted(self, asked: int, total: int) -> int:
        """Permits for a request of ``asked`` that brought the window's count to ``total``:
        what is left of the burst before this request, up to what it asked."""
        return max(0, min(asked, self.burst - (total - asked)))


class StartPermits:
    """A worker's tasks wait in :meth:`acquire`; :meth:`_grant` asks the window's counter for
    all of them at once (about one request per window while tasks wait, more when tasks keep
    arriving within a window that still has permits; none while idle)."""

    def __init__(
        self,
        subject_prefix: str,
        limit: WindowLimit,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.subject_prefix = subject_prefix
        self.limit = limit
        self._clock = clock
        self._nc: Any = None
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._runner: asyncio.Task[None] | None = None
        self._closed = False
        self.waited_seconds = 0.0
        """Total time tasks spent waiting for a permit (a counter for metrics)."""
        self.handed_back = 0
        """Waiting tasks a stopping worker sent back."""
        self.count_failures = 0

    def bind(self, nc: Any) -> None:
        self._nc = nc

    @property
    def waiting(self) -> int:
        return sum(1 for f in self._waiters if not f.done())

    async def acquire(self) -> None:
        """Return once this task may start; :class:`PermitsClosed` when the worker stops."""
        if self._closed:
            raise PermitsClosed
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiters.append(waiter)
        if self._runner is None or self._runner.done():
            self._runner = loop.create_task(self._grant())
        started = time.monotonic()
        try:
            await waiter
        finally:
            self.waited_seconds += time.monotonic() - started

    def close(self) -> None:
        """Send every waiting task back (the worker is stopping) and refuse new ones."""
        self._closed = True
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.handed_back += 1
                waiter.set_exception(PermitsClosed())
        if self._runner is not None:
            self._runner.cancel()

    @property
    def idle(self) -> bool:
        return not self._waiters and (self._runner is None or self._runner.done())

    async def _grant(self) -> None:
        """Grant permits while tasks wait (started by the first waiter, ends with the last)."""
        while not self._closed:
            self._drop_abandoned()
            if not self._waiters:
                return
            window = self.limit.window(self._clock())
            asked = self.waiting
            try:
                total = await self._count(window, asked)
            except Exception as exc:  # fail closed: nothing starts until NATS answers
                self.count_failures += 1
                log.warning("could not count task starts for the rate limit: %s", exc)
                await asyncio.sleep(min(RETRY_SECONDS, self._until_next(window)))
                continue
            granted = self.limit.granted(asked, total)
            self._release(granted)
            if granted < asked:  # this window is spent: wait for the next one
                jitter = min(JITTER_FRACTION * self.limit.window_seconds, JITTER_MAX_SECONDS)
                await asyncio.sleep(self._until_next(window) + random.uniform(0, jitter))

    def _until_next(self, window: int) -> float:
        return max(0.0, self.limit.window_ends_at(window) - self._clock())

    def _drop_abandoned(self) -> None:
        while self._waiters and self._waiters[0].done():
            self._waiters.popleft()

    def _release(self, granted: int) -> None:
        """The oldest waiters start; a waiter abandoned meanwhile passes its permit on."""
        while granted > 0 and self._waiters:
            waiter = self._waiters.popleft()
            if waiter.done():
                continue
            waiter.set_result(None)
            granted -= 1

    async def _count(self, window: int, asked: int) -> int:
        """Add ``asked`` to the window's counter; the window's total after it."""
        answer = await self._nc.request(
            f"{self.subject_prefix}.{window}",
            b"",
            timeout=REQUEST_TIMEOUT_SECONDS,
            headers={INCREMENT_HEADER: f"+{asked}"},
        )
        body = json.loads(answer.data or b"{}")
        if "error" in body:
            error = body["error"]
            raise RuntimeError(error.get("description") or str(error))
        return int(body["val"])


class KeyPermits:
    """Per-key rate limits (``spec.rateLimit.perKey``): the same windows, counted for each key
    on ``<prefix>.key.<key>.<window>``; one :class:`StartPermits` per key with waiting tasks."""

    def __init__(self, subject_prefix: str, header: str, limit: WindowLimit) -> None:
        self.subject_prefix = subject_prefix
        self.header = header
        self.limit = limit
        self._nc: Any = None
        self._by_key: dict[str, StartPermits] = {}
        self._closed = False
        self.waited_seconds = 0.0
        self.handed_back = 0
        """Tasks sent back to the queue because their key's limit was spent (or on stop)."""

    def bind(self, nc: Any) -> None:
        self._nc = nc

    def key_of(self, headers: Mapping[str, str]) -> str | None:
        value = headers.get(self.header)
        return value if value else None

    @property
    def waiting(self) -> int:
        return sum(p.waiting for p in self._by_key.values())

    def busy(self, key: str) -> bool:
        """Whether tasks of ``key`` already wait here for its next window."""
        permits = self._by_key.get(key)
        return permits is not None and permits.waiting > 0

    async def acquire(self, key: str) -> None:
        """Return once this task of ``key`` may start; :class:`PermitsClosed` on stop."""
        if self._closed:
            raise PermitsClosed
        permits = self._by_key.get(key)
        if permits is None:
            permits = StartPermits(f"{self.subject_prefix}.key.{id_key(key)}", self.limit)
            permits.bind(self._nc)
            self._by_key[key] = permits
        started = time.monotonic()
        try:
            await permits.acquire()
        finally:
            self.waited_seconds += time.monotonic() - started
            for idle in [k for k, p in self._by_key.items() if p.idle]:
                del self._by_key[idle]

    def close(self) -> None:
        self._closed = True
        for permits in self._by_key.values():
            permits.close()


def start_permits(settings: WorkerSettings) -> StartPermits | None:
    """The worker's permits when its pool has a pool-wide rate limit."""
    prefix, rate, burst = (
        settings.rate_limit_subject_prefix,
        settings.rate_limit_per_second,
        settings.rate_limit_burst,
    )
    if prefix is None or rate is None or burst is None:
        return None
    return StartPermits(prefix, WindowLimit(per_second=rate, burst=burst))


def key_permits(settings: WorkerSettings) -> KeyPermits | None:
    """The worker's per-key permits when its pool limits each key's rate."""
    prefix, header = settings.rate_limit_subject_prefix, settings.rate_limit_key_header
    rate, burst = settings.rate_limit_key_per_second, settings.rate_limit_key_burst
    if prefix is None or header is None or rate is None or burst is None:
        return None
    return KeyPermits(prefix, header, WindowLimit(per_second=rate, burst=burst))
