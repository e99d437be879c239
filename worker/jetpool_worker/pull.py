"""The JetStream pull protocol on public core-NATS calls, as nats.go's ``Consume`` runs it.

One subscription to a private inbox, and pull requests published to
``$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>`` with that inbox as the reply subject. Why not
nats-py's ``PullSubscription.fetch``: it spends two asyncio tasks (``next_msg`` + ``wait_for``)
per received message, about 40 % of a no-op worker's time; here a message costs one callback.

:class:`PullLedger` (pure) keeps how many messages each outstanding request is still owed, so
the worker never asks for more than it has room for; :class:`InboxPuller` is the thin I/O.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
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
NO_WAIT_ANSWER_SECONDS = 2.0
"""A ``no_wait`` request unanswered this long is taken as ended (its status was lost)."""


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
    no_wait: bool = False
    """Answered at once: the messages there are, then (if short) a 404 or 408 status."""
    delivered: int = 0
    waiter: Any = None
    """Opaque to the ledger: whoever waits for this request's end (``InboxPuller.sweep``)."""


class PullLedger:
    """PURE: outstanding pull requests, oldest first, and how many messages each is still owed.

    The server serves a consumer's waiting requests in arrival order and expires them in that
    order too (all have the same expiry), so a delivery or a 408 belongs to the oldest one.
    """

    def __init__(self) -> None:
        self._requests: deque[_Request] = deque()

    def sent(self, batch: int, now: float, expires: float) -> None:
        self._requests.append(_Request(batch, now + expires))

    def sent_no_wait(self, batch: int, now: float, *, waiter: Any = None) -> _Request:
        request = _Request(batch, now + NO_WAIT_ANSWER_SECONDS, no_wait=True, waiter=waiter)
        self._requests.append(request)
        return request

    def received(self) -> _Request | None:
        """A delivery; returns the request it completed, if any."""
        if self._requests:
            oldest = self._requests[0]
            oldest.remaining -= 1
            oldest.delivered += 1
            if oldest.remaining <= 0:
                return self._requests.popleft()
        return None

    def timed_out(self, now: float) -> _Request | None:
        """A 408 Request Timeout: the oldest waiting request ended, if it can have expired
        already (else the oldest ``no_wait`` one). Returns the request ended, if any."""
        for request in self._requests:
            if not request.no_wait:
                if request.expires_at - CLOCK_TOLERANCE_SECONDS <= now:
                    self._requests.remove(request)
                    return request
                break
        return self.answered()

    def answered(self) -> _Request | None:
        """A 404 No Messages or 408 Requests Pending: only a ``no_wait`` request gets those,
        the oldest one. Returns it, if any."""
        for request in self._requests:
            if request.no_wait:
                self._requests.remove(request)
                return request
        return None

    def rejected(self) -> _Request | None:
        """A 409 "Exceeded ..." refuses the request just sent; the others stand."""
        if self._requests:
            return self._requests.pop()
        return None

    def reset(self) -> list[_Request]:
        """The server dropped every request (consumer deleted, leadership change)."""
        dropped = list(self._requests)
        self._requests.clear()
        return dropped

    def reached_server_by(self, when: float, expires: float) -> None:
        """Every request sent so far reached the server by ``when`` (a flush returned then), so
        none can take a message after ``when + expires``: the bound a closing inbox waits out.
        (The send-time expiry alone is too early when the send sat in a busy client's buffer.)
        """
        for request in self._requests:
            request.expires_at = max(request.expires_at, when + expires)

    def expire(self, now: float) -> list[_Request]:
        gone = []
        while self._requests and self._requests[0].expires_at + EXPIRY_GRACE_SECONDS <= now:
            gone.append(self._requests.popleft())
        return gone

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

    @property
    def waiting(self) -> bool:
        """A request that waits on the server for messages (not ``no_wait``) is out."""
        return any(not r.no_wait for r in self._requests)


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

    async def sweep(self, batch: int) -> int:
        """Take up to ``batch`` messages that are there now (a ``no_wait`` pull), without
        waiting on the server for more; returns how many came (fewer: the consumer had no
        more, or its ``max_ack_pending`` is reached)."""
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        request = self.ledger.sent_no_wait(batch, self._clock(), waiter=done)
        body = {"batch": batch, "no_wait": True}
        try:
            await self._nc.publish(self._subject, json.dumps(body).encode(), reply=self.inbox)
        except Exception:
            self.ledger.rejected()
            raise
        try:
            async with asyncio.timeout(NO_WAIT_ANSWER_SECONDS):
                return await asyncio.shield(done)
        except TimeoutError:  # its status was lost: the ledger forgets it by its expiry
            return request.delivered

    def owed(self) -> int:
        self._expire()
        return self.ledger.owed(self._clock())

    @property
    def waiting(self) -> bool:
        self._expire()
        return self.ledger.waiting

    def _expire(self) -> None:
        """Forget requests past their expiry; a sweep waiting on one gets what came."""
        self._ended(self.ledger.expire(self._clock()))

    @staticmethod
    def _ended(requests: Sequence[_Request | None]) -> None:
        for request in requests:
            if request is not None and request.waiter is not None and not request.waiter.done():
                request.waiter.set_result(request.delivered)

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
        self._expire()
        return self.ledger.quiet_in(self._clock())

    @property
    def pulling(self) -> bool:
        self._expire()
        return len(self.ledger) > 0

    async def _receive(self, msg: Any) -> None:
        status = status_of(msg)
        if status is None:
            completed = self.ledger.received()
            await self._on_message(msg)
            self._ended([completed])
            return
        if status == IDLE_HEARTBEAT:
            return
        description = str(msg.headers.get(DESCRIPTION_HEADER, ""))
        ended: list[_Request | None] = []
        if status == NO_MESSAGES or (status == REQUEST_TIMEOUT and "Pending" in description):
            ended = [self.ledger.answered()]
        elif status == REQUEST_TIMEOUT:
            ended = [self.ledger.timed_out(self._clock())]
        elif status == CONFLICT and description.startswith("Exceeded"):
            log.warning("pull request refused: %s %s", status, description)
            ended = [self.ledger.rejected()]
        elif status == CONFLICT:
            log.info("pull requests dropped by the server: %s %s", status, description)
            ended = list(self.ledger.reset())
        else:
            log.warning("unexpected pull status %s %s", status, description)
        self._ended(ended)
        if not all(r is not None and r.no_wait for r in ended) or not ended:
            # a sweep's own end is reported to the sweep, not as a reason to pull again
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
