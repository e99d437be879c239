"""Acks, naks and terms the consumer's leader confirms ("double ack"), pipelined.

A settlement is a plain publish to the message's reply subject. Sent while the consumer's
leader is being elected (its server was lost), it is dropped in silence, and the task then
waits out its ack wait (minutes) before it is delivered again: a finished task runs a second
time, a retry's backoff becomes the ack wait (found on a three-server cluster:
tests/e2e/test_nats_cluster.py). So every settlement here carries a reply subject under the
pool's inbox prefix; the leader answers once it has applied it (for a replicated consumer,
once the quorum has it), and one still unanswered after :data:`RESEND_SECONDS` is sent again,
until it is answered or the task's ack wait has passed (the server redelivers it then anyway;
settling it twice is harmless). Nothing waits for the answer: the hot path stays one publish.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

ACK = b"+ACK"
TERM = b"+TERM"
NAK = b"-NAK"
STATUS_HEADER = "Status"
"""Set on the server's status messages (``503`` no responders); the leader's answer has none."""
RESEND_SECONDS = 1.0
"""An unanswered settlement is sent again this long after its last send."""


def nak_payload(delay_seconds: float | None) -> bytes:
    """``-NAK``, with the redelivery delay in nanoseconds when there is one (as nats-py)."""
    if not delay_seconds:
        return NAK
    return NAK + b" " + json.dumps({"delay": int(delay_seconds * 1e9)}).encode()


@dataclass(slots=True)
class _Unconfirmed:
    reply: str
    payload: bytes
    first_sent: float
    last_sent: float


class Settlements:
    """The worker's settlements still awaiting the leader's answer, and their resending."""

    def __init__(
        self,
        nc: Any,
        inbox_prefix: str,
        give_up_after_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._nc = nc
        self._subject = f"{inbox_prefix}.settled"
        self._give_up_after = give_up_after_seconds
        self._clock = clock
        self._tokens = itertools.count(1)
        self._unconfirmed: dict[str, _Unconfirmed] = {}
        self._answered = asyncio.Event()
        self.resent = 0
        """Settlements sent more than once (a lost one, or a slow answer)."""
        self.given_up = 0
        """Settlements never answered within the ack wait (the task is redelivered)."""

    @property
    def unconfirmed(self) -> int:
        return len(self._unconfirmed)

    async def start(self) -> list[asyncio.Task[None]]:
        """Listen for the answers; returns the resending task (cancelled at shutdown)."""
        await self._nc.subscribe(f"{self._subject}.*", cb=self._on_answer)
        return [asyncio.create_task(self._resend_forever(), name="jetpool-settlements")]

    async def ack(self, msg: Any) -> None:
        await self._send(msg, ACK)

    async def nak(self, msg: Any, delay_seconds: float | None = None) -> None:
        await self._send(msg, nak_payload(delay_seconds))

    async def term(self, msg: Any) -> None:
        await self._send(msg, TERM)

    async def _send(self, msg: Any, payload: bytes) -> None:
        token = str(next(self._tokens))
        now = self._clock()
        self._unconfirmed[token] = _Unconfirmed(msg.reply, payload, now, now)
        msg._ackd = True
        await self._nc.publish(msg.reply, payload, reply=f"{self._subject}.{token}")

    async def _on_answer(self, msg: Any) -> None:
        if msg.headers and msg.headers.get(STATUS_HEADER):
            # "503 no responders": no consumer leader took it (an election): not settled
            return
        self._unconfirmed.pop(msg.subject.rpartition(".")[2], None)
        if not self._unconfirmed:
            self._answered.set()

    async def resend_due(self) -> None:
        """Send again what is unanswered for :data:`RESEND_SECONDS`; drop what is too old."""
        now = self._clock()
        for token, entry in list(self._unconfirmed.items()):
            if now - entry.first_sent > self._give_up_after:
                del self._unconfirmed[token]
                self.given_up += 1
                log.warning("a settlement was never confirmed; the server redelivers the task")
            elif now - entry.last_sent >= RESEND_SECONDS:
                entry.last_sent = now
                self.resent += 1
                with contextlib.suppress(Exception):  # disconnected: the next round tries
                    await self._nc.publish(
                        entry.reply, entry.payload, reply=f"{self._subject}.{token}"
                    )
        if not self._unconfirmed:
            self._answered.set()

    async def _resend_forever(self) -> None:
        while True:
            await asyncio.sleep(RESEND_SECONDS / 2)
            await self.resend_due()

    async def drain(self, within_seconds: float) -> int:
        """At shutdown: wait up to ``within_seconds`` for the answers; returns how many are
        still missing."""
        deadline = self._clock() + within_seconds
        while self._unconfirmed and self._clock() < deadline:
            self._answered.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._answered.wait(), RESEND_SECONDS / 2)
            await self.resend_due()
        return len(self._unconfirmed)
