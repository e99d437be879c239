"""The worker: durable pull consumer, bounded concurrency, validation, outcomes, shutdown.

Thin I/O around the pure parts (``retry``, ``breaker.BreakerGate``, ``dead_letter.build_record``).
Delivery is at least once: a task is acked after its handler returned, so a crash (or a lost
ack) redelivers it after the consumer's ack wait; handlers must be idempotent.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import random
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from nats.aio.client import Client as NatsClient
from nats.aio.client import RawCredentials

from jetpool_protocol.credentials import load_credentials_file
from jetpool_protocol.dead_letter import DeadLetterReason, DeadLetterRecord
from jetpool_protocol.envelope import CancelFlag, ExpiredTask, InvalidTask, Task, parse_task
from jetpool_protocol.keyring import Keyring, load_keyring
from jetpool_protocol.lanes import published_subject
from jetpool_protocol.naming import PoolNames
from jetpool_protocol.security import unseal
from jetpool_protocol.stats import WorkerStats
from jetpool_protocol.task_state import TaskError, TaskPhase
from jetpool_protocol.worker_settings import WorkerSettings, server_urls
from jetpool_worker import retry
from jetpool_worker.batching import BatchFiller
from jetpool_worker.breaker import BreakerGate, watch_control
from jetpool_worker.dead_letter import FirstFailures, RawTask, build_record, publish_record
from jetpool_worker.errors import TaskCancelled
from jetpool_worker.execution import (
    Heartbeats,
    Outcome,
    format_traceback,
    run_batch,
    run_task,
)
from jetpool_worker.handlers import Handler, load_handler
from jetpool_worker.key_leases import Lease
from jetpool_worker.lanes import LanePuller
from jetpool_worker.metrics import HealthServer, Metrics
from jetpool_worker.pull import InboxPuller
from jetpool_worker.settlement import Settlements
from jetpool_worker.start_gates import StartGates
from jetpool_worker.task_tracking import Run, TaskTracker

log = logging.getLogger(__name__)

FETCH_EXPIRY_SECONDS = 0.5
"""Short pull requests: a breaker trip or a stop is seen within this long, and no stale pull
request outlives it on the server."""
CONFIRM_SENT_TIMEOUT_SECONDS = 2.0
"""How long a stopping worker waits for the server to confirm it has every pull request."""
COALESCE_SECONDS = 0.005
"""With fewer than half the slots free, wait this long for more before pulling."""
CANCEL_WAIT_SECONDS = 5.0
"""At the grace period's end, how long cancelled handlers get to end before their tasks go
back (a handler that swallows the cancellation is not waited for longer)."""
LANE_RESWEEP_SECONDS = 0.5
"""A laned worker with free slots but no parked pull on some lane sweeps again this often."""
MEMORY_RESUME_FRACTION = 0.9
LIVENESS_STALE_SECONDS = 10.0
MAX_OUTSTANDING_PINGS = 3
"""Unanswered pings (``nats_ping_interval_seconds`` apart) before the server is given up."""
CONNECT_ATTEMPT_SECONDS = 10.0
"""One connect attempt (nats-py retries inside it) before it is logged and started over."""
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DLQ_RETRY_INITIAL_SECONDS = 0.5
DLQ_RETRY_MAX_SECONDS = 10.0
"""A failed dead-letter publish is retried in-process, doubling from 0.5 s up to this."""


def read_rss_bytes() -> int:
    """Current resident set size (Linux ``/proc``; peak RSS elsewhere)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def utcnow() -> datetime:
    return datetime.now(UTC)


