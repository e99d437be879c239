"""Batched observation on a real nats-server: the paged listing, and who it wakes."""

from __future__ import annotations

import asyncio
import time

import nats
import pytest

from e2e.testbed.nats_server import NatsServer
from e2e.testbed.processes import free_port
from jetpool_operator.adapters.nats import ConnectionKey, NatsConnections
from jetpool_operator.adapters.stream_listing import list_streams
from jetpool_operator.observer import StreamObserver

pytestmark = pytest.mark.nats


async def test_the_listing_pages_through_more_streams_than_one_answer_holds(
    private_nats_server: NatsServer,
) -> None:
    nc = await nats.connect(private_nats_server.url)
    js = nc.jetstream()
    try:
        for i in range(300):  # the server answers 256 a page
            await js.add_stream(name=f"s{i}", subjects=[f"s.{i}"], storage="memory")
        for _ in range(3):
            await js.publish("s.299", b"x")
        listing = await list_streams(nc, request_timeout=5)
        assert len(listing) == 300
        assert listing["s299"].messages == 3
        assert listing["s299"].last_sequence == 3
        assert listing["s0"].messages == 0
    finally:
        await nc.close()


async def test_a_sleeping_pool_is_woken_by_its_first_task_even_beside_a_dead_server(
    private_nats_server: NatsServer,
) -> None:
    server = private_nats_server
    woken: dict[tuple[str, str], float] = {}
    connections = NatsConnections(lambda *_: None)
    observer = StreamObserver(connections, lambda pool: woken.setdefault(pool, time.monotonic()))
    nc = await nats.connect(server.url)
    js = nc.jetstream()
    try:
        await js.add_stream(name="orders", subjects=["tasks.a.orders.>"], storage="memory")
        await js.add_stream(name="orders-dlq", subjects=["dlq.a.orders.>"], storage="memory")
        # A pool whose NATS never answers must not hold up the others' listings.
        dead = ConnectionKey(f"nats://127.0.0.1:{free_port()}")
        observer.track(("b", "lost"), dead, "lost", "lost-dlq")
        observer.track(("a", "orders"), ConnectionKey(server.url), "orders", "orders-dlq")
        deadline = time.monotonic() + 10
        while observer.streams(("a", "orders")) is None:
            assert time.monotonic() < deadline, "no listing of the live server"
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.5)
        assert woken == {}, "nothing changed: nobody is woken"

        published = time.monotonic()
        await js.publish("tasks.a.orders.x", b"first task")
        while ("a", "orders") not in woken:
            assert time.monotonic() < published + 5, "the first task woke nobody"
            await asyncio.sleep(0.05)
        assert woken[("a", "orders")] - published < 2.5
        streams = observer.streams(("a", "orders"))
        assert streams is not None
        assert streams.tasks is not None
        assert streams.tasks.messages == 1
        assert ("b", "lost") not in woken
        assert observer.streams(("b", "lost")) is None
    finally:
        await observer.close()
        await connections.close()
        await nc.close()


async def test_sleeping_pools_are_woken_once_when_their_nats_stops_answering(
    private_nats_server: NatsServer,
) -> None:
    server = private_nats_server
    wakes: list[tuple[str, str]] = []
    connections = NatsConnections(lambda *_: None)
    observer = StreamObserver(connections, wakes.append)
    try:
        observer.track(("a", "orders"), ConnectionKey(server.url), "orders", "orders-dlq")
        deadline = time.monotonic() + 10
        while observer.streams(("a", "orders")) is None:
            assert time.monotonic() < deadline, "no listing"
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.5)  # a second listing saw the same: nobody woken
        assert wakes == []

        server.stop()
        deadline = time.monotonic() + 15
        while not wakes:
            assert time.monotonic() < deadline, "the outage woke nobody"
            await asyncio.sleep(0.1)
        await asyncio.sleep(3)  # more failed listings
        assert wakes == [("a", "orders")], "woken once, not on every failed listing"
        assert observer.streams(("a", "orders")) is None
    finally:
        await observer.close()
        await connections.close()
