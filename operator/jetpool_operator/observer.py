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
from collections.abc import Callable
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
    pools that use it."""

    def __init__(
        self,
        connections: NatsConnections,
        wake: Callable[[PoolKey], None],
        period: float = LISTING_PERIOD_SECONDS,
    ) -> None:
        self._connections = connections
        self._wake = wake
        self._period = period
        self._tracked: dict[PoolKey, Tracked] = {}
        self._listings: dict[ConnectionKey, Listing] = {}
        self._seen: dict[PoolKey, PoolStreams] = {}
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
        self._seen.pop(pool, None)
        if tracked is not None:
            pools = self._by_key.get(tracked.key, set())
            pools.discard(pool)
            if not pools:
                self._by_key.pop(tracked.key, None)

    def streams(self, pool: PoolKey, *, newer_than: float = 0.0) -> PoolStreams | None:
        """The pool's streams from a fresh listing made after ``newer_than`` (monotonic), or
        None (not tracked, no such listing)."""
        tracked = self._tracked.get(pool)
        listing = None if tracked is None else self._listings.get(tracked.key)
        if tracked is None or listing is None or listing.at <= newer_than:
            return None
        if time.monotonic() - listing.at > LISTING_MAX_AGE_SECONDS:
            return None
        return pool_streams(listing.streams, tracked.stream, tracked.dead_letters)

    def _pools_on(self, key: ConnectionKey) -> list[tuple[PoolKey, Tracked]]:
        return [(pool, self._tracked[pool]) for pool in self._by_key.get(key, ())]

    async def observe_once(self, key: ConnectionKey) -> None:
        """List the streams on ``key``, then wake the quiescent pools whose streams changed."""
        nc = await self._connections.get(key)
        streams = await list_streams(nc, request_timeout=LISTING_TIMEOUT_SECONDS)
        listing = self._listings[key] = Listing(time.monotonic(), streams)
        for pool, tracked in self._pools_on(key):
            after = pool_streams(listing.streams, tracked.stream, tracked.dead_letters)
            before = self._seen.get(pool)
            self._seen[pool] = after
            if should_wake(before, after):
                self._wake(pool)

    def _listing_failed(self, key: ConnectionKey, why: str) -> None:
        """NATS stopped answering: wake the sleeping pools once, so each asks NATS itself and
        reports why (NatsUnreachable) instead of sleeping through the outage; they stay awake
        (polling their consumers) until listings succeed again."""
        woken = 0
        for pool, _ in self._pools_on(key):
            if self._seen.pop(pool, None) is not None:
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
