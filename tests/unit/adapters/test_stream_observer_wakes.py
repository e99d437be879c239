"""Whom the batched observer wakes, with listings scripted one by one (no server: the order of
listings, failures and reads is what matters here; tests/adapters runs it on a real one)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from jetpool_operator.adapters.nats import ConnectionKey, NatsConnections
from jetpool_operator.core.observation import PoolStreams, StreamState
from jetpool_operator.observer import StreamObserver

POOL = ("team-a", "orders")
KEY = ConnectionKey("nats://nats.example:4222")
EMPTY = {
    "orders": StreamState(messages=0, last_sequence=7, consumers=1),
    "orders-dlq": StreamState(messages=0, last_sequence=0, consumers=0),
}
BURST = {**EMPTY, "orders": StreamState(messages=300, last_sequence=307, consumers=1)}


class ScriptedNats:
    """Answers each listing with the next scripted result (a listing or an exception)."""

    def __init__(self) -> None:
        self.answers: asyncio.Queue[dict[str, StreamState] | Exception] = asyncio.Queue()
        self.listed = asyncio.Event()

    async def list(self, key: ConnectionKey) -> dict[str, StreamState]:
        answer = await self.answers.get()
        self.listed.set()
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def answer(self, result: dict[str, StreamState] | Exception) -> None:
        """Let one listing complete, and the observer act on it: it wakes pools (or drops
        the listing) without awaiting anything after the answer, so by the time this test
        runs again the observer is back asleep in its period."""
        self.listed.clear()
        await self.answers.put(result)
        await self.listed.wait()


@pytest.fixture
async def scripted() -> AsyncIterator[tuple[StreamObserver, ScriptedNats, list[tuple[str, str]]]]:
    nats = ScriptedNats()
    woken: list[tuple[str, str]] = []
    observer = StreamObserver(NatsConnections(lambda *_: None), woken.append, 0.0, nats.list)
    observer.track(POOL, KEY, "orders", "orders-dlq")
    yield observer, nats, woken
    await observer.close()


def read(observer: StreamObserver) -> PoolStreams | None:
    """What the pool's loop does each tick before it decides whether to sleep."""
    return observer.streams(POOL)


class TestWhoIsWoken:
    async def test_a_pool_asleep_on_an_empty_stream_is_woken_by_the_first_task(
        self, scripted: tuple[StreamObserver, ScriptedNats, list[tuple[str, str]]]
    ) -> None:
        observer, nats, woken = scripted
        await nats.answer(EMPTY)
        assert read(observer) == PoolStreams(EMPTY["orders"], EMPTY["orders-dlq"])
        await nats.answer(EMPTY)
        assert woken == []
        await nats.answer(BURST)
        assert woken == [POOL]

    async def test_a_burst_that_arrived_while_listings_failed_still_wakes_the_pool(
        self, scripted: tuple[StreamObserver, ScriptedNats, list[tuple[str, str]]]
    ) -> None:
        # The pool read an empty stream and went to sleep; a listing then failed (NATS
        # reconnecting) and the burst came before the next one succeeded. Taking that next
        # listing as a fresh baseline would leave the pool asleep on 300 tasks.
        observer, nats, woken = scripted
        await nats.answer(EMPTY)
        read(observer)
        await nats.answer(ConnectionError("reconnecting to nats://nats.example:4222"))
        assert woken == [POOL], "an outage wakes the pool, so it asks NATS itself"
        assert read(observer) is None, "a listing from before the failure is not trusted"
        await nats.answer(BURST)
        assert woken == [POOL, POOL]

    async def test_failed_listings_wake_a_pool_once_not_every_second(
        self, scripted: tuple[StreamObserver, ScriptedNats, list[tuple[str, str]]]
    ) -> None:
        observer, nats, woken = scripted
        await nats.answer(EMPTY)
        read(observer)
        for _ in range(3):
            await nats.answer(TimeoutError())
        assert woken == [POOL]

    async def test_a_pool_that_read_the_change_is_not_woken_again_by_it(
        self, scripted: tuple[StreamObserver, ScriptedNats, list[tuple[str, str]]]
    ) -> None:
        observer, nats, woken = scripted
        await nats.answer(EMPTY)
        read(observer)
        await nats.answer(BURST)
        read(observer)
        await nats.answer(BURST)
        assert woken == [POOL]