def delivery_info(msg: Any) -> tuple[str, int, int, datetime]:
    """Stream, stream sequence, delivery count and publish time of a JetStream message.

    Reads the ``$JS.ACK`` reply subject directly: nats-py's ``msg.metadata`` builds three
    frozen dataclasses per message for the same four fields.
    """
    tokens: list[str] = msg.reply.split(".") if msg.reply else []
    if len(tokens) == 9 and tokens[0] == "$JS" and tokens[1] == "ACK":
        stream, delivered, sequence, ts = tokens[2], tokens[4], tokens[5], tokens[7]
    elif len(tokens) >= 11 and tokens[0] == "$JS" and tokens[1] == "ACK":
        stream, delivered, sequence, ts = tokens[4], tokens[6], tokens[7], tokens[9]
    else:  # not a JetStream delivery: let nats-py raise its own error
        meta = msg.metadata
        return meta.stream, meta.sequence.stream, meta.num_delivered, meta.timestamp
    return (
        stream,
        int(sequence),
        int(delivered),
        # Exact integer maths, truncated to microseconds as the stream API (get_msg) does.
        EPOCH + timedelta(microseconds=int(ts) // 1000),
    )


@dataclass(eq=False)
class _InFlight:
    msg: Any
    started: float
    """Monotonic time it was taken (arrived)."""
    running_since: float | None = None
    """Monotonic time its handler started; None while it waits (key, rate limit, batch)."""
    task: asyncio.Task[None] | None = None
    released: bool = False
    slots: int = 1
    trial_epoch: int | None = None
    """The HalfOpen epoch this delivery was admitted as a trial of; None if not a trial."""
    leases: list[Lease] = field(default_factory=list)
    """Slots of the tasks' keys (``spec.keyedConcurrency``), freed with the slots."""


@dataclass
class _Counters:
    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    dead_lettered: int = 0
    cancelled: int = 0
    started_at: datetime = field(default_factory=utcnow)


def _tls_context(settings: WorkerSettings) -> ssl.SSLContext | None:
    """Client TLS from the mounted PEM files; raises ``ssl.SSLError``/``OSError`` when bad."""
    if not (settings.nats_tls_ca_file or settings.nats_tls_cert_file):
        return None
    context = ssl.create_default_context(cafile=settings.nats_tls_ca_file)
    if settings.nats_tls_cert_file:
        context.load_cert_chain(settings.nats_tls_cert_file, settings.nats_tls_key_file)
    return context


def _keyring(path: str | None, what: str) -> Keyring | None:
    if not path:
        return None
    keys = load_keyring(path)
    # Ids only, never keys: during a rotation this says which keys a worker accepts.
    log.info("%s keys %s (current %s)", what, ", ".join(keys.ids), keys.current.id)
    return keys


class Worker:
    """One worker process's runtime. ``await Worker(settings).run(stop_event)``."""

    def __init__(
        self,
        settings: WorkerSettings,
        *,
        handler: Handler | None = None,
        rss_reader: Callable[[], int] = read_rss_bytes,
        rand: retry.RandomSource = random.random,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.settings = settings
        self.worker_id = settings.worker_id or f"{socket.gethostname()}-{os.getpid()}"
        # Checked before any connection attempt: a bad file must stop the worker with one
        # clear line (CredentialsError) instead of reaching nats-py, which can spin forever
        # on some malformed files. Read once: rotate credentials with a rollout restart.
        self.credentials = (
            load_credentials_file(settings.nats_credentials_file)
            if settings.nats_credentials_file
            else None
        )
        self.tls = _tls_context(settings)
        self.handler = handler or load_handler(settings.handler)
        self.policy = retry.RetryPolicy.from_settings(settings)
        # Keyrings are read once, like credentials: a rotation rolls the workers.
        self.signing_keys = _keyring(settings.signing_key_file, "signing")
        self.encryption_keys = _keyring(settings.encryption_key_file, "encryption")
        self.metrics = Metrics(settings.pool_name, settings.pool_namespace, self.worker_id)
        self.metrics.in_flight.set_function(lambda: self._slots_taken)
        self._tally = self.metrics.tally
        self.gate = BreakerGate(self.worker_id)
        self.heartbeats = Heartbeats(settings.effective_heartbeat_seconds)
        self.first_failures = FirstFailures()
        self.counters = _Counters()
        self.tracker = TaskTracker(settings, self.worker_id, clock)
        self.gates = StartGates(settings, self.worker_id, self.metrics, rand)
        self.gates.check_handler(self.handler)
        self._ordered_base = (
            PoolNames(settings.pool_namespace, settings.pool_name).task_base
            if any(lane.single for lane in settings.pull_lanes)
            else ""
        )
        """The pool's subject base when it has ordered keys (their stored subjects carry the
        partition, which the task's own subject does not); empty otherwise."""
        self._rss_reader = rss_reader
        self._rand = rand
        self._clock = clock
        self._in_flight: set[_InFlight] = set()
        self._slots_taken = 0
        self._wake = asyncio.Event()
        """Set when pulling may be possible again: a slot freed, a pull request ended, a stop."""
        self._stop = asyncio.Event()
        self._arrivals: list[Any] = []
        self._flush_scheduled = False
        self._handing_back: set[asyncio.Task[None]] = set()
        self._puller: InboxPuller | LanePuller | None = None
        self._batches: BatchFiller[tuple[Any, int | None]] | None = (
            BatchFiller(self.handler.batch_max_size, self.handler.batch_fill_timeout)
            if self.handler.batch_max_size is not None
            else None
        )
        self._fill_timer: asyncio.TimerHandle | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=settings.concurrency, thread_name_prefix="jetpool-handler"
        )
        self.memory_paused = False
        self.connected = False
        self.consuming = False
        self.draining = False
        self.last_tick = time.monotonic()
        self.health_server: HealthServer | None = None
        self.fetch_requests = 0
        self._pulled_at: float | None = None
        """When the worker last asked for tasks or got one (monotonic)."""
        self._lingering = 0
        self.dead_letter_publish_failures = 0
        self._nc: Any = None
        self.settlements = Settlements(None, self.settings.inbox_prefix, 0)
        """Replaced once connected; confirmed acks, naks and terms (:mod:`.settlement`)."""
        self._js: Any = None

    # ------------------------------------------------------------------ lifecycle

    def request_stop(self) -> None:
        self._stop.set()
        self._wake.set()

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Consume until ``stop`` (or :meth:`request_stop`), then shut down gracefully."""
        if stop is not None:
            stopper = asyncio.create_task(self._forward_stop(stop))
        if self.health_server is None:
            self.start_health_server()
        background: list[asyncio.Task[Any]] = [asyncio.create_task(self._tick_liveness())]
        try:
            nc = await self._connect()
            if nc is None:
                return
            self._nc, self._js = nc, nc.jetstream()
            self.settlements = Settlements(
                nc, self.settings.inbox_prefix, self.settings.ack_wait_seconds
            )
            background += await self.settlements.start()
            self.tracker.bind(nc, self._js)
            background += self.gates.bind(nc, self._js)
            puller = await self._bind()
            if puller is None:
                return
            background += [
                asyncio.create_task(self.heartbeats.run()),
                asyncio.create_task(
                    watch_control(
                        self._js,
                        self.settings.control_bucket,
                        self.settings.control_key,
                        self.gate,
                        running=lambda: not self._stop.is_set(),
                    )
                ),
                asyncio.create_task(self._publish_stats()),
                asyncio.create_task(self._guard_memory()),
                asyncio.create_task(
                    self.tracker.watch_cancellations(running=lambda: not self._stop.is_set())
                ),
                asyncio.create_task(self.tracker.write_running_states()),
            ]
            await self.tracker.wait_caught_up()
            self.consuming = True
            log.info(
                "consuming %s/%s with concurrency %d",
                self.settings.stream,
                self.settings.consumer,
                self.settings.concurrency,
            )
            await self._fetch_loop(puller)
            await self._shutdown(puller)
        finally:
            self.consuming = False
            for bg in background:
                bg.cancel()
            _, stuck = await asyncio.wait(background, timeout=2.0)
            if stuck:  # a cancellation was swallowed by a client call: never hang on it
                log.debug("%d background tasks still stopping", len(stuck))
            log.debug("background tasks stopped")
            if self._nc is not None and not self._nc.is_closed:
                with contextlib.suppress(Exception):
                    await self._nc.drain()
            log.debug("connection drained")
            if self.health_server is not None:
                self.health_server.stop()
            self._executor.shutdown(wait=False, cancel_futures=True)
            if stop is not None:
                stopper.cancel()
            log.info("worker stopped")

    async def _forward_stop(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self.request_stop()

    def start_health_server(self) -> None:
        """Serve metrics and probes; raises ``OSError`` when the port cannot be bound."""
        if self.settings.metrics_port and self.health_server is None:
            self.health_server = HealthServer(
                self.settings.metrics_port, self.metrics, self.healthy, self.ready
            ).start()

    def healthy(self) -> tuple[bool, str]:
        stale = time.monotonic() - self.last_tick
        if stale > LIVENESS_STALE_SECONDS:
            return False, f"event loop has not ticked for {stale:.0f}s"
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        if not self.connected:
            return False, "not connected to NATS"
        if not self.consuming or self.draining:
            return False, "not consuming"
        return True, "ok"

    async def _tick_liveness(self) -> None:
        while True:
            self.last_tick = time.monotonic()
            await asyncio.sleep(0.5)

    async def _connect(self) -> Any:
        s = self.settings
        options: dict[str, Any] = {
            "servers": server_urls(s.nats_url),
            "name": self.worker_id,
            # every inbox (replies, pulls, KV watch) under the pool's own prefix: a per-pool
            # NATS user may subscribe there only (jetpool_protocol.permissions)
            "inbox_prefix": s.inbox_prefix,
            "max_reconnect_attempts": -1,
            "reconnect_time_wait": 0.5,
            "ping_interval": s.nats_ping_interval_seconds,
            "max_outstanding_pings": MAX_OUTSTANDING_PINGS,
            "connect_timeout": 2,
            "drain_timeout": 5,
            "disconnected_cb": self._on_disconnected,
            "reconnected_cb": self._on_reconnected,
            "error_cb": self._on_error,
        }
        if self.credentials is not None:
            options["user_credentials"] = RawCredentials(self.credentials.render())
        if self.tls is not None:
            options["tls"] = self.tls
        last_error: list[Exception] = []

        async def on_error(exc: Exception) -> None:
            last_error[:] = [exc]
            await self._on_error(exc)

        options["error_cb"] = on_error
        while not self._stop.is_set():
            last_error.clear()
            nc = NatsClient()
            attempt = asyncio.create_task(nc.connect(**options))
            stopped = asyncio.create_task(self._stop.wait())
            # Bounded attempts, so a stop is honoured and every failure is logged with its
            # cause: nats-py retries an unreachable server silently, and never returns after
            # a failed TLS verification.
            await asyncio.wait(
                {attempt, stopped},
                timeout=CONNECT_ATTEMPT_SECONDS,
                return_when=asyncio.FIRST_COMPLETED,
            )
            stopped.cancel()
            if attempt.done() and not attempt.cancelled() and attempt.exception() is None:
                self.connected = True
                return nc
            if not attempt.done():
                attempt.cancel()
                await asyncio.wait({attempt}, timeout=1.0)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.close(), 1.0)
            if self._stop.is_set():
                break
            failed = attempt.exception() if attempt.done() and not attempt.cancelled() else None
            cause = failed or (last_error[0] if last_error else None)
            reason = f"{type(cause).__name__}: {cause}" if cause else "no answer in time"
            log.warning("cannot connect to %s: %s; retrying", s.nats_url, reason)
            await self._sleep_unless_stopped(1.0)
        return None

    async def _on_disconnected(self) -> None:
        self.connected = False
        if not self._stop.is_set():
            log.warning("disconnected from NATS; reconnecting")

    async def _on_reconnected(self) -> None:
        self.connected = True
        log.info("reconnected to NATS")

    async def _on_error(self, exc: Exception) -> None:
        if "permissions violation for subscription" in str(exc).lower():
            # No reply ever reaches a worker refused its own inboxes; name the permission its
            # user lacks (e.g. a per-pool user issued with the older "_INBOX.>" set).
            log.error(
                "%s: the worker's NATS user must be allowed to subscribe to %s.> "
                '(docs/operator.md, "Per-pool NATS users")',
                exc,
                self.settings.inbox_prefix,
            )
            return
        log.debug("nats client error: %s", exc)

    async def _bind(self) -> InboxPuller | LanePuller | None:
        """Bind to the operator-made durable consumers (one, or one per lane of a laned pool),
        waiting for them if they are not there yet."""
        s = self.settings
        lanes = s.pull_lanes
        while not self._stop.is_set():
            try:
                for lane in lanes:
                    await self._js.consumer_info(s.stream, lane.consumer)
                puller: InboxPuller | LanePuller
                if len(lanes) > 1:
                    puller = LanePuller(
                        self._nc,
                        s.stream,
                        lanes,
                        on_message=self._arrive,
                        on_change=self._wake.set,
                        ordered_pulls=s.ordered_pulls_per_worker,
                    )
                else:
                    puller = InboxPuller(
                        self._nc,
                        s.stream,
                        s.consumer,
                        on_message=self._arrive,
                        on_change=self._wake.set,
                        expires=FETCH_EXPIRY_SECONDS,
                    )
                await puller.start()
                if isinstance(puller, LanePuller):
                    self.metrics.watch_lanes(puller.pulled)
                self._puller = puller
                return puller
            except Exception as exc:
                log.error("consumer %s/%s is not available: %s", s.stream, s.consumer, exc)
                await self._sleep_unless_stopped(2.0)
        return None

    async def _sleep_unless_stopped(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    # ------------------------------------------------------------------ fetching

    def _pause_reason(self) -> str:
        if self.memory_paused:
            return "memory"
        if self.gate.allowance() == 0:
            return "breaker"
        return ""

    async def _wait_any(self, *events: asyncio.Event, within: float) -> None:
        waiters = [asyncio.create_task(e.wait()) for e in events]
        try:
            await asyncio.wait(waiters, timeout=within, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()

    async def _fetch_loop(self, puller: InboxPuller | LanePuller) -> None:
        """Keep pull requests out for exactly the free slots (within the breaker's allowance).

        Deliveries arrive through :meth:`_arrive`, not here: this loop only asks for them.
        """
        paused_for = ""
        while not self._stop.is_set():
            try:
                reason = self._pause_reason()
                if reason != paused_for:
                    self._show_pause(paused_for, reason)
                    paused_for = reason
                if reason:
                    self.gate.changed.clear()
                    await self._wait_any(self.gate.changed, self._stop, within=0.1)
                    continue
                if not self._nc.is_connected:
                    await self._sleep_unless_stopped(0.1)
                    continue
                want = await self._pull_size(puller)
                if want <= 0:
                    continue
                self.fetch_requests += 1
                self._pulled_at = time.monotonic()
                if isinstance(puller, InboxPuller):
                    await puller.pull(want)
                elif await puller.fill(want) == 0:
                    await self._wait_wake(LANE_RESWEEP_SECONDS)
            except asyncio.CancelledError:
                raise
            except Exception:
                # Nothing may kill the loop: log, breathe, go on.
                log.exception("fetch loop error")
                await self._sleep_unless_stopped(0.2)
        self._show_pause(paused_for, "")

    def _wanted(self, puller: InboxPuller | LanePuller) -> int:
        """How many more messages to ask for: free slots and trial budget, minus those owed."""
        s = self.settings
        owed = puller.owed()
        want = min(s.concurrency - self._slots_taken - owed, s.effective_fetch_batch)
        allowance = self.gate.allowance()
        if allowance is not None:
            want = min(want, allowance - owed)
        return want

    async def _pull_size(self, puller: InboxPuller | LanePuller) -> int:
        """The next pull's batch; waits briefly for a few more free slots so pulls come in
        batches, not singles. 0 when the worker should stop or pause instead."""
        s = self.settings
        low_water = max(1, min(s.effective_fetch_batch, s.concurrency) // 2)
        deadline: float | None = None
        while not self._stop.is_set() and not self._pause_reason():
            self._wake.clear()  # before looking: a wake-up from here on is not missed
            want = self._wanted(puller)
            if want >= low_water:
                return want
            now = time.monotonic()
            if want > 0:
                if deadline is None:
                    deadline = now + COALESCE_SECONDS
                elif now >= deadline:
                    return want
                await self._wait_wake(deadline - now)
            else:
                deadline = None
                # Also wakes for requests whose 408 was lost, and for breaker changes.
                await self._wait_wake(0.1)
        return 0

    async def _wait_wake(self, within: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                await self._wake.wait()

    async def _arrive(self, msg: Any) -> None:
        """A delivery on the inbox. Dispatched from a soon callback, so a burst read in one go
        is admitted (and batched for batch handlers) together."""
        self._arrivals.append(msg)
        self._pulled_at = time.monotonic()
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_arrivals)

    def _flush_arrivals(self) -> None:
        self._flush_scheduled = False
        msgs, self._arrivals = self._arrivals, []
        if not msgs:
            return
        if self._stop.is_set():
            self._hand_back_later(msgs, "the worker is stopping")
            return
        room = max(0, self.settings.concurrency - self._slots_taken)
        keep, trial_epoch = self.gate.admit(min(room, len(msgs)))
        self._dispatch(msgs[:keep], trial_epoch)
        if keep < len(msgs):
            why = "the circuit breaker changed mid-pull" if keep < room else "no free slot"
            self._hand_back_later(msgs[keep:], why)

    def _hand_back_later(self, msgs: list[Any], why: str) -> None:
        task = asyncio.get_running_loop().create_task(self._hand_back(msgs, why))
        self._handing_back.add(task)
        task.add_done_callback(self._handing_back.discard)

    def _show_pause(self, old: str, new: str) -> None:
        if old:
            self.metrics.set_paused(old, False)
            log.debug("fetching resumed (was paused: %s)", old)
        if new:
            self.metrics.set_paused(new, True)
            detail = self.gate.paused_reason if new == "breaker" else new
            if detail == "breaker_state_unknown":
                log.debug("waiting for the first read of the control state")
            else:
                log.warning("fetching paused: %s", detail)

    def _take(self, msgs: list[Any], *, held: bool = False) -> _InFlight:
        """In flight from now; ``held``: their slots and heartbeats were taken on arrival."""
        entry = _InFlight(msg=msgs[0] if len(msgs) == 1 else msgs, started=time.monotonic())
        entry.slots = len(msgs)
        self._in_flight.add(entry)
        if not held:
            self._slots_taken += entry.slots
            for m in msgs:
                self.heartbeats.add(m)
        return entry

    def _release_slots(self, entry: _InFlight) -> None:
        self._slots_taken -= entry.slots
        self.gates.free(entry.leases)
        self._wake.set()

    def _finish(self, entry: _InFlight, msgs: list[Any], lingering: list[Any]) -> None:
        self._in_flight.discard(entry)
        for m in msgs:
            self.heartbeats.remove(m)
        alive = [f for f in lingering if f is not None]
        if not alive:
            self._release_slots(entry)
            return
        # A timed-out sync handler still runs in its thread: keep the slot until it returns.
        self.metrics.lingering_threads.inc()
        self._lingering += 1
        loop = asyncio.get_running_loop()

        def done(_: Any) -> None:
            loop.call_soon_threadsafe(self._lingering_done, entry)

        alive[0].add_done_callback(done)

    def _lingering_done(self, entry: _InFlight) -> None:
        self.metrics.lingering_threads.dec()
        self._lingering -= 1
        self._release_slots(entry)

    def _hand_back_delay(self) -> float:
        """Delay a returned task until our own pull requests have expired: an immediate
        redelivery would land in one of them again (and use up a delivery attempt)."""
        return self._puller.quiet_in() if self._puller is not None else 0.0

    async def _hand_back(self, msgs: list[Any], why: str, delay: float | None = None) -> None:
        """Nak, by default delayed only past our own pull requests: another worker may run
        them. The task's state says so first, so the delivery uses up no attempt."""
        if delay is None:
            delay = self._hand_back_delay()
        with contextlib.suppress(Exception):
            await self.tracker.handed_back([self._raw(m) for m in msgs], why)
        for m in msgs:
            with contextlib.suppress(Exception):
                await self.settlements.nak(m, delay or None)
        log.info("handed %d fetched tasks back: %s", len(msgs), why)

    def _dispatch(self, msgs: list[Any], trial_epoch: int | None = None) -> None:
        """One asyncio task per delivery (or batch): the handler must own its task, since
        timeouts, task groups and cancel scopes in user code act on the current task."""
        loop = asyncio.get_running_loop()
        size = self.handler.batch_max_size
        if size is None:
            for m in msgs:
                entry = self._take([m])
                entry.trial_epoch = trial_epoch
                entry.task = loop.create_task(self._process_one(entry, m))
        else:
            self._hold_for_batches(msgs, trial_epoch)

    def _hold_for_batches(self, msgs: list[Any], trial_epoch: int | None) -> None:
        """Batch handlers: arrivals wait (slots taken, heartbeats on) until a batch is full or
        its fill timeout passes (``batching.BatchFiller``)."""
        assert self._batches is not None
        self._slots_taken += len(msgs)
        for m in msgs:
            self.heartbeats.add(m)
        for batch in self._batches.add([(m, trial_epoch) for m in msgs], time.monotonic()):
            self._run_batch(batch)
        self._arm_fill_timer()

    def _run_batch(self, batch: list[tuple[Any, int | None]]) -> None:
        msgs = [m for m, _ in batch]
        entry = self._take(msgs, held=True)
        entry.trial_epoch = next((e for _, e in batch if e is not None), None)
        entry.task = asyncio.get_running_loop().create_task(self._process_batch(entry, msgs))

    def _arm_fill_timer(self) -> None:
        due = None if self._batches is None else self._batches.due_at()
        if due is None or self._fill_timer is not None:
            return
        self._fill_timer = asyncio.get_running_loop().call_later(
            max(0.0, due - time.monotonic()), self._fill_due
        )

    def _fill_due(self) -> None:
        self._fill_timer = None
        assert self._batches is not None
        batch = self._batches.take_due(time.monotonic())
        if batch:
            self._run_batch(batch)
        self._arm_fill_timer()

    def _hand_back_held_batch(self) -> None:
        """A stopping worker returns the tasks it holds for a batch, unrun."""
        if self._fill_timer is not None:
            self._fill_timer.cancel()
            self._fill_timer = None
        held = [] if self._batches is None else [m for m, _ in self._batches.take_all()]
        if held:
            self._slots_taken -= len(held)
            for m in held:
                self.heartbeats.remove(m)
            self._hand_back_later(held, "the worker is stopping")

    # ------------------------------------------------------------------ processing

    def _raw(self, msg: Any) -> RawTask:
        stream, sequence, attempt, published_at = delivery_info(msg)
        return RawTask(
            subject=published_subject(msg.subject, self._ordered_base)
            if self._ordered_base
            else msg.subject,
            stream=stream,
            sequence=sequence,
            payload=msg.data,
            headers=dict(msg.headers) if msg.headers else {},
            attempt=attempt,
            published_at=published_at,
        )

    async def _process_one(self, entry: _InFlight, msg: Any) -> None:
        lingering: list[Any] = []
        run: Run | None = None
        try:
            raw = self._raw(msg)
            admitted = await self._admit(msg, raw, entry)
            if admitted is None:
                self.gate.returned(entry.trial_epoch)
                return
            task, run = admitted
            entry.running_since = time.monotonic()
            self.tracker.started(run)
            self.tracker.running(run, lambda: self._cancel_running(entry, task))
            try:
                outcome = await run_task(
                    self.handler,
                    task,
                    timeout_seconds=self.settings.task_timeout_seconds,
                    executor=self._executor,
                )
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if entry.released or not run.cancel_requested or current is None:
                    raise
                current.uncancel()  # our own cancel of the handler, not a stop of the worker
                outcome = Outcome(error=TaskCancelled(f"task {task.id} was cancelled"))
            run.cancel = None
            lingering.append(outcome.lingering)
            if not entry.released:
                await self._settle(msg, raw, outcome, entry.trial_epoch, run)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("could not settle a task; it will be redelivered after the ack wait")
        finally:
            if run is not None:
                self.tracker.forget(run)
            self._finish(entry, [msg], lingering)

    async def _process_batch(self, entry: _InFlight, msgs: list[Any]) -> None:
        lingering: list[Any] = []
        admitted: list[tuple[Any, RawTask, Task, Run]] = []
        try:
            for msg in msgs:
                try:
                    raw = self._raw(msg)
                    one = await self._admit(msg, raw, entry)
                except Exception:
                    log.exception("could not admit a task of a batch")
                    continue
                if one is None:
                    self.gate.returned(entry.trial_epoch)
                else:
                    admitted.append((msg, raw, *one))
                    self.tracker.started(one[1])  # (a batch is not cancelled mid-run)
            if not admitted:
                return
            entry.running_since = time.monotonic()
            outcomes = await run_batch(
                self.handler,
                [t for _, _, t, _ in admitted],
                timeout_seconds=self.settings.task_timeout_seconds,
                executor=self._executor,
            )
            lingering.append(outcomes[0].lingering)
            if entry.released:
                return
            for (msg, raw, _, run), outcome in zip(admitted, outcomes, strict=True):
                try:
                    await self._settle(msg, raw, outcome, entry.trial_epoch, run)
                except Exception:
                    log.exception("could not settle a task of a batch")
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("batch failed unexpectedly; its tasks will be redelivered")
        finally:
            for _, _, _, run in admitted:  # no late 'running' over a next delivery's steps
                self.tracker.forget(run)
            self._finish(entry, msgs, lingering)

    async def _admit(self, msg: Any, raw: RawTask, entry: _InFlight) -> tuple[Task, Run] | None:
        """Validate a delivery and count its runs; settle it (and return None) when it must
        not run: cancelled, invalid, expired, or out of attempts."""
        s = self.settings
        run = await self.tracker.admit(raw)
        cancelled = self.tracker.is_cancelled(raw.task_id)
        if cancelled is not None:
            await self._cancel_queued(msg, run, cancelled.by)
            return None
        now = self._clock()
        try:
            if len(raw.payload) > s.max_payload_bytes:
                raise InvalidTask(
                    f"payload is {len(raw.payload)} bytes, limit is {s.max_payload_bytes}"
                )
            payload = unseal(
                raw.payload,
                raw.headers,
                subject=raw.subject,
                signing_keys=self.signing_keys,
                encryption_keys=self.encryption_keys,
                require_signed=s.require_signed,
            )
            task = parse_task(
                subject=raw.subject,
                payload=payload,
                headers=raw.headers,
                stream_sequence=raw.sequence,
                attempt=run.attempt,
                published_at=raw.published_at,
                now=now,
                max_payload_bytes=s.max_payload_bytes,
                default_ttl_seconds=s.task_ttl_seconds,
                cancellation=CancelFlag() if self.tracker.enabled else None,
            )
        except InvalidTask as exc:
            await self._dead_letter(
                msg, run, DeadLetterReason.INVALID, "InvalidTask", str(exc), ran=False
            )
            return None
        except ExpiredTask as exc:
            await self._dead_letter(
                msg, run, DeadLetterReason.EXPIRED, "ExpiredTask", str(exc), ran=False
            )
            return None
        except Exception as exc:
            # Whatever hostile input makes validation itself fail (a header value no parser
            # expected): the message can never run, so it is invalid, never left unsettled.
            await self._dead_letter(
                msg,
                run,
                DeadLetterReason.INVALID,
                "InvalidTask",
                f"validation failed with {type(exc).__name__}: {exc}",
                traceback=format_traceback(exc),
                ran=False,
            )
            return None
        if run.runs_before >= self.policy.max_attempts:
            await self._dead_letter(
                msg,
                run,
                DeadLetterReason.MAX_ATTEMPTS,
                "AttemptsExhausted",
                f"ran {run.runs_before} times in {raw.attempt - 1} deliveries, limit is "
                f"{self.policy.max_attempts}; the last runs reported no outcome (worker "
                "crash or ack wait expired)",
                ran=False,
            )
            return None
        if not await self._may_start(msg, run, entry):
            return None
        if self.gates.active and task.deadline is not None and self._clock() > task.deadline:
            self.gates.free(entry.leases)
            await self._dead_letter(
                msg,
                run,
                DeadLetterReason.EXPIRED,
                "ExpiredTask",
                f"its deadline {task.deadline.isoformat()} passed while it waited for its key "
                "or the rate limit",
                ran=False,
            )
            return None
        return task, run

    async def _may_start(self, msg: Any, run: Run, entry: _InFlight) -> bool:
        """Wait until the pool's start limits let the task run (``start_gates``); False when
        it went back to the queue or was cancelled while it waited."""
        if not self.gates.active:
            return True
        go_back = await self.gates.wait(run.raw.headers, entry.leases)
        if go_back is not None:
            await self._hand_back([msg], go_back.why, delay=go_back.delay)
            return False
        cancelled = self.tracker.is_cancelled(run.task_id)
        if cancelled is not None:
            self.gates.free(entry.leases)
            await self._cancel_queued(msg, run, cancelled.by)
            return False
        return True

    def _cancel_running(self, entry: _InFlight, task: Task) -> None:
        """Tell a running handler its task was cancelled: the flag for any handler, and a
        cancellation of its asyncio task for an async one."""
        if task.cancellation is not None:
            task.cancellation.set()
        if self.handler.is_async and entry.task is not None and not entry.released:
            entry.task.cancel()

    async def _cancel_queued(self, msg: Any, run: Run, by: str) -> None:
        # the final state is buffered ahead of the ack: no acked task without its outcome
        await self.tracker.finished(
            run, TaskPhase.CANCELLED, reason=f"cancelled by {by} before it ran", ran=False
        )
        await self.settlements.ack(msg)
        self.counters.cancelled += 1
        log.info(
            "task %s was cancelled before it ran",
            run.task_id,
            extra={"task_id": run.task_id},
        )

    async def _settle(
        self,
        msg: Any,
        raw: RawTask,
        outcome: Outcome,
        trial_epoch: int | None,
        run: Run,
    ) -> None:
        ok = outcome.error is None
        self._tally.observe(outcome.duration_seconds, ok)
        self.gate.finished(ok, trial_epoch)
        if outcome.error is None:
            await self.settlements.ack(msg)
            self.counters.succeeded += 1
            if raw.attempt > 1:  # only a redelivery can have a remembered failure
                self.first_failures.forget(raw.sequence)
            await self.tracker.succeeded(run, outcome.result)
            return
        error = outcome.error
        error_type = retry.error_type_name(error)
        if run.cancel_requested:
            await self.settlements.ack(msg)
            self.counters.cancelled += 1
            self.first_failures.forget(raw.sequence)
            await self.tracker.finished(
                run,
                TaskPhase.CANCELLED,
                error=TaskError.of(error_type, str(error) or error_type),
                reason="cancelled while running",
            )
            log.info("task %s cancelled while running", raw.task_id, extra={"task_id": raw.task_id})
            return
        self.counters.failed += 1
        self.metrics.failed(error_type)
        decision = retry.decide(error, run.attempt, self.policy, self._rand)
        if decision.action is retry.Action.RETRY:
            self.first_failures.record(raw.sequence, self._clock())
            await self.tracker.retrying(
                run, decision.delay_seconds, TaskError.of(error_type, str(error) or error_type)
            )
            await self.settlements.nak(msg, decision.delay_seconds)
            self.counters.retried += 1
            self.metrics.retried(error_type)
            log.info(
                "task %s attempt %d failed with %s: %s; retry in %.2fs",
                raw.task_id,
                run.attempt,
                error_type,
                str(error)[:200],
                decision.delay_seconds,
                extra={"task_id": raw.task_id, "error_type": error_type},
            )
            return
        assert decision.reason is not None
        await self._dead_letter(
            msg,
            run,
            decision.reason,
            error_type,
            str(error) or error_type,
            traceback=outcome.traceback,
        )

    async def _dead_letter(
        self,
        msg: Any,
        run: Run,
        reason: DeadLetterReason,
        error_type: str,
        message: str,
        *,
        traceback: str | None = None,
        ran: bool = True,
    ) -> None:
        raw = run.raw
        now = self._clock()
        first = (
            now if raw.attempt == 1 else self.first_failures.first(raw.sequence, raw.published_at)
        )
        record = build_record(
            raw,
            settings=self.settings,
            worker=self.worker_id,
            reason=reason,
            error_type=error_type,
            error_message=message,
            traceback=traceback,
            first_failure_at=first,
            last_failure_at=now,
            runs=run.attempt if ran else run.runs_before,
        )
        if not await self._publish_dead_letter(msg, raw, record):
            return
        await self.settlements.term(msg)
        self.first_failures.forget(raw.sequence)
        self.counters.dead_lettered += 1
        self.metrics.dead_lettered(reason, error_type)
        await self.tracker.finished(
            run,
            TaskPhase.EXPIRED if reason is DeadLetterReason.EXPIRED else TaskPhase.DEAD_LETTERED,
            error=TaskError.of(error_type, message),
            reason=str(reason),
            ran=ran,
        )
        log.warning(
            "task %s dead-lettered (%s, %s): %s",
            raw.task_id,
            reason,
            error_type,
            message,
            extra={"task_id": raw.task_id, "reason": str(reason), "error_type": error_type},
        )

    async def _publish_dead_letter(self, msg: Any, raw: RawTask, record: DeadLetterRecord) -> bool:
        """Publish until stored; False (task handed back) only when the worker is stopping.

        The message stays in flight meanwhile, kept alive by the heartbeats: a nak with a
        delay would have the consumer's max_deliver run out during a longer outage, and a
        record that can never be stored would loop forever. Oversized records are cut to the
        server's max_payload (``payload_truncated``) rather than never stored.
        """
        failures = 0
        while True:
            try:
                await publish_record(
                    self._js, self.settings, record, raw.dedup_id, max_payload=self._max_payload()
                )
                return True
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                self.dead_letter_publish_failures += 1
                if self._stop.is_set():
                    log.error(
                        "dead-letter publish for task %s failed: %s; stopping, handing it back",
                        raw.task_id,
                        exc,
                    )
                    with contextlib.suppress(Exception):
                        # Delayed just past our own pull requests' expiry, so the redelivery
                        # goes to another worker, not back into this stopping one's buffer.
                        await self.settlements.nak(msg, 2 * FETCH_EXPIRY_SECONDS)
                    return False
                delay = min(DLQ_RETRY_MAX_SECONDS, DLQ_RETRY_INITIAL_SECONDS * 2 ** (failures - 1))
                log.error(
                    "dead-letter publish for task %s failed (%d so far): %s; retrying in %.1fs",
                    raw.task_id,
                    failures,
                    exc,
                    delay,
                    extra={"task_id": raw.task_id},
                )
                await self._sleep_unless_stopped(delay)

    def _max_payload(self) -> int | None:
        value = getattr(self._nc, "max_payload", None)
        return value if isinstance(value, int) and value > 0 else None

    # ------------------------------------------------------------------ background

    async def _guard_memory(self) -> None:
        limit = self.settings.memory_limit_bytes
        while True:
            try:
                rss = self._rss_reader()
                self.metrics.rss.set(rss)
                if limit is not None:
                    if not self.memory_paused and rss > limit:
                        self.memory_paused = True
                        log.warning("memory guard: RSS %d above limit %d; pausing", rss, limit)
                    elif self.memory_paused and rss < limit * MEMORY_RESUME_FRACTION:
                        self.memory_paused = False
                        log.info("memory guard: RSS %d below 90%% of limit; fetching again", rss)
            except Exception:
                log.exception("memory guard failed")
            await asyncio.sleep(0.25)

    def stats(self) -> WorkerStats:
        now = time.monotonic()
        # the oldest *running* handler: a task waiting for its key or the rate limit is not stuck
        oldest = max(
            (now - e.running_since for e in self._in_flight if e.running_since is not None),
            default=0.0,
        )
        reason = "draining" if self.draining else self._pause_reason()
        return WorkerStats(
            worker=self.worker_id,
            pool=self.settings.pool_name,
            namespace=self.settings.pool_namespace,
            at=self._clock(),
            started_at=self.counters.started_at,
            succeeded=self.counters.succeeded,
            failed=self.counters.failed,
            retried=self.counters.retried,
            dead_lettered=self.counters.dead_lettered,
            in_flight=self._slots_taken,
            oldest_in_flight_seconds=oldest,
            fetching=not reason,
            paused_reason=reason,
            concurrency=self.settings.concurrency,
            lingering_threads=self._lingering,
            pulled_ago_seconds=None if self._pulled_at is None else now - self._pulled_at,
            control_read_ago_seconds=self.gate.read_age(),
            control_epoch=self.gate.state.epoch,
            trial_succeeded=self.gate.trial_succeeded,
            trial_failed=self.gate.trial_failed,
        )

    async def _publish_stats(self) -> None:
        while True:
            try:
                if self._nc.is_connected:
                    await self._nc.publish(
                        self.settings.stats_subject, self.stats().model_dump_json().encode()
                    )
            except Exception as exc:
                log.debug("stats publish failed: %s", exc)
            await asyncio.sleep(self.settings.stats_interval_seconds)

    # ------------------------------------------------------------------ shutdown

    async def _shutdown(self, puller: InboxPuller | LanePuller) -> None:
        """Finish in-flight work within the grace period, hand the rest back at once."""
        self.draining = True
        self.metrics.set_paused("draining", True)
        self.gates.close()  # tasks waiting to start go back now, not at the grace's end
        self._hand_back_held_batch()
        grace = self.settings.shutdown_grace_seconds
        log.info("draining: %d tasks in flight, grace %.1fs", len(self._in_flight), grace)
        pending = [e.task for e in self._in_flight if e.task is not None]
        if pending:
            await asyncio.wait(pending, timeout=grace)
        left = [e for e in self._in_flight if e.task is not None and not e.task.done()]
        for entry in left:
            entry.released = True
            assert entry.task is not None
            entry.task.cancel()
        if left:
            # The handlers end before their tasks go back: an ordered task handed back while
            # its handler still ran could start on another worker alongside it.
            await asyncio.wait([e.task for e in left if e.task], timeout=CANCEL_WAIT_SECONDS)
        delay = self._hand_back_delay()
        for entry in left:
            msgs = entry.msg if isinstance(entry.msg, list) else [entry.msg]
            for m in msgs:
                with contextlib.suppress(Exception):
                    await self.settlements.nak(m, delay or None)
        if left:
            log.warning("grace period over: handed %d unfinished tasks back", len(left))
        log.debug("in-flight work settled")
        await self._close_inbox(puller)
        log.debug("late deliveries returned")
        await self.gates.wait_released()
        if self._nc.is_connected:
            missing = await self.settlements.drain(CONFIRM_SENT_TIMEOUT_SECONDS)
            if missing:
                log.warning("%d acknowledgements unconfirmed at exit: redelivered later", missing)

    async def _close_inbox(self, puller: InboxPuller | LanePuller) -> None:
        """Wait out our pull requests (each expires within FETCH_EXPIRY_SECONDS), then close
        the inbox; whatever arrives meanwhile is nak'd by :meth:`_flush_arrivals`."""
        if self._nc.is_connected:
            await puller.confirm_sent(CONFIRM_SENT_TIMEOUT_SECONDS)
        while puller.pulling and self._nc.is_connected:
            self._wake.clear()
            await self._wait_wake(puller.quiet_in())
        await puller.close()
        self._flush_arrivals()
        if self._handing_back:
            await asyncio.gather(*self._handing_back, return_exceptions=True)
