"""Pulling a laned pool: several consumers (priority levels, ordered partitions), one worker.

Each lane is one durable consumer (``jetpool_protocol.lanes``). A worker with free slots
*sweeps* the lanes: ``no_wait`` pulls, sized by :class:`StrideShares`, that take what is there
now and never wait; a lane that gives fewer than asked is empty for the rest of the sweep and
its slots go to the next (work-conserving). When a sweep finds nothing, the worker *parks* one
waiting pull of batch 1 on as many lanes as it has free slots, highest share first; the first
delivery (or expiry) wakes it for the next sweep. Ordered partitions (one task in flight
pool-wide) are never swept, only given waiting pulls of batch 1 in their turn: the server holds
a ``no_wait`` pull on a consumer at its ``max_ack_pending`` instead of answering it. A worker
never asks for more than it has free slots, so nothing is over-delivered and handed back.

Why not one consumer over every level: it delivers in stream order, so a high-priority task
waits behind every low one queued before it (26 s behind 18k tasks in the research,
docs/design/flow-control-research.md §1). Why not waiting pulls on every lane at once: each
would take tasks the moment they come, whatever their level.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from jetpool_protocol.lanes import Lane

from .pull import InboxPuller

log = logging.getLogger(__name__)

PARK_EXPIRY_SECONDS = 2.0
"""A parked pull's life; an idle worker re-parks this often."""


@dataclass
class _Share:
    weight: int
    passed: float = 0.0
    """Slots taken so far divided by the weight (stride scheduling's "pass")."""
    active: bool = True
    """False once found empty, until it gives tasks again."""


class StrideShares:
    """PURE: who gets freed slots. Under contention lane i gets ``weight_i / Σ weights`` of
    the slots (stride scheduling: each slot taken advances the lane's pass by 1/weight, the
    lowest pass goes next, ties to the earlier, i.e. higher, lane). A lane coming back from
    empty joins at the lowest pass of the busy lanes: served next, but owed no burst for the
    time it was idle. So a high-priority task published behind a low backlog takes the next
    freed slot, and low still gets its share while high stays busy.
    """

    def __init__(self, weights: Sequence[int]) -> None:
        self._shares = [_Share(w) for w in weights]

    def allot(self, free: int, candidates: Sequence[int], caps: dict[int, int]) -> dict[int, int]:
        """How many of ``free`` slots each candidate lane is asked for, at most its cap."""
        floor = min((s.passed for s in self._shares if s.active), default=0.0)
        passes = {}
        for i in candidates:
            share = self._shares[i]
            passes[i] = share.passed if share.active else max(share.passed, floor)
        given: dict[int, int] = {}
        for _ in range(free):
            open_ = [i for i in candidates if given.get(i, 0) < caps.get(i, free)]
            if not open_:
                break
            pick = min(open_, key=lambda i: (passes[i], i))
            given[pick] = given.get(pick, 0) + 1
            passes[pick] += 1 / self._shares[pick].weight
        return given

    def taken(self, lane: int, count: int) -> None:
        share = self._shares[lane]
        if count and not share.active:
            floor = min((s.passed for s in self._shares if s.active), default=share.passed)
            share.passed = max(share.passed, floor)
            share.active = True
        share.passed += count / share.weight

    def emptied(self, lane: int) -> None:
        self._shares[lane].active = False

    def order(self) -> list[int]:
        """Lanes by who would be served first (parking order)."""
        return sorted(range(len(self._shares)), key=lambda i: (self._shares[i].passed, i))


class LanePuller:
    """Pulls every lane of a laned pool, each through its own :class:`InboxPuller`."""

    def __init__(
        self,
        nc: Any,
        stream: str,
        lanes: Sequence[Lane],
        *,
        on_message: Callable[[Any], Awaitable[None]],
        on_change: Callable[[], None],
        expires: float = PARK_EXPIRY_SECONDS,
        api_prefix: str = "$JS.API",
    ) -> None:
        self.lanes = tuple(lanes)
        self.shares = StrideShares([lane.weight for lane in self.lanes])

        self.delivered = [0] * len(self.lanes)
        """Tasks each lane gave this worker (``jetpool_lane_tasks_pulled_total``)."""

        def arrived(lane: int) -> Callable[[Any], Awaitable[None]]:
            async def deliver(msg: Any) -> None:
                self.delivered[lane] += 1
                await on_message(msg)
                on_change()  # a parked lane gave a task: sweep it for more

            return deliver

        self.pullers = [
            InboxPuller(
                nc,
                stream,
                lane.consumer,
                on_message=arrived(i),
                on_change=on_change,
                expires=expires,
                api_prefix=api_prefix,
            )
            for i, lane in enumerate(self.lanes)
        ]

    async def start(self) -> None:
        for puller in self.pullers:
            await puller.start()

    async def fill(self, free: int) -> int:
        """Ask for up to ``free`` tasks, lanes by their shares; park when every lane is empty.
        Returns how many tasks were taken or pulls left waiting (0: nothing more to ask)."""
        candidates = [i for i, p in enumerate(self.pullers) if self._may_ask(i, p)]
        caps = {i: 1 for i, lane in enumerate(self.lanes) if lane.single}
        progress = 0
        while free > 0 and candidates:
            asked = self.shares.allot(free, candidates, caps)
            sweeps = {i: n for i, n in asked.items() if not self.lanes[i].single}
            for lane in asked.keys() - sweeps.keys():
                # An ordered partition: a sweep there would hang while its one task runs
                # elsewhere (the server holds a no_wait pull at max_ack_pending), so it gets
                # a pull that waits, served the moment the partition's running task is acked.
                await self.pullers[lane].pull(1)
                self.shares.taken(lane, 1)
                candidates.remove(lane)
                free -= 1
                progress += 1
            got = await asyncio.gather(*(self.pullers[i].sweep(n) for i, n in sweeps.items()))
            for (lane, wanted), came in zip(sweeps.items(), got, strict=True):
                self.shares.taken(lane, came)
                if came < wanted:
                    self.shares.emptied(lane)
                    candidates.remove(lane)
            free -= sum(got)
            progress += sum(got)
        if progress == 0 and free > 0:
            progress += await self._park(free)
        return progress

    def _may_ask(self, lane: int, puller: InboxPuller) -> bool:
        if self.lanes[lane].single:
            return len(puller.ledger) == 0
        return not puller.waiting

    async def _park(self, free: int) -> int:
        idle = [i for i in self.shares.order() if len(self.pullers[i].ledger) == 0]
        for lane in idle[:free]:
            await self.pullers[lane].pull(1)
        return len(idle[:free])

    def pulled(self) -> list[tuple[str, str, int]]:
        """(label, consumer, tasks delivered) per lane."""
        return [
            (lane.label, lane.consumer, count)
            for lane, count in zip(self.lanes, self.delivered, strict=True)
        ]

    def owed(self) -> int:
        return sum(p.owed() for p in self.pullers)

    def quiet_in(self) -> float:
        return max(p.quiet_in() for p in self.pullers)

    @property
    def pulling(self) -> bool:
        return any(p.pulling for p in self.pullers)

    async def confirm_sent(self, within_seconds: float) -> None:
        await asyncio.gather(*(p.confirm_sent(within_seconds) for p in self.pullers))

    async def close(self) -> None:
        await asyncio.gather(*(p.close() for p in self.pullers))
