"""The nats-server the tests start is a real JetStream server."""

from __future__ import annotations

import asyncio

import pytest
from nats.aio.client import Client as NATS
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig

pytestmark = pytest.mark.nats


async def test_a_thousand_messages_are_pull_consumed_and_acked(nc: NATS) -> None:
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name="TESTBED_PROOF", subjects=["proof.>"]))
    await asyncio.gather(*(js.publish(f"proof.{i % 7}", str(i).encode()) for i in range(1000)))
    await js.add_consumer(
        "TESTBED_PROOF", ConsumerConfig(durable_name="proof", ack_policy=AckPolicy.EXPLICIT)
    )
    sub = await js.pull_subscribe_bind("proof", stream="TESTBED_PROOF")
    seen: set[int] = set()
    while len(seen) < 1000:
        for msg in await sub.fetch(200, timeout=5):
            seen.add(int(msg.data))
            await msg.ack_sync()
    assert seen == set(range(1000))

    info = await js.consumer_info("TESTBED_PROOF", "proof")
    assert info.num_pending == 0
    assert info.num_ack_pending == 0
    assert info.delivered.stream_seq == 1000
