"""Pulling a laned pool: several consumers (priority levels, ordered partitions), one worker.

Each lane is one durable consumer (``jetpool_protocol.lanes``). A worker with free slots:

1. keeps a pull of one task waiting on ``ordered_pulls`` ordered partitions (rotating over
   them, so the pool's workers cover every partition between them). Partitions are never
   swept: nats-server holds a ``no_wait`` pull on a consumer at its ``max_ack_pending`` (a
   partition whose one task runs elsewhere) instead of answering it;
2. *sweeps* the priority levels: ``no_wait`` pulls, sized by :class:`StrideShares`, that take
   what is there now and never wait; a level that gives fewer than asked is empty for the
   rest of the sweep and its slots go to the next (work-conserving);
3. when that finds nothing, *parks* one waiting pull of batch 1 on as many lanes as it has
   free slots, levels first (highest first), then further partitions; the first delivery (or
   expiry) wakes it for the next sweep.

It never asks for more than it has free slots, so nothing is over-delivered and handed back.

Why not one consumer over every level: it delivers in stream order, so a high-priority task
waits behind every low one queued before it (26 s behind 18k tasks in the research,
docs/design/flow-control-research.md §1). Why not waiting pulls on every lane at once: each
would take tasks the moment they come, whatever their level.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from jetpool_protocol.lanes import Lane

from .pull import InboxPuller

log = logging.getLogger(__name__)

PARK_EXPIRY_SECONDS = 2.0
"""A parked pull's life; an idle worker re-parks this often."""
ORDERED_PULL_EXPIRY_SECONDS = 0.5
"""A pull waiting on an ordered partition moves on to the next partition this often."""
PROBE_INTERVAL_SECONDS = 0.05
"""A level found empty is swept again at most this often while others keep the worker busy
(a task published there waits at most this long for the next freed slot)."""


@dataclass
class _Share:
    weight: int
    passed: float = 0.0
    """Slots taken so far divided by the weight (stride scheduling's "pass")."""
    active: bool = False
    """Giving tasks; False until the first and once found empty."""
    probed_at: float = -math.inf


class StrideShares:
    """PURE: which level gets freed slots. Under contention level i gets ``weight_i / Σ
    weights`` of the slots (stride scheduling: each slot taken advances the level's pass by
    1/weight; the lowest pass goes next). A level coming back from empty joins at the pass of
    the latest slot handed out (virtual time): served next (ties go to the returning level,
    then to the higher one), but owed no burst for its idle time and keeping no lead from
    before it. So a high-priority task published behind a low backlog takes the next freed
    slot, and a low level that had run dry is tried again and gets its share back.
    """

    def __init__(self, weights: Sequence[int], clock: Callable[[], float] = time.monotonic) -> None:
        self._shares = [_Share(w) for w in weights]
        self._clock = clock
        self._now = 0.0
        """Virtual time: the pass at which the latest slot was handed out."""

    def askable(self, candidates: Sequence[int]) -> list[int]:
        """The candidates worth a sweep now: active ones, and empty ones not tried lately."""
        now = self._clock()
        return [
            i
            for i in candidates
            if self._shares[i].active or now - self._shares[i].probed_at >= PROBE_INTERVAL_SECONDS
        ]

    def _pass(self, lane: int) -> float:
        share = self._shares[lane]
        return share.passed if share.active else self._now

    def allot(self, free: int, candidates: Sequence[int]) -> dict[int, int]:
        """How many of ``free`` slots each candidate level is asked for."""
        passes = {i: self._pass(i) for i in candidates}
        given: dict[int, int] = {}
        for _ in range(free if candidates else 0):
            pick = min(candidates, key=lambda i: (passes[i], self._shares[i].active, i))
            given[pick] = given.get(pick, 0) + 1
            passes[pick] += 1 / self._shares[pick].weight
        return given

    def taken(self, lane: int, count: int) -> None:
        if count <= 0:
            return
        share = self._shares[lane]
        if not share.active:
            share.passed = self._now
            share.active = True
        self._now = max(self._now, share.passed + (count - 1) / share.weight)
        share.passed += count / share.weight

    def emptied(self, lane: int) -> None:
        share = self._shares[lane]
        share.active = False
        share.probed_at = self._clock()


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
        ordered_pulls: int = 1,
        api_prefix: str = "$JS.API",
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.lanes = tuple(lanes)
        self.levels = [i for i, lane in enumerate(self.lanes) if not lane.single]
        self.partitions = [i for i, lane in enumerate(self.lanes) if lane.single]
        self.shares = StrideShares([self.lanes[i].weight for i in self.levels])
        self.ordered_pulls = ordered_pulls
        self._cursor = int(rand() * len(self.partitions)) if self.partitions else 0
        """Where this worker's rotation over the partitions is (workers start apart)."""

        self.delivered = [0] * len(self.lanes)
        """Tasks each lane gave this worker (``jetpool_lane_tasks_pulled_total``)."""

        def arrived(lane: int) -> Callable[[Any], Awaitable[None]]:
            async def deliver(msg: Any) -> None:
                self.delivered[lane] += 1
                await on_message(msg)
                on_change()  # a waiting pull gave a task: sweep for more

            return deliver

        self.pullers = [
            InboxPuller(
                nc,
                stream,
                lane.consumer,
                on_message=arrived(i),
                on_change=on_change,
                expires=ORDERED_PULL_EXPIRY_SECONDS if lane.single else PARK_EXPIRY_SECONDS,
                api_prefix=api_prefix,
            )
            for i, lane in enumerate(self.lanes)
        ]

    async def start(self) -> None:
        for puller in self.pullers:
            await puller.start()

    async def fill(self, free: int) -> int:
        """Ask for up to ``free`` tasks (module docstring: partitions, sweeps, parking).
        Returns how many tasks were taken or pulls left waiting (0: nothing more to ask)."""
        progress = 0
        watched = sum(1 for i in self.partitions if self.pullers[i].pulling)
        for lane in self._next_partitions(min(free, self.ordered_pulls - watched)):
            await self.pullers[lane].pull(1)
            free -= 1
            progress += 1
        levels = [n for n, i in enumerate(self.levels) if not self.pullers[i].waiting]
        candidates = self.shares.askable(levels)
        while free > 0 and candidates:
            asked = self.shares.allot(free, candidates)
            got = await asyncio.gather(
                *(self.pullers[self.levels[n]].sweep(k) for n, k in asked.items())
            )
            for (level, wanted), came in zip(asked.items(), got, strict=True):
                self.shares.taken(level, came)
                if came < wanted:
                    self.shares.emptied(level)
                    candidates.remove(level)
            free -= sum(got)
            progress += sum(got)
        if progress == 0 and free > 0:
            progress += await self._park(free)
        return progress

    def _next_partitions(self, count: int) -> list[int]:
        """The next ``count`` partitions in this worker's rotation that it has no pull on."""
        chosen: list[int] = []
        for step in range(len(self.partitions)):
            if len(chosen) >= count:
                break
            lane = self.partitions[(self._cursor + step) % len(self.partitions)]
            if not self.pullers[lane].pulling:
                chosen.append(lane)
        if chosen:
            self._cursor = (self.partitions.index(chosen[-1]) + 1) % len(self.partitions)
        return chosen

    async def _park(self, free: int) -> int:
        """Every lane empty: waiting pulls, levels first (highest first), then partitions."""
        idle = [i for i in self.levels if not self.pullers[i].pulling]
        idle += self._next_partitions(max(0, free - len(idle)))
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
