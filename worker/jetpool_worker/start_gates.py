"""What a validated task waits for before its handler starts (docs/flow-control.md): a slot of
its key (``spec.keyedConcurrency``), then its key's rate-limit permit (``rateLimit.perKey``),
then the pool's permit (``rateLimit.perSecond``).

The worker loop asks :meth:`StartGates.wait` once per task and acts on the answer: start, or
hand the task back (a busy key, a stopping worker). Waiting keeps the task's worker slot and
heartbeats. A hot key may hold at most half a worker's slots (:func:`may_wait`); beyond that
its tasks go back to the queue, so one key cannot fill every worker and starve the others.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from jetpool_protocol.worker_settings import WorkerSettings
from jetpool_worker.handlers import Handler
from jetpool_worker.key_leases import KeyLeases, Lease, LeasesClosed, key_leases
from jetpool_worker.metrics import Metrics
from jetpool_worker.rate_limit import KeyPermits, PermitsClosed, StartPermits
from jetpool_worker.rate_limit import key_permits as make_key_permits
from jetpool_worker.rate_limit import start_permits as make_start_permits

log = logging.getLogger(__name__)

BUSY_KEY_RETRY_SECONDS = 1.0
"""A task handed back because its key is busy comes back after about this long (±50 %)."""
STOPPING = "the worker is stopping"


def may_wait(waiting: int, concurrency: int) -> bool:
    """PURE: another task of a busy key may wait in a worker only while fewer than half its
    slots (at least one) wait for their keys; beyond, it goes back to the queue."""
    return waiting < max(1, concurrency // 2)


@dataclass(frozen=True, slots=True)
class GoBack:
    """The task goes back to the queue unrun (no attempt used)."""

    why: str
    delay: float | None = None
    """Nak delay; None: the worker's default (just past its own pull requests)."""


class StartGates:
    """The pool's start limits for one worker; inactive (no waiting at all) without them."""

    def __init__(
        self,
        settings: WorkerSettings,
        worker_id: str,
        metrics: Metrics,
        rand: Callable[[], float],
    ) -> None:
        self.concurrency = settings.concurrency
        self._rand = rand
        self.permits: StartPermits | None = make_start_permits(settings)
        self.key_permits: KeyPermits | None = make_key_permits(settings)
        self.leases: KeyLeases | None = key_leases(settings, worker_id)
        for prefix, what, gate in (
            ("jetpool_rate_limit", "a rate-limit permit", self.permits),
            ("jetpool_key_rate_limit", "a rate-limit permit of their key", self.key_permits),
            ("jetpool_key_slot", "a free slot of their key", self.leases),
        ):
            if gate is not None:
                metrics.watch_waits(prefix, what, gate)

    @property
    def active(self) -> bool:
        return any(g is not None for g in (self.permits, self.key_permits, self.leases))

    def check_handler(self, handler: Handler) -> None:
        """A batch holds its tasks' key slots until it ends: two tasks of one key in a batch
        (or two batches each holding the other's key) would wait for each other forever."""
        if handler.is_batch and (self.leases is not None or self.key_permits is not None):
            raise ValueError(
                f"handler {handler.name} is a batch handler: batch handlers cannot be used "
                "with keyedConcurrency or rateLimit.perKey"
            )

    def bind(self, nc: Any, js: Any) -> list[asyncio.Task[None]]:
        """Connect the gates; the background tasks they need (lease renewal)."""
        for permits in (self.permits, self.key_permits):
            if permits is not None:
                permits.bind(nc)
        if self.leases is None:
            return []
        self.leases.bind(js)
        return [asyncio.create_task(self.leases.renew_held())]

    async def wait(self, headers: Mapping[str, str], leases: list[Lease]) -> GoBack | None:
        """Wait until the task may start (None; the key slot it took is added to ``leases``),
        or say why it goes back (then it holds nothing)."""
        go_back = await self._key_slot(headers, leases)
        if go_back is None:
            go_back = await self._key_permit(headers)
        if go_back is None and self.permits is not None:
            try:
                await self.permits.acquire()
            except PermitsClosed:
                go_back = GoBack(STOPPING)
        if go_back is not None:
            self.free(leases)
        return go_back

    def free(self, leases: list[Lease]) -> None:
        if self.leases is not None:
            for lease in leases:
                self.leases.release_soon(lease)
        leases.clear()

    def close(self) -> None:
        """Waiting tasks go back now, not at the end of the grace period."""
        for gate in (self.permits, self.key_permits, self.leases):
            if gate is not None:
                gate.close()

    async def wait_released(self) -> None:
        if self.leases is not None:
            await self.leases.wait_released()

    def _waiting_for_keys(self) -> int:
        return sum(g.waiting for g in (self.leases, self.key_permits) if g is not None)

    def _busy(self, key: str, what: str) -> GoBack | None:
        """None when a task of a busy key may wait here; else send it back for a while."""
        if may_wait(self._waiting_for_keys(), self.concurrency):
            return None
        return GoBack(f"key {key!r} {what}", delay=BUSY_KEY_RETRY_SECONDS * (0.5 + self._rand()))

    async def _key_slot(self, headers: Mapping[str, str], leases: list[Lease]) -> GoBack | None:
        gate = self.leases
        key = None if gate is None else gate.limit.key_of(headers)
        if gate is None or key is None:
            return None
        try:
            lease = await gate.try_take(key)
            busy = lease is None
        except Exception as exc:  # NATS unreachable: wait (a hand-back could not be stored)
            log.debug("could not take a slot of key %r: %s", key, exc)
            lease, busy = None, False
        if lease is None:
            go_back = self._busy(key, "is busy") if busy else None
            if go_back is not None:
                gate.handed_back += 1
                return go_back
            try:
                lease = await gate.take(key)
            except LeasesClosed:
                return GoBack(STOPPING)
        leases.append(lease)
        return None

    async def _key_permit(self, headers: Mapping[str, str]) -> GoBack | None:
        gate = self.key_permits
        key = None if gate is None else gate.key_of(headers)
        if gate is None or key is None:
            return None
        go_back = self._busy(key, "is at its rate limit") if gate.busy(key) else None
        if go_back is not None:
            gate.handed_back += 1
            return go_back
        try:
            await gate.acquire(key)
        except PermitsClosed:
            return GoBack(STOPPING)
        return None
