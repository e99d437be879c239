"""Acks, naks and terms are confirmed by the server: one nobody answered (a consumer leader
being elected) is sent again until it is answered, and given up only after the ack wait."""

from __future__ import annotations

import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from jetpool_worker.settlement import RESEND_SECONDS, Settlements, nak_payload
from tests.worker.helpers import eventually

pytestmark = pytest.mark.nats


class Delivered:
    """What a JetStream delivery gives the settler: its reply subject."""

    def __init__(self, reply: str) -> None:
        self.reply = reply


def test_a_nak_carries_its_delay_in_nanoseconds() -> None:
    assert nak_payload(None) == b"-NAK"
    assert nak_payload(0.25) == b'-NAK {"delay": 250000000}'


async def test_an_unanswered_settlement_is_sent_again_until_the_leader_answers(nc: NATS) -> None:
    now = [0.0]
    settlements = Settlements(nc, "_INBOX_test_settle", 30.0, clock=lambda: now[0])
    (resender,) = await settlements.start()
    seen: list[bytes] = []
    await settlements.nak(Delivered("test.ack.1"), 0.5)  # nobody listens: no leader yet
    await nc.flush()
    now[0] += RESEND_SECONDS
    await settlements.resend_due()
    assert settlements.resent == 1
    assert settlements.unconfirmed == 1

    async def leader(msg: Msg) -> None:  # the new leader answers what it applied
        seen.append(msg.data)
        await msg.respond(b"")

    await nc.subscribe("test.ack.*", cb=leader)
    now[0] += RESEND_SECONDS
    await settlements.resend_due()
    await eventually(lambda: settlements.unconfirmed == 0, what="the answer")
    assert seen == [b'-NAK {"delay": 500000000}']
    resender.cancel()


async def test_a_settlement_never_answered_is_given_up_after_the_ack_wait(nc: NATS) -> None:
    now = [0.0]
    settlements = Settlements(nc, "_INBOX_test_settle2", 30.0, clock=lambda: now[0])
    (resender,) = await settlements.start()
    await settlements.ack(Delivered("test.nobody.1"))
    now[0] += 31.0
    await settlements.resend_due()
    assert (settlements.unconfirmed, settlements.given_up) == (0, 1)
    resender.cancel()
