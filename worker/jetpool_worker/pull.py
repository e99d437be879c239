"""The JetStream pull protocol on public core-NATS calls, as nats.go's ``Consume`` runs it.

One subscription to a private inbox, and pull requests published to
``$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>`` with that inbox as the reply subject. Why not
nats-py's ``PullSubscription.fetch``: it spends two asyncio tasks (``next_msg`` + ``wait_for``)
per received message, about 40 % of a no-op worker's time; here a message costs one callback.

:class:`PullLedger` (pure) keeps how many messages each outstanding request is still owed, so
the worker never asks for more than it has room for; :class:`InboxPuller` is the thin I/O.
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

STATUS_HEADER = "Status"
DESCRIPTION_HEADER = "Description"
IDLE_HEARTBEAT = "100"
NO_MESSAGES = "404"
REQUEST_TIMEOUT = "408"
CONFLICT = "409"
EXPIRY_GRACE_SECONDS = 0.25
"""A request the server has not reported on this long after its expiry is forgotten (its 408
was lost, e.g. in a disconnect): the server has dropped it by then."""
CLOCK_TOLERANCE_SECONDS = 0.1
"""A 408 ends the oldest request only if that one can have expired by now (send-time skew)."""


def status_of(msg: Any) -> str | None:
    """The status code of a server status message; None for a delivery. Only a delivery has a
    reply (``$JS.ACK...``) subject, so a task published with a ``Status`` header stays a task."""
    headers = msg.headers
    if not headers or msg.reply:
        return None
    status = headers.get(STATUS_HEADER)
    return str(status) if status else None


@dataclass
class _Request:
    remaining: int
    expires_at: float
    """When the server expires it (local clock, from the send)."""


class PullLedger:
    """PURE: outstanding pull requests, oldest first, and how many messages each is still owed.

    The server serves a consumer's waiting requests in arrival order and expires them in that
    order too (all have the same expiry), so a delivery or a 408 belongs to the oldest one.
    """

    def __init__(self) -> None:
        self._requests: deque[_Request] = deque()

    def sent(self, batch: int, now: float, expires: float) -> None:
        self._requests.append(_Request(batch, now + expires))

    def received(self) -> None:
        if self._requests:
            self._requests[0].remaining -= 1
            if self._requests[0].remaining <= 0:
                self._requests.popleft()

    def timed_out(self, now: float) -> None:
        """A 408 (or 404): the oldest request ended, if it can have expired already."""
        if self._requests and self._requests[0].expires_at - CLOCK_TOLERANCE_SECONDS <= now:
            self._requests.popleft()

    def rejected(self) -> None:
        """A 409 "Exceeded ..." refuses the request just sent; the others stand."""
        if self._requests:
            self._requests.pop()

    def reset(self) -> None:
        """The server dropped every request (consumer deleted, leadership change)."""
        self._requests.clear()

    def reached_server_by(self, when: float, expires: float) -> None:
        """Every request sent so far reached the server by ``when`` (a flush returned then), so
        none can take a message after ``when + expires``: the bound a closing inbox waits out.
        (The send-time expiry alone is too early when the send sat in a busy client's buffer.)
        """
        for request in self._requests:
            request.expires_at = max(request.expires_at, when + expires)

    def expire(self, now: float) -> None:
        while self._requests and self._requests[0].expires_at + EXPIRY_GRACE_SECONDS <= now:
            self._requests.popleft()

    def owed(self, now: float) -> int:
        self.expire(now)
        return sum(r.remaining for r in self._requests)

    def quiet_in(self, now: float) -> float:
        """Seconds until no request of ours can still take a message on the server."""
        self.expire(now)
        if not self._requests:
            return 0.0
        return max(0.0, self._requests[-1].expires_at + EXPIRY_GRACE_SECONDS - now)

    def __len__(self) -> int:
        return len(self._requests)


class InboxPuller:
    """Pulls for one durable consumer into one inbox; hands each delivery to ``on_message``.

    ``on_change`` is called whenever requests end, so the caller can pull again. Status
    messages never reach ``on_message``.
    """

    def __init__(
        self,
        nc: Any,
        stream: str,
        consumer: str,
        *,
        on_message: Callable[[Any], Awaitable[None]],
        on_change: Callable[[], None],
        expires: float,
        clock: Callable[[], float] = time.monotonic,
        api_prefix: str = "$JS.API",
    ) -> None:
        self._nc = nc
        self._subject = f"{api_prefix}.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._on_message = on_message
        self._on_change = on_change
        self._expires = expires
        self._clock = clock
        self.ledger = PullLedger()
        self.inbox = ""
        self._sub: Any = None

    async def start(self) -> None:
        self.inbox = self._nc.new_inbox()
        self._sub = await self._nc.subscribe(self.inbox, cb=self._receive)

    async def pull(self, batch: int) -> None:
        """Ask for up to ``batch`` messages, waiting on the server at most ``expires``."""
        body = {"batch": batch, "expires": int(self._expires * 1_000_000_000)}
        self.ledger.sent(batch, self._clock(), self._expires)
        try:
            await self._nc.publish(self._subject, json.dumps(body).encode(), reply=self.inbox)
        except Exception:
            self.ledger.rejected()
            raise

    def owed(self) -> int:
        return self.ledger.owed(self._clock())

    async def confirm_sent(self, within_seconds: float) -> None:
        """Round-trip the connection so the ledger knows when the server had every request
        (before closing the inbox: a request still live then would take messages nobody reads,
        stuck until the ack wait)."""
        try:
            await self._nc.flush(timeout=within_seconds)
        except Exception as exc:  # not confirmed: the bound from now is the best we have
            log.debug("flush before closing the inbox failed: %s", exc)
        self.ledger.reached_server_by(self._clock(), self._expires)

    def quiet_in(self) -> float:
        return self.ledger.quiet_in(self._clock())

    @property
    def pulling(self) -> bool:
        self.ledger.expire(self._clock())
        return len(self.ledger) > 0

    async def _receive(self, msg: Any) -> None:
        status = status_of(msg)
        if status is None:
            self.ledger.received()
            await self._on_message(msg)
            return
        if status == IDLE_HEARTBEAT:
            return
        description = str(msg.headers.get(DESCRIPTION_HEADER, ""))
        if status in (REQUEST_TIMEOUT, NO_MESSAGES):
            self.ledger.timed_out(self._clock())
        elif status == CONFLICT and description.startswith("Exceeded"):
            log.warning("pull request refused: %s %s", status, description)
            self.ledger.rejected()
        elif status == CONFLICT:
            log.info("pull requests dropped by the server: %s %s", status, description)
            self.ledger.reset()
        else:
            log.warning("unexpected pull status %s %s", status, description)
        self._on_change()

    async def close(self) -> None:
        """Stop listening; messages already received still go through ``on_message``."""
        if self._sub is None:
            return
        sub, self._sub = self._sub, None
        try:
            await sub.drain()
        except Exception as exc:  # connection closed or draining: nothing more will arrive
            log.debug("inbox drain failed: %s", exc)
