"""Keyed concurrency (``spec.keyedConcurrency``): at most N running tasks per key, pool-wide.

A task's key is the value of one header (e.g. ``Customer``). Each key has N lease slots in the
pool's lease bucket, ``conc.<key>.<slot>``. A task about to run takes a free slot with a KV
create (compare-and-set on the slot being empty) that carries a per-message TTL; its worker
renews the lease every third of that TTL while the handler runs and deletes it once the task
has settled. nats-server's compare-and-set makes taking a slot atomic across every worker, with
no lock service and no coordinator, and a crashed worker's slots free themselves when their
TTL passes.

A task whose key has no free slot waits in its worker (slot and heartbeats kept) while fewer
than half of the worker's slots wait so; beyond that it goes back to the queue unrun (a
hand-back, no attempt used), so one hot key cannot fill every worker and starve the others.

:class:`KeyLimit` is the pure part; :class:`KeyLeases` the thin I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import nats.js.errors

from jetpool_protocol.task_state import id_key
from jetpool_protocol.worker_settings import WorkerSettings

log = logging.getLogger(__name__)

EXPECTED_LAST_SUBJECT_SEQUENCE = "Nats-Expected-Last-Subject-Sequence"
WRONG_LAST_SEQUENCE = 10071
"""nats-server's error code for a failed expected-last-subject-sequence check."""
SLOT_PREFIX = "conc"
FIRST_RETRY_SECONDS = 0.02
LAST_RETRY_SECONDS = 0.25
"""A waiting task tries its key's slots again after 20 ms, backing off to 250 ms (a slot this
worker frees wakes its own waiters at once)."""


class LeasesClosed(Exception):
    """The worker is stopping: a task still waiting for its key goes back."""


@dataclass(frozen=True, slots=True)
class KeyLimit:
    """PURE: the slots of a key and when a task may wait for one."""

    header: str
    max_running: int
    lease_seconds: float

    def key_of(self, headers: Mapping[str, str]) -> str | None:
        """The task's key; None (not limited) without the header."""
        value = headers.get(self.header)
        return value if value else None

    def slots(self, key: str) -> list[str]:
        token = id_key(key)
        return [f"{SLOT_PREFIX}.{token}.{i}" for i in range(self.max_running)]

    @property
    def renew_every_seconds(self) -> float:
        return self.lease_seconds / 3

    @staticmethod
    def next_retry(previous: float) -> float:
        return min(LAST_RETRY_SECONDS, max(FIRST_RETRY_SECONDS, previous * 1.5))


@dataclass(slots=True, eq=False)
class Lease:
    key: str
    slot: str
    revision: int
    token: bytes
    """This lease's value (worker id and a random part): a slot read back after a lost reply
    tells whether it is still ours."""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    """Held while the lease is renewed or freed: the two never race on its revision."""


