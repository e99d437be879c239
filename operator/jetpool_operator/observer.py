"""Batched observation: one stream listing per NATS connection per second, for every pool.

The control loops read their pools' stream states from here instead of asking NATS each
(:mod:`jetpool_operator.core.observation` says what a listing can stand in for), and a loop
sleeping because its pool is quiescent is woken when the listing shows its streams changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from nats.errors import Error as NatsError

from jetpool_operator.adapters.nats import ConnectionKey, NatsConnections
from jetpool_operator.adapters.stream_listing import ListingError, list_streams
from jetpool_operator.core.observation import (
    LISTING_MAX_AGE_SECONDS,
    LISTING_PERIOD_SECONDS,
    PoolStreams,
    StreamState,
    pool_streams,
    should_wake,
)

log = logging.getLogger(__name__)

PoolKey = tuple[str, str]
Lister = Callable[[ConnectionKey], Awaitable[dict[str, StreamState]]]
LISTING_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class Tracked:
    key: ConnectionKey
    stream: str
    dead_letters: str


@dataclass(frozen=True, slots=True)
class Listing:
    at: float
    """Monotonic time the listing was complete."""
    streams: dict[str, StreamState]


class StreamObserver:
    """One listing loop per NATS connection: a slow or unreachable server delays only the
    pools that use it.

    A pool is woken when a listing differs from the one its loop last *read* (not from the
    previous listing): a pool may go to sleep on any listing it read, and whatever happened
    since, even across failed listings, is a difference from that."""

    def __init__(
        self,
        connections: NatsConnections,
        wake: Callable[[PoolKey], None],
        period: float = LISTING_PERIOD_SECONDS,
        lister: Lister | None = None,
    ) -> None:
        self._connections = connections
        self._wake = wake
        self._period = period
        self._list = lister or self._list_streams
        self._tracked: dict[PoolKey, Tracked] = {}
        self._listings: dict[ConnectionKey, Listing] = {}
        self._read: dict[PoolKey, PoolStreams] = {}
        """What each pool's loop last read: the view a quiescent pool sleeps on."""
        self._by_key: dict[ConnectionKey, set[PoolKey]] = {}
        self._loops: dict[ConnectionKey, asyncio.Task[None]] = {}

    def track(self, pool: PoolKey, key: ConnectionKey, stream: str, dead_letters: str) -> None:
        """Observe ``pool``'s streams on ``key`` from now on (idempotent; starts its loop)."""
        tracked = Tracked(key, stream, dead_letters)
        if self._tracked.get(pool) != tracked:
            self.untrack(pool)
            self._tracked[pool] = tracked
            self._by_key.setdefault(key, set()).add(pool)
        loop = self._loops.get(key)
        if loop is None or loop.done():
            self._loops[key] = asyncio.get_running_loop().create_task(
                self._run(key), name=f"observe {key.url}"
            )

    def untrack(self, pool: PoolKey) -> None:
        tracked = self._tracked.pop(pool, None)
        self._read.pop(pool, None)
        if tracked is not None:
            pools = self._by_key.get(tracked.key, set())
            pools.discard(pool)
            if not pools:
                self._by_key.pop(tracked.key, None)

    def streams(self, pool: PoolKey, *, newer_than: float = 0.0) -> PoolStreams | None:
        """The pool's streams from a fresh listing made after ``newer_than`` (monotonic), or
        None (not tracked, no such listing). What is returned counts as read: later listings
        that differ from it wake the pool."""
        tracked = self._tracked.get(pool)
        listing = None if tracked is None else self._listings.get(tracked.key)
        if tracked is None or listing is None or listing.at <= newer_than:
            return None
        if time.monotonic() - listing.at > LISTING_MAX_AGE_SECONDS:
            return None
        read = self._read[pool] = pool_streams(
            listing.streams, tracked.stream, tracked.dead_letters
        )
        return read

    def _pools_on(self, key: ConnectionKey) -> list[tuple[PoolKey, Tracked]]:
        return [(pool, self._tracked[pool]) for pool in self._by_key.get(key, ())]

    async def _list_streams(self, key: ConnectionKey) -> dict[str, StreamState]:
        nc = await self._connections.get(key)
        return await list_streams(nc, request_timeout=LISTING_TIMEOUT_SECONDS)

    async def observe_once(self, key: ConnectionKey) -> None:
        """List the streams on ``key``, then wake the pools whose streams differ from what
        they last read."""
        listing = self._listings[key] = Listing(time.monotonic(), await self._list(key))
        for pool, tracked in self._pools_on(key):
            after = pool_streams(listing.streams, tracked.stream, tracked.dead_letters)
            if should_wake(self._read.get(pool), after):
                self._wake(pool)

    def _listing_failed(self, key: ConnectionKey, why: str) -> None:
        """NATS stopped answering: forget the last listing and wake the pools once, so each
        asks NATS itself and reports why (NatsUnreachable) instead of sleeping through the
        outage; they stay awake (polling their consumers) until a listing succeeds again."""
        if self._listings.pop(key, None) is None:
            return  # woken at the first failure already
        woken = 0
        for pool, _ in self._pools_on(key):
            self._wake(pool)
            woken += 1
        if woken:
            log.warning(
                "listing streams on %s failed (%s): %d pool(s) poll their consumers until it "
                "works again",
                key.url,
                why,
                woken,
            )

    async def _run(self, key: ConnectionKey) -> None:
        try:
            while self._pools_on(key):
                started = time.monotonic()
                try:
                    await self.observe_once(key)
                except (NatsError, OSError, TimeoutError, ListingError) as exc:
                    self._listing_failed(key, f"{type(exc).__name__}: {exc}")
                except Exception as exc:  # the loop must outlive any one bad answer
                    log.exception("stream observation on %s failed", key.url)
                    self._listing_failed(key, f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(max(0.0, self._period - (time.monotonic() - started)))
        finally:
            self._listings.pop(key, None)
            if self._loops.get(key) is asyncio.current_task():
                del self._loops[key]

    async def close(self) -> None:
        loops = list(self._loops.values())
        for loop in loops:
            loop.cancel()
        for loop in loops:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await loop
        self._loops.clear()
