"""The worker's side of task state: each task's steps written by id, runs counted honestly,
cancellations watched.

Cost on the hot path is bounded to one buffered publish per task (no round trip, no timer):
the ``running`` step of a task is written by one sweep over the tasks in flight, only once a
task has run for :data:`RUNNING_WRITE_DELAY_SECONDS`, so a short task writes just its
outcome. Steps that must be stored before the next delivery can read them (a retry, a
hand-back) wait for the server's acknowledgement; they are off the success path.

Run counting (:func:`~jetpool_protocol.task_state.runs_before`) reads the state of a
redelivered task once (direct get), so a delivery handed back without running never uses up
an attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import nats.errors
import nats.js.errors

from jetpool_protocol.task_state import (
    CANCEL_PREFIX,
    NO_VALUE_RESULT,
    CancelRequest,
    TaskError,
    TaskPhase,
    TaskResult,
    TaskState,
    error_result,
    key_id,
    result_key,
    runs_before,
    state_key,
    succeeded_state_bytes,
    success_result,
)
from jetpool_protocol.worker_settings import WorkerSettings
from jetpool_worker.dead_letter import RawTask

log = logging.getLogger(__name__)

RUNNING_WRITE_DELAY_SECONDS = 0.25
"""A task still running after this long gets its ``running`` step written."""
READ_TIMEOUT_SECONDS = 2.0
WRITE_TIMEOUT_SECONDS = 5.0
CANCELLED_MEMORY = 100_000
"""Cancelled ids a worker remembers (the bucket's TTL bounds how many can be pending)."""
CATCH_UP_TIMEOUT_SECONDS = 5.0
"""How long a starting worker waits to learn the pending cancellations before it consumes."""


@dataclass(slots=True)
class Run:
    """One admitted delivery as far as its state is concerned."""

    raw: RawTask
    task_id: str
    runs_before: int
    started: float = 0.0
    """Monotonic time the handler started (0: not started)."""
    running_written: bool = False
    cancel: Callable[[], None] | None = None
    cancel_requested: bool = False

    @property
    def attempt(self) -> int:
        """The run this delivery is: what the handler sees as ``task.attempt``."""
        return self.runs_before + 1


class TaskTracker:
    """Writes the pool's task states; a no-op (runs = deliveries) when the pool tracks none."""

    def __init__(
        self,
        settings: WorkerSettings,
        worker_id: str,
        clock: Callable[[], datetime],
    ) -> None:
        self.bucket = settings.task_state_bucket
        self.results_max_bytes = settings.task_results_max_bytes
        self.worker_id = worker_id
        self._worker_json = json.dumps(worker_id)
        self._clock = clock
        self._nc: Any = None
        self._js: Any = None
        self._reader: Any = None
        self._cancelled: OrderedDict[str, CancelRequest] = OrderedDict()
        self._runs: dict[str, Run] = {}
        self.caught_up = asyncio.Event()
        self.write_failures = 0
        if self.bucket is None:
            self.caught_up.set()

    @property
    def enabled(self) -> bool:
        return self.bucket is not None

    def bind(self, nc: Any, js: Any) -> None:
        self._nc, self._js = nc, js
        self._reader = nc.jetstream(timeout=READ_TIMEOUT_SECONDS)

    # ------------------------------------------------------------------ reading

    async def admit(self, raw: RawTask) -> Run:
        """The delivery with its honest run count (one read, only for a redelivery)."""
        earlier = raw.attempt - 1
        if not self.enabled or raw.attempt == 1:
            return Run(raw, raw.task_id, earlier)
        previous = await self._read_state(raw.task_id)
        return Run(raw, raw.task_id, runs_before(previous, raw.attempt, raw.sequence))

    async def _read_state(self, task_id: str) -> TaskState | None:
        assert self.bucket is not None
        try:
            msg = await self._reader.get_last_msg(
                f"KV_{self.bucket}", f"$KV.{self.bucket}.{state_key(task_id)}", direct=True
            )
            return TaskState.from_bytes(msg.data or b"")
        except nats.js.errors.NotFoundError:
            return None
        except Exception as exc:
            # Unknown: every earlier delivery counts as a run (never more runs than allowed).
            log.warning("could not read the state of task %s: %s", task_id, exc)
            return None

    def is_cancelled(self, task_id: str) -> CancelRequest | None:
        return self._cancelled.get(task_id)

    # ------------------------------------------------------------------ writing

    def _state(self, run: Run, phase: TaskPhase, **fields: Any) -> TaskState:
        return TaskState(
            id=run.task_id,
            phase=phase,
            since=self._clock(),
            runs=fields.pop("runs", run.attempt),
            deliveries=run.raw.attempt,
            worker=self.worker_id,
            stream_sequence=run.raw.sequence,
            **fields,
        )

    def started(self, run: Run) -> None:
        """The handler is about to run (its ``running`` step is written if it lasts)."""
        if self.enabled:
            run.started = time.monotonic()
            self._runs[run.task_id] = run

    async def write_running_states(self) -> None:
        """Every so often, write ``running`` for the tasks in flight long enough to matter."""
        if not self.enabled:
            return
        while True:
            await asyncio.sleep(RUNNING_WRITE_DELAY_SECONDS / 2)
            due = time.monotonic() - RUNNING_WRITE_DELAY_SECONDS
            for run in list(self._runs.values()):
                # checked right before the (buffering) publish: a task that finished
                # meanwhile has written its outcome, which must stay the last word
                if (
                    run.running_written
                    or run.started > due
                    or self._runs.get(run.task_id) is not run
                ):
                    continue
                run.running_written = True
                await self._buffer(self._state(run, TaskPhase.RUNNING))

    async def succeeded(self, run: Run, value: Any) -> None:
        """The step every task writes: encoded by hand, one buffered publish (two with the
        result)."""
        self._runs.pop(run.task_id, None)
        if not self.enabled:
            return
        keep = self.results_max_bytes
        if keep is not None:
            result = NO_VALUE_RESULT if value is None else success_result(value, keep).to_bytes()
            await self._buffer_raw(result_key(run.task_id), result)
        state = succeeded_state_bytes(
            run.task_id,
            self._clock(),
            run.attempt,
            run.raw.attempt,
            self._worker_json,
            run.raw.sequence,
            keep is not None,
        )
        await self._buffer_raw(state_key(run.task_id), state)

    async def finished(
        self,
        run: Run,
        phase: TaskPhase,
        *,
        error: TaskError | None = None,
        reason: str | None = None,
        ran: bool = True,
    ) -> None:
        """A final step other than success (dead-lettered, expired, cancelled): one buffered
        write, plus the result when the pool keeps results."""
        self._runs.pop(run.task_id, None)
        if not self.enabled:
            return
        result: TaskResult | None = None
        if self.results_max_bytes is not None:
            if error is not None:
                result = error_result(error.type, error.message)
            else:
                result = error_result(phase.value.capitalize(), reason or phase.value)
        state = self._state(
            run,
            phase,
            runs=run.attempt if ran else run.runs_before,
            error=error,
            reason=reason,
            has_result=result is not None,
        )
        if result is not None:
            await self._buffer_raw(result_key(run.task_id), result.to_bytes())
        await self._buffer(state)

    async def retrying(self, run: Run, delay_seconds: float, error: TaskError) -> None:
        """Stored before the nak: the next delivery reads how many runs this one made."""
        self._runs.pop(run.task_id, None)
        if not self.enabled:
            return
        at = self._clock() + timedelta(seconds=delay_seconds)
        await self._store(self._state(run, TaskPhase.RETRYING, next_attempt_at=at, error=error))

    async def handed_back(self, raws: list[RawTask], why: str) -> None:
        """Deliveries returned without running: stored before their naks, so they cost no
        run. All at once (one round trip, not one per task): a stopping worker has a deadline.
        """
        if not self.enabled or not raws:
            return
        runs = await asyncio.gather(*(self.admit(raw) for raw in raws))
        await asyncio.gather(
            *(
                self._store(self._state(run, TaskPhase.QUEUED, runs=run.runs_before, reason=why))
                for run in runs
            )
        )

    def forget(self, run: Run) -> None:
        """A run given up without an outcome (handed back at the end of the grace period):
        no late ``running`` step may land over what the task's next delivery writes."""
        if self._runs.get(run.task_id) is run:
            del self._runs[run.task_id]

    async def _buffer(self, state: TaskState) -> None:
        await self._buffer_raw(state_key(state.id), state.to_bytes())

    async def _buffer_raw(self, key: str, data: bytes) -> None:
        """A core publish into the bucket's subject: buffered, no round trip."""
        try:
            await self._nc.publish(f"$KV.{self.bucket}.{key}", data)
        except Exception as exc:
            self.write_failures += 1
            log.debug("task state write %s failed: %s", key, exc)

    async def _store(self, state: TaskState) -> None:
        try:
            await self._js.publish(
                f"$KV.{self.bucket}.{state_key(state.id)}",
                state.to_bytes(),
                timeout=WRITE_TIMEOUT_SECONDS,
            )
        except Exception as exc:
            # The next delivery then counts this one as a run: never fewer runs than allowed.
            self.write_failures += 1
            log.warning("could not store the state of task %s: %s", state.id, exc)

    # ------------------------------------------------------------------ cancellation

    def running(self, run: Run, cancel: Callable[[], None]) -> None:
        """How to tell this run to stop when its task is cancelled."""
        run.cancel = cancel
        if self._cancelled.get(run.task_id) is not None:
            self._tell(run)

    def _tell(self, run: Run) -> None:
        if run.cancel_requested or run.cancel is None:
            return
        run.cancel_requested = True
        log.info("task %s cancelled while running: telling its handler", run.task_id)
        run.cancel()

    def _cancelled_now(self, task_id: str, request: CancelRequest) -> None:
        self._cancelled[task_id] = request
        self._cancelled.move_to_end(task_id)
        while len(self._cancelled) > CANCELLED_MEMORY:
            self._cancelled.popitem(last=False)
        run = self._runs.get(task_id)
        if run is not None:
            self._tell(run)

    async def watch_cancellations(
        self, running: Callable[[], bool], retry_seconds: float = 1.0
    ) -> None:
        """Learn every pending cancellation, then each new one, until stopped."""
        if not self.enabled:
            return
        while running():
            watcher: Any = None
            try:
                kv = await self._js.key_value(self.bucket)
                watcher = await kv.watch(f"{CANCEL_PREFIX}.>")
                while running():
                    try:
                        entry = await watcher.updates(timeout=5.0)
                    except nats.errors.TimeoutError:
                        continue
                    if entry is None:  # the initial values are all delivered
                        self.caught_up.set()
                        continue
                    if not hasattr(entry, "value"):
                        break
                    if entry.operation in ("DEL", "PURGE") or not entry.value:
                        continue
                    self._apply_cancel(entry.key, entry.value)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("watching cancellations of %s failed (%s); retrying", self.bucket, exc)
            finally:
                if watcher is not None:
                    with contextlib.suppress(Exception):
                        await watcher.stop()
            await asyncio.sleep(retry_seconds)

    def _apply_cancel(self, key: str, value: bytes) -> None:
        try:
            task_id = key_id(key.split(".", 1)[1])
            request = CancelRequest.from_bytes(value)
        except (ValueError, IndexError) as exc:
            log.warning("ignoring unreadable cancellation %s: %s", key, exc)
            return
        self._cancelled_now(task_id, request)

    async def wait_caught_up(self) -> None:
        try:
            await asyncio.wait_for(self.caught_up.wait(), CATCH_UP_TIMEOUT_SECONDS)
        except TimeoutError:
            log.warning(
                "pending cancellations of %s not read within %.0fs; consuming anyway (a task "
                "cancelled while queued may still run)",
                self.bucket,
                CATCH_UP_TIMEOUT_SECONDS,
            )