class KeyLeases:
    """Takes, renews and frees the slots of this worker's running tasks."""

    def __init__(
        self,
        bucket: str,
        limit: KeyLimit,
        worker_id: str,
        *,
        shuffle: Callable[[list[str]], None] = random.shuffle,
    ) -> None:
        self.bucket = bucket
        self.limit = limit
        self.worker_id = worker_id
        self._shuffle = shuffle
        self._js: Any = None
        self._kv: Any = None
        self._held: set[Lease] = set()
        self._freed: dict[str, asyncio.Event] = {}
        """Per key with tasks waiting here: set when this worker frees one of its slots."""
        self._waiters_of: dict[str, int] = {}
        self._releasing: set[asyncio.Task[None]] = set()
        self._closed = False
        self.waiting = 0
        self.waited_seconds = 0.0
        self.handed_back = 0
        self.lost = 0
        """Leases found taken over at renewal (the worker stalled past the lease TTL)."""

    def bind(self, js: Any) -> None:
        self._js = js
        self._kv = None

    async def _bucket(self) -> Any:
        if self._kv is None:
            self._kv = await self._js.key_value(self.bucket)
        return self._kv

    async def try_take(self, key: str) -> Lease | None:
        """One pass over the key's slots, in random order; None when all are taken."""
        kv = await self._bucket()
        slots = self.limit.slots(key)
        self._shuffle(slots)
        for slot in slots:
            token = f"{self.worker_id}/{secrets.token_hex(4)}".encode()
            try:
                revision = await kv.create(slot, token, msg_ttl=self.limit.lease_seconds)
            except nats.js.errors.KeyWrongLastSequenceError:
                continue
            lease = Lease(key, slot, revision, token)
            self._held.add(lease)
            return lease
        return None

    async def take(self, key: str) -> Lease:
        """Wait for a slot of ``key``; :class:`LeasesClosed` when the worker stops. Failures
        to reach NATS keep the task waiting (fails closed)."""
        self.waiting += 1
        self._waiters_of[key] = self._waiters_of.get(key, 0) + 1
        freed = self._freed.setdefault(key, asyncio.Event())
        started = time.monotonic()
        pause = 0.0
        try:
            while not self._closed:
                freed.clear()
                try:
                    lease = await self.try_take(key)
                except Exception as exc:
                    log.warning("could not take a slot of key %r: %s", key, exc)
                    lease = None
                if lease is not None:
                    return lease
                pause = self.limit.next_retry(pause)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(freed.wait(), pause)
            raise LeasesClosed
        finally:
            self.waiting -= 1
            self.waited_seconds += time.monotonic() - started
            self._waiters_of[key] -= 1
            if not self._waiters_of[key]:
                del self._waiters_of[key], self._freed[key]

    def release_soon(self, lease: Lease) -> None:
        """Free the slot (in the background: called from a task's last, synchronous step)."""
        self._held.discard(lease)
        task = asyncio.get_running_loop().create_task(self._release(lease))
        self._releasing.add(task)
        task.add_done_callback(self._releasing.discard)

    async def _release(self, lease: Lease) -> None:
        async with lease.lock:
            try:
                kv = await self._bucket()
                try:
                    await kv.delete(lease.slot, last=lease.revision)
                except nats.js.errors.KeyWrongLastSequenceError:
                    if await self._still_ours(lease):  # a renewal's lost reply moved it on
                        await kv.delete(lease.slot, last=lease.revision)
            except Exception as exc:  # it frees itself when its TTL passes
                log.debug("could not free slot %s: %s", lease.slot, exc)
        freed = self._freed.get(lease.key)
        if freed is not None:
            freed.set()

    async def renew_held(self) -> None:
        """Every third of the lease TTL, extend the leases of the running tasks."""
        while True:
            await asyncio.sleep(self.limit.renew_every_seconds)
            for lease in list(self._held):
                await self._renew(lease)

    async def _renew(self, lease: Lease) -> None:
        async with lease.lock:
            if lease not in self._held:  # freed meanwhile
                return
            try:
                ack = await self._js.publish(
                    f"$KV.{self.bucket}.{lease.slot}",
                    lease.token,
                    headers={EXPECTED_LAST_SUBJECT_SEQUENCE: str(lease.revision)},
                    msg_ttl=self.limit.lease_seconds,
                )
            except (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.APIError) as exc:
                wrong_sequence = isinstance(exc, nats.js.errors.KeyWrongLastSequenceError) or (
                    exc.err_code == WRONG_LAST_SEQUENCE
                )
                if not wrong_sequence:
                    log.warning("could not renew slot %s: %s", lease.slot, exc)
                elif not await self._still_ours(lease):
                    self._lose(lease)
            except Exception as exc:
                log.warning("could not renew slot %s: %s", lease.slot, exc)
            else:
                lease.revision = ack.seq

    async def _still_ours(self, lease: Lease) -> bool:
        """After a wrong-sequence answer: whether the slot still holds our token (an earlier
        write of ours whose reply was lost); then its revision is ours to use."""
        try:
            entry = await (await self._bucket()).get(lease.slot)
        except Exception:
            return False
        if entry.value != lease.token:
            return False
        lease.revision = entry.revision
        return True

    def _lose(self, lease: Lease) -> None:
        self.lost += 1
        self._held.discard(lease)
        log.warning(
            "the lease of slot %s (key %r) expired while its task ran: the key may run more "
            "than %d tasks until it ends",
            lease.slot,
            lease.key,
            self.limit.max_running,
        )

    def close(self) -> None:
        """Waiting tasks go back; running ones keep their leases until they settle."""
        self._closed = True
        for freed in self._freed.values():
            freed.set()

    async def wait_released(self) -> None:
        if self._releasing:
            await asyncio.gather(*self._releasing, return_exceptions=True)


def key_leases(settings: WorkerSettings, worker_id: str) -> KeyLeases | None:
    """The worker's leases when its pool limits tasks per key."""
    if settings.key_lease_bucket is None or settings.key_header is None:
        return None
    limit = KeyLimit(settings.key_header, settings.key_max_running, settings.key_lease_seconds)
    return KeyLeases(settings.key_lease_bucket, limit, worker_id)
