"""The pool's circuit breaker as seen by one worker: watch the control KV key, gate fetching.

A missing bucket or key means Closed (the operator has not written anything yet). The watcher
re-establishes itself after any error (e.g. a nats-server restart), and a periodic ``get``
reconciles in case a watch silently went stale.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import nats.errors
import nats.js.errors
from pydantic import ValidationError

from jetpool_protocol.control import BreakerState, ControlState

log = logging.getLogger(__name__)


class BreakerGate:
    """PURE gate: the current control state plus this worker's HalfOpen trial budget."""

    def __init__(self, worker_id: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.worker_id = worker_id
        self.state = ControlState()
        self.known = False
        """Nothing is fetched until the control entry (or its absence) has been read once."""
        self._clock = clock
        self.read_at: float | None = None
        """When the control state was last read (the watch rereads it at least every 5 s)."""
        self.trial_fetched = 0
        self.trial_succeeded = 0
        self.trial_failed = 0
        self.changed = asyncio.Event()

    def update(self, state: ControlState) -> None:
        if state.epoch != self.state.epoch or state.breaker is not self.state.breaker:
            self.trial_fetched = self.trial_succeeded = self.trial_failed = 0
            if state != self.state:
                log.info(
                    "circuit breaker is %s (epoch %d): %s",
                    state.breaker,
                    state.epoch,
                    state.reason or "no reason given",
                )
        self.state = state
        self.known = True
        self.read_at = self._clock()
        self.changed.set()

    def read_again(self) -> None:
        """The control state was read and found as it was."""
        self.read_at = self._clock()

    def read_age(self) -> float | None:
        """Seconds since the control state was last read; None: never read."""
        return None if self.read_at is None else self._clock() - self.read_at

    @property
    def is_trial(self) -> bool:
        return self.state.breaker is BreakerState.HALF_OPEN and self.state.may_fetch(self.worker_id)

    def allowance(self) -> int | None:
        """How many tasks may be fetched now: None = no limit, 0 = none."""
        if not self.known or not self.state.may_fetch(self.worker_id):
            return 0
        if self.state.breaker is BreakerState.HALF_OPEN:
            return max(0, self.state.trial_tasks - self.trial_fetched)
        return None

    def fetched(self, count: int) -> None:
        if self.is_trial:
            self.trial_fetched += count

    def admit(self, count: int) -> tuple[int, int | None]:
        """How many of ``count`` just-fetched tasks may run, and their trial epoch (None: not
        trial tasks). Decided on arrival, not when the fetch was asked for: the state may have
        moved to Open or HalfOpen (or a new epoch) while the fetch was in flight.

        Open admits them all: they were fetched while fetching was allowed, and handing them
        back would cost each a delivery attempt (a task bounced by breaker churn could end up
        dead-lettered as exhausted without having failed). Open stops *fetching*; what was
        already fetched runs, like any in-flight task. HalfOpen keeps its trial budget."""
        allowance = None if self.state.breaker is BreakerState.OPEN else self.allowance()
        keep = count if allowance is None else min(count, allowance)
        trial_epoch = self.state.epoch if self.is_trial else None
        if trial_epoch is not None:
            self.trial_fetched += keep
        return keep, trial_epoch

    def returned(self, trial_epoch: int | None) -> None:
        """A trial task that never reached the handler (invalid, expired, attempts exhausted)
        gives its slot back: it proves nothing about the dependency, and keeping it would let
        such tasks use up the whole trial and leave the breaker HalfOpen for ever."""
        if trial_epoch is not None and trial_epoch == self.state.epoch and self.is_trial:
            self.trial_fetched = max(0, self.trial_fetched - 1)

    def finished(self, ok: bool, trial_epoch: int | None = None) -> None:
        """Count a trial result only for a task admitted as a trial of the current epoch."""
        if trial_epoch is None or trial_epoch != self.state.epoch or not self.is_trial:
            return
        if ok:
            self.trial_succeeded += 1
        else:
            self.trial_failed += 1

    @property
    def paused_reason(self) -> str:
        if self.allowance() == 0:
            if not self.known:
                return "breaker_state_unknown"
            if self.state.breaker is BreakerState.HALF_OPEN and self.is_trial:
                return "breaker_half_open_trial_done"
            return f"breaker_{self.state.breaker.value.lower()}"
        return ""


def parse_control(value: bytes | None) -> ControlState:
    """An empty or deleted entry means Closed; raises ``ValidationError`` on garbage."""
    if not value:
        return ControlState()
    return ControlState.model_validate_json(value)


async def watch_control(
    js: Any,
    bucket: str,
    key: str,
    gate: BreakerGate,
    *,
    retry_seconds: float = 1.0,
    reconcile_seconds: float = 5.0,
    running: Callable[[], bool] = lambda: True,
) -> None:
    """Keep ``gate`` in step with the KV entry until cancelled or ``running()`` is false.

    ``running`` exists because a nats-py request can swallow a cancellation that races with
    its own timeout; the loop then still ends at its next turn.
    """
    while running():
        watcher: Any = None
        try:
            kv = await js.key_value(bucket)
            watcher = await kv.watch(key)
            while running():
                try:
                    entry = await watcher.updates(timeout=reconcile_seconds)
                except nats.errors.TimeoutError:
                    _apply(gate, await _get_entry(kv, key))
                    continue
                if entry is None:  # initial marker: nothing stored yet
                    if not gate.known:
                        gate.update(ControlState())
                    gate.read_again()
                    continue
                if not hasattr(entry, "value"):  # the watcher was stopped under us
                    break
                _apply(gate, entry)
        except asyncio.CancelledError:
            raise
        except nats.js.errors.NotFoundError:
            if not gate.known or gate.state.breaker is not BreakerState.CLOSED:
                gate.update(ControlState())
            gate.read_again()  # no bucket (yet): Closed, and that is known
        except Exception as exc:
            log.debug("control watch on %s/%s failed (%s); retrying", bucket, key, exc)
        finally:
            if watcher is not None:
                with contextlib.suppress(Exception):
                    await watcher.stop()
        await asyncio.sleep(retry_seconds)


async def _get_entry(kv: Any, key: str) -> Any:
    try:
        return await kv.get(key)
    except nats.js.errors.NotFoundError:  # includes a deleted or purged key
        return None


def _apply(gate: BreakerGate, entry: Any) -> None:
    if entry is None:
        gate.update(ControlState())
        return
    op = getattr(entry, "operation", None)
    value = None if op in ("DEL", "PURGE") else entry.value
    try:
        gate.update(parse_control(value))
    except ValidationError as exc:
        log.error("ignoring unreadable control state %r: %s", value, exc)
