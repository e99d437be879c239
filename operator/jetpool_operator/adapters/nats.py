"""NATS access for the operator: JetStream management, consumer backlog, control state, stats.

Backlog is read with ``$JS.API.CONSUMER.INFO`` over an authenticated NATS connection: the
consumer leader answers, so counts are never a stale follower's (the failure mode KEDA's
monitoring-port scaler had to work around). One connection per (url, credentials) is shared by
every pool that uses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats
import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.client import RawCredentials
from nats.aio.msg import Msg
from nats.js import api
from nats.js.api import KeyValueConfig, StorageType
from nats.js.client import JetStreamContext
from nats.js.errors import APIError, NotFoundError
from nats.js.kv import KeyValue

from jetpool_operator.core import nats_resources as nr
from jetpool_operator.core import periodic_schedules, stranded, tenancy
from jetpool_operator.core.control_bucket import (
    DEFAULT_CONTROL_REPLICAS,
    ControlBucket,
    wanted_replicas,
)
from jetpool_operator.core.network_errors import ServerRefusal
from jetpool_protocol import headers as h
from jetpool_protocol.control import ControlState
from jetpool_protocol.dead_letter import DeadLetterReason, DeadLetterRecord
from jetpool_protocol.naming import CONTROL_BUCKET, KV_STREAM_PREFIX, STATS_SUBJECT_PREFIX
from jetpool_protocol.schedules import PERIODIC_TOKEN
from jetpool_protocol.stats import WorkerStats
from jetpool_protocol.task_state import (
    TaskError,
    TaskPhase,
    TaskState,
    error_result,
    result_key,
    state_key,
)
from jetpool_protocol.worker_settings import server_urls

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 2.0
REQUEST_TIMEOUT_SECONDS = 2.0
MAX_RECONNECT_ATTEMPTS = 3
CONNECT_DEADLINE_SECONDS = 6.0
"""A first connect gives up after this long (inside the operator's 8 s tick budget)."""
CONTROL_STREAM = KV_STREAM_PREFIX + CONTROL_BUCKET
REPLICAS_NOT_SUPPORTED = 10074
"""JetStream's answer to R>1 on a server that is not clustered."""


@dataclass(frozen=True, slots=True)
class ConnectionKey:
    """Everything that makes two pools' NATS connections shareable (or not)."""

    url: str
    credentials: str | None = field(default=None, repr=False)
    tls_ca: str | None = field(default=None, repr=False)
    tls_cert: str | None = field(default=None, repr=False)
    tls_key: str | None = field(default=None, repr=False)

    @property
    def servers(self) -> list[str]:
        """``spec.nats.url`` may list several servers, comma-separated."""
        return server_urls(self.url)

    def tls_context(self) -> ssl.SSLContext | None:
        """The client TLS context; :class:`InvalidTlsMaterial` names the PEM that is bad."""
        if self.tls_ca is None and self.tls_cert is None:
            return None
        if self.tls_ca is not None and not self.tls_ca.strip():
            # cadata="" would silently fall back to the system trust store.
            raise InvalidTlsMaterial("ca", "the CA bundle is empty")
        try:
            context = ssl.create_default_context(cadata=self.tls_ca)
        except (ssl.SSLError, ValueError) as exc:
            raise InvalidTlsMaterial("ca", f"not a PEM CA certificate bundle ({exc})") from exc
        if self.tls_cert is not None and self.tls_key is not None:
            # load_cert_chain only reads files: use a private, short-lived directory.
            with tempfile.TemporaryDirectory(prefix="jetpool-tls-") as tmp:
                cert, key = Path(tmp, "tls.crt"), Path(tmp, "tls.key")
                cert.write_text(self.tls_cert)
                key.touch(mode=0o600)
                key.write_text(self.tls_key)
                try:
                    context.load_cert_chain(cert, key)
                except (ssl.SSLError, ValueError) as exc:
                    raise InvalidTlsMaterial(
                        "cert", f"client certificate and key are not a matching PEM pair ({exc})"
                    ) from exc
        return context


class InvalidTlsMaterial(ValueError):
    """A CA bundle, certificate or key that TLS cannot use; ``role`` is ca or cert."""

    def __init__(self, role: str, message: str) -> None:
        super().__init__(message)
        self.role = role


@dataclass(frozen=True, slots=True)
class ConsumerBacklog:
    pending: int
    ack_pending: int
    redelivered: int
    waiting: int

    @property
    def backlog(self) -> int:
        """What still needs a worker: undelivered plus delivered-but-unacked (as KEDA counts)."""
        return self.pending + self.ack_pending

    @classmethod
    def total(cls, backlogs: Iterable[ConsumerBacklog]) -> ConsumerBacklog:
        """A laned pool's consumers together: the pool's backlog (every count sums)."""
        parts = list(backlogs)
        return cls(
            pending=sum(b.pending for b in parts),
            ack_pending=sum(b.ack_pending for b in parts),
            redelivered=sum(b.redelivered for b in parts),
            waiting=sum(b.waiting for b in parts),
        )


class NatsRefused(ServerRefusal):
    """A server answered and refused us (TLS verification, authorization): not a network
    problem, the pool's TLS or credentials need fixing."""


def _is_refusal(exc: BaseException) -> bool:
    if isinstance(exc, ssl.SSLError):
        return True
    transient = (nats.errors.NoServersError, nats.errors.TimeoutError, nats.errors.UnexpectedEOF)
    return isinstance(exc, nats.errors.Error) and not isinstance(exc, transient)


def _refusal_text(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed: {getattr(exc, 'reason', None) or exc}"
    return f"the server refused the connection: {exc}"


StatsSink = Callable[[ConnectionKey, str, WorkerStats], None]
"""(connection it arrived on, subject, stats): the sink decides whom to credit."""


class NatsConnections:
    """Shared, lazily opened NATS connections; each also feeds worker stats to a sink."""

    def __init__(
        self, stats_sink: StatsSink, control_replicas: int = DEFAULT_CONTROL_REPLICAS
    ) -> None:
        self._stats_sink = stats_sink
        self._connections: dict[ConnectionKey, NATS] = {}
        self._kv: dict[ConnectionKey, KeyValue] = {}
        self._control: dict[ConnectionKey, ControlBucket] = {}
        self.control_replicas = control_replicas
        self._locks: dict[ConnectionKey, asyncio.Lock] = {}
        self._users: dict[tuple[str, str], ConnectionKey] = {}
        """(namespace, pool) -> the connection it uses now; a key nobody uses is closed."""
        self._stranded: dict[ConnectionKey, dict[tuple[str, str], StrandedWatch]] = {}
        """Per connection, (stream, consumer) -> whose max-deliveries advisories go where."""

    async def get(self, key: ConnectionKey) -> NATS:
        """The shared connection for ``key``; one unreachable server never blocks the others."""
        async with self._locks.setdefault(key, asyncio.Lock()):
            nc = self._connections.get(key)
            if nc is not None and (nc.is_connected or nc.is_reconnecting):
                if nc.is_reconnecting:
                    raise ConnectionError(f"reconnecting to {key.url}")
                return nc
            if nc is not None:
                with contextlib.suppress(Exception):
                    await nc.close()
                self._connections.pop(key, None)
                self._kv.pop(key, None)
            refusals: list[Exception] = []

            async def on_error(exc: Exception) -> None:
                if _is_refusal(exc):
                    refusals.append(exc)
                await self._on_error(exc)

            nc = NATS()
            try:
                # nats-py never returns from connect() after a failed TLS verification: bound
                # it, and report what the server said rather than a bare timeout.
                await asyncio.wait_for(self._connect(nc, key, on_error), CONNECT_DEADLINE_SECONDS)
            except (nats.errors.Error, OSError, TimeoutError) as exc:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(nc.close(), 1.0)
                if _is_refusal(exc):
                    raise NatsRefused(_refusal_text(exc)) from exc
                if refusals:  # retries end in "no servers" or the deadline
                    raise NatsRefused(_refusal_text(refusals[-1])) from exc
                raise
            await nc.subscribe(f"{STATS_SUBJECT_PREFIX}.>", cb=self._stats_handler(key))
            await nc.subscribe(MAX_DELIVERIES_WILDCARD, cb=self._advisory_handler(key, nc))
            self._connections[key] = nc
            return nc

    async def _connect(
        self, nc: NATS, key: ConnectionKey, on_error: Callable[[Exception], Awaitable[None]]
    ) -> None:
        options: dict[str, Any] = {
            "servers": key.servers,
            "user_credentials": RawCredentials(key.credentials) if key.credentials else None,
            "tls": key.tls_context(),
            # Notice a half-dead TCP connection in ~30 s instead of the default ~4 min.
            "ping_interval": 10,
            "max_outstanding_pings": 3,
            "connect_timeout": CONNECT_TIMEOUT_SECONDS,
            # Bounded: nats-py applies this to the first connect too, and an unbounded
            # value makes connecting to a dead server hang forever. A connection that
            # gives up is replaced on the next tick.
            "allow_reconnect": True,
            "max_reconnect_attempts": MAX_RECONNECT_ATTEMPTS,
            "reconnect_time_wait": 0.5,
            "name": "jetpool-operator",
            "error_cb": on_error,
            "disconnected_cb": self._on_disconnected,
        }
        await nc.connect(**options)

    @staticmethod
    async def _on_error(exc: Exception) -> None:
        log.warning("NATS connection error: %s: %s", type(exc).__name__, exc)

    @staticmethod
    async def _on_disconnected() -> None:
        log.warning("NATS connection lost; reconnecting")

    def _stats_handler(self, key: ConnectionKey) -> Callable[[Msg], Awaitable[None]]:
        async def on_stats(msg: Msg) -> None:
            try:
                stats = WorkerStats.model_validate_json(msg.data)
            except ValueError:
                log.warning("ignoring malformed worker stats on %s", msg.subject)
                return
            self._stats_sink(key, msg.subject, stats)

        return on_stats

    def watch_stranded(
        self, key: ConnectionKey, target: StrandedTaskTarget, on_moved: Callable[[int], None]
    ) -> None:
        """Dead-letter ``target``'s tasks the server gives up on (max-deliveries advisories).
        One subscription per connection serves every pool on it, not one per pool."""
        self._stranded.setdefault(key, {})[(target.stream, target.consumer)] = StrandedWatch(
            target, on_moved
        )

    def unwatch_stranded(self, key: ConnectionKey, target: StrandedTaskTarget) -> None:
        watches = self._stranded.get(key, {})
        watches.pop((target.stream, target.consumer), None)
        if not watches:
            self._stranded.pop(key, None)

    def _advisory_handler(self, key: ConnectionKey, nc: NATS) -> Callable[[Msg], Awaitable[None]]:
        async def on_advisory(msg: Msg) -> None:
            stream, consumer = msg.subject.split(".")[-2:]
            watch = self._stranded.get(key, {}).get((stream, consumer))
            if watch is not None:
                await handle_max_deliveries(nc, watch.target, watch.on_moved, msg)

        return on_advisory

    async def consumer_backlog(
        self, key: ConnectionKey, stream: str, consumer: str
    ) -> ConsumerBacklog:
        js = (await self.get(key)).jetstream(timeout=REQUEST_TIMEOUT_SECONDS)
        info = await js.consumer_info(stream, consumer)
        return ConsumerBacklog(
            pending=int(info.num_pending or 0),
            ack_pending=int(info.num_ack_pending or 0),
            redelivered=int(info.num_redelivered or 0),
            waiting=int(info.num_waiting or 0),
        )

    async def stream_messages(self, key: ConnectionKey, stream: str) -> int:
        js = (await self.get(key)).jetstream(timeout=REQUEST_TIMEOUT_SECONDS)
        info = await js.stream_info(stream)
        return int(info.state.messages)

    async def _control_kv(self, key: ConnectionKey, pool_replicas: int = 1) -> KeyValue:
        """The control bucket, created on first use and raised to the replicas wanted
        (:mod:`jetpool_operator.core.control_bucket`); what was seen is kept for
        :meth:`control_bucket`."""
        kv, seen = self._kv.get(key), self._control.get(key)
        want = wanted_replicas(
            configured=self.control_replicas,
            pool_replicas=pool_replicas,
            current=None if seen is None else seen.replicas,
            clustered=None if seen is None else seen.clustered,
        )
        if kv is not None and (want is None or (seen is not None and seen.problem)):
            return kv  # a raise the server refused is not retried on every write
        js = (await self.get(key)).jetstream(timeout=REQUEST_TIMEOUT_SECONDS)
        try:
            info = await js.stream_info(CONTROL_STREAM)
        except NotFoundError:
            info = await self._create_control_bucket(js, want or 1)
        self._control[key] = await self._raise_control_replicas(js, info, pool_replicas)
        kv = self._kv[key] = await js.key_value(CONTROL_BUCKET)
        return kv

    async def _create_control_bucket(self, js: JetStreamContext, replicas: int) -> api.StreamInfo:
        config = KeyValueConfig(
            bucket=CONTROL_BUCKET, history=1, storage=StorageType.FILE, replicas=replicas
        )
        try:
            await js.create_key_value(config)
        except APIError as exc:
            if exc.err_code != REPLICAS_NOT_SUPPORTED or replicas == 1:
                raise
            config.replicas = 1  # a single server: R1 is all it takes
            await js.create_key_value(config)
        return await js.stream_info(CONTROL_STREAM)

    async def _raise_control_replicas(
        self, js: JetStreamContext, info: api.StreamInfo, pool_replicas: int
    ) -> ControlBucket:
        current = int(info.config.num_replicas or 1)
        clustered = bool(info.cluster is not None and info.cluster.name)
        want = wanted_replicas(
            configured=self.control_replicas,
            pool_replicas=pool_replicas,
            current=current,
            clustered=clustered,
        )
        if want is None:
            return ControlBucket(current, clustered)
        try:
            await js.update_stream(replace(info.config, num_replicas=want))
        except APIError as exc:
            log.warning("control bucket %s stays at R%d: %s", CONTROL_BUCKET, current, exc)
            return ControlBucket(current, clustered, problem=exc.description or str(exc))
        log.info("control bucket %s raised from R%d to R%d", CONTROL_BUCKET, current, want)
        return ControlBucket(want, clustered)

    def control_bucket(self, key: ConnectionKey) -> ControlBucket | None:
        """The control bucket as last seen on ``key``'s NATS system (None: not yet)."""
        return self._control.get(key)

    async def publish_control(
        self, key: ConnectionKey, control_key: str, state: ControlState, *, replicas: int = 1
    ) -> None:
        kv = await self._control_kv(key, replicas)
        await kv.put(control_key, state.model_dump_json().encode())

    async def delete_control(self, key: ConnectionKey, control_key: str) -> None:
        kv = await self._control_kv(key)
        with contextlib.suppress(NotFoundError, KeyError):
            await kv.delete(control_key)

    async def use(self, pool: tuple[str, str], key: ConnectionKey) -> None:
        """Record that ``pool`` now connects with ``key``; its previous connection is closed
        once no pool uses it (a changed URL or credentials Secret, a rotated CA)."""
        previous = self._users.get(pool)
        self._users[pool] = key
        if previous is not None and previous != key:
            await self._close_unused(previous)

    async def release(self, pool: tuple[str, str]) -> None:
        """``pool`` is gone: close its connection if it was the last user."""
        previous = self._users.pop(pool, None)
        if previous is not None:
            await self._close_unused(previous)

    @contextlib.asynccontextmanager
    async def in_use(self, pool: tuple[str, str], key: ConnectionKey) -> AsyncIterator[None]:
        """``pool`` uses ``key`` for the duration of one operation (the delete handlers run
        after the pool's control loop released it): the connection is closed afterwards when
        nobody else uses it, instead of staying open for a pool that is gone."""
        await self.use(pool, key)
        try:
            yield
        finally:
            await self.release(pool)

    async def _close_unused(self, key: ConnectionKey) -> None:
        async with self._locks.setdefault(key, asyncio.Lock()):
            if key in self._users.values():
                return
            nc = self._connections.pop(key, None)
            self._kv.pop(key, None)
            if nc is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(nc.close(), CONNECT_DEADLINE_SECONDS)

    async def close(self) -> None:
        for nc in self._connections.values():
            with contextlib.suppress(Exception):
                await nc.drain()
        self._connections.clear()
        self._kv.clear()


# --- JetStream resources ---------------------------------------------------------------------


def _to_nats_stream(config: nr.StreamConfig) -> api.StreamConfig:
    return api.StreamConfig(
        name=config.name,
        subjects=list(config.subjects),
        retention=api.RetentionPolicy(config.retention.value),
        storage=api.StorageType(config.storage.value),
        discard=api.DiscardPolicy(config.discard.value),
        max_age=config.max_age_seconds,
        max_bytes=config.max_bytes,
        max_msgs=config.max_msgs,
        max_msg_size=config.max_msg_size,
        duplicate_window=config.duplicate_window_seconds,
        num_replicas=config.replicas,
        description=config.description or None,
        metadata=dict(config.metadata) or None,
        max_msgs_per_subject=config.max_msgs_per_subject,
        allow_rollup_hdrs=config.allow_rollup,
        deny_delete=config.deny_delete,
        allow_direct=config.allow_direct,
        allow_msg_schedules=config.allow_msg_schedules or None,
        allow_msg_counter=config.allow_msg_counter or None,
        allow_msg_ttl=config.allow_msg_ttl or None,
        subject_transform=None
        if config.subject_transform is None
        else api.SubjectTransform(*config.subject_transform),
    )


def _from_nats_stream(config: api.StreamConfig) -> nr.StreamConfig:
    def enum_value(value: object, default: str) -> str:
        return str(getattr(value, "value", value) or default)

    return nr.StreamConfig(
        name=config.name or "",
        subjects=tuple(config.subjects or ()),
        retention=nr.Retention(enum_value(config.retention, "limits")),
        storage=nr.Storage(enum_value(config.storage, "file")),
        discard=nr.Discard(enum_value(config.discard, "old")),
        max_age_seconds=float(config.max_age or 0.0),
        max_bytes=int(config.max_bytes if config.max_bytes is not None else -1),
        max_msgs=int(config.max_msgs if config.max_msgs is not None else -1),
        max_msg_size=int(config.max_msg_size if config.max_msg_size is not None else -1),
        duplicate_window_seconds=float(config.duplicate_window or 0.0),
        replicas=int(config.num_replicas or 1),
        description=config.description or "",
        metadata=tenancy.owner_metadata(config.metadata),
        max_msgs_per_subject=int(
            config.max_msgs_per_subject if config.max_msgs_per_subject is not None else -1
        ),
        allow_rollup=bool(config.allow_rollup_hdrs),
        deny_delete=bool(config.deny_delete),
        allow_direct=bool(config.allow_direct),
        allow_msg_schedules=bool(config.allow_msg_schedules),
        allow_msg_counter=bool(config.allow_msg_counter),
        allow_msg_ttl=bool(config.allow_msg_ttl),
        subject_transform=None
        if config.subject_transform is None
        else (config.subject_transform.src, config.subject_transform.dest),
    )


def _to_nats_consumer(config: nr.ConsumerConfig) -> api.ConsumerConfig:
    subjects = list(config.filter_subjects)
    return api.ConsumerConfig(
        durable_name=config.durable_name,
        name=config.durable_name,
        ack_policy=api.AckPolicy(config.ack_policy.value),
        deliver_policy=api.DeliverPolicy(config.deliver_policy.value),
        ack_wait=config.ack_wait_seconds,
        max_deliver=config.max_deliver,
        max_ack_pending=config.max_ack_pending,
        max_waiting=config.max_waiting,
        filter_subject=subjects[0] if len(subjects) == 1 else None,
        filter_subjects=subjects if len(subjects) > 1 else None,
        description=config.description or None,
        metadata=dict(config.metadata) or None,
    )


def _from_nats_consumer(stream: str, config: api.ConsumerConfig) -> nr.ConsumerConfig:
    subjects = tuple(
        config.filter_subjects or ([config.filter_subject] if config.filter_subject else [])
    )
    return nr.ConsumerConfig(
        stream=stream,
        durable_name=config.durable_name or config.name or "",
        filter_subjects=subjects,
        ack_wait_seconds=float(config.ack_wait or 0.0),
        max_deliver=int(config.max_deliver if config.max_deliver is not None else -1),
        max_ack_pending=int(config.max_ack_pending or 0),
        ack_policy=nr.AckPolicy(str(getattr(config.ack_policy, "value", config.ack_policy))),
        deliver_policy=nr.DeliverPolicy(
            str(getattr(config.deliver_policy, "value", config.deliver_policy))
        ),
        max_waiting=int(config.max_waiting or nr.MAX_WAITING_PULLS),
        description=config.description or "",
        metadata=tenancy.owner_metadata(config.metadata),
    )


@dataclass(frozen=True, slots=True)
class EnsureOutcome:
    """What happened to one JetStream resource while ensuring a pool's plan."""

    kind: str
    name: str
    action: str
    """created, updated, unchanged or conflict."""
    message: str = ""


class ResourceConflict(Exception):
    """An existing stream/consumer cannot be brought to the pool's spec without deleting it."""


class NotOwner(Exception):
    """A stream or consumer the pool would use belongs to another pool or to nobody; nothing
    was changed. ``reason`` is the NatsReady reason (:class:`tenancy.Refusal`)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _refuse(verdicts: Iterable[tenancy.Verdict]) -> None:
    refused = [v for v in verdicts if not v.allowed]
    if refused:
        raise NotOwner(refused[0].reason, "; ".join(v.message for v in refused))


async def ensure_plan(nc: NATS, plan: nr.NatsPlan) -> list[EnsureOutcome]:
    """Create or update the task stream, dead-letter stream and consumers; never delete.

    Ownership comes first: :class:`NotOwner` is raised before anything is changed when a
    stream or a consumer exists and is not the pool's (see :func:`tenancy.judge_claim`).
    A laned pool's consumers (:attr:`~nr.NatsPlan.consumers`) are each ensured like the
    pool's own; one a changed spec no longer plans (a removed level, fewer partitions) is
    left alone.
    Raises :class:`ResourceConflict` (after handling what it could) when something exists in
    an incompatible shape; the message says what differs and what the user can do.
    """
    js = nc.jetstream(timeout=REQUEST_TIMEOUT_SECONDS)
    outcomes: list[EnsureOutcome] = []
    streams = tuple(
        s
        for s in (
            plan.task_stream,
            plan.dead_letter_stream,
            plan.task_state,
            plan.rate_limit,
            plan.key_leases,
        )
        if s is not None
    )
    observed: dict[str, api.StreamInfo | None] = {}
    prefix = plan.names.schedule_subject_prefix
    # the task stream's info also lists its periodic schedules' subjects (one request)
    periodic = None if prefix is None else f"{prefix}.{PERIODIC_TOKEN}.>"
    for desired in streams:
        try:
            observed[desired.name] = await js.stream_info(
                desired.name, subjects_filter=periodic if desired is plan.task_stream else None
            )
        except NotFoundError:
            observed[desired.name] = None
    _refuse(
        tenancy.judge_claim(
            "stream",
            name,
            plan.owner,
            info.config.metadata,
            adopt_existing=plan.adopt_existing,
            observed_subjects=info.config.subjects or (),
            extra_spaces=plan.extra_spaces,
        )
        for name, info in observed.items()
        if info is not None
    )
    consumers = await asyncio.gather(*(_consumer_info(js, c) for c in plan.consumers))
    _refuse(
        tenancy.judge_claim(
            "consumer",
            f"{consumer.stream}/{consumer.durable_name}",
            plan.owner,
            info.config.metadata,
            adopt_existing=plan.adopt_existing,
        )
        for consumer, info in zip(plan.consumers, consumers, strict=True)
        if info is not None
    )
    for desired in streams:
        info = observed[desired.name]
        if info is None:
            await js.add_stream(_to_nats_stream(desired))
            outcomes.append(EnsureOutcome("stream", desired.name, "created"))
            continue
        outcomes.append(
            await _reconcile(
                "stream",
                desired.name,
                nr.diff_stream(desired, _from_nats_stream(info.config)),
                lambda d=desired: js.update_stream(_to_nats_stream(d)),  # type: ignore[misc]
            )
        )
    for consumer, cinfo in zip(plan.consumers, consumers, strict=True):
        outcomes.append(await _ensure_consumer(js, consumer, cinfo))
    if prefix is not None:
        task_stream = observed[plan.task_stream.name]
        subjects = {} if task_stream is None else task_stream.state.subjects or {}
        outcomes += await _ensure_periodic_schedules(js, plan, subjects)
    conflicts = [o.message for o in outcomes if o.action == "conflict"]
    if conflicts:
        raise ResourceConflict("; ".join(conflicts))
    return outcomes


async def _consumer_info(
    js: JetStreamContext, consumer: nr.ConsumerConfig
) -> api.ConsumerInfo | None:
    try:
        info: api.ConsumerInfo = await js.consumer_info(consumer.stream, consumer.durable_name)
    except NotFoundError:  # the consumer, or its stream (created further on)
        return None
    return info


async def _ensure_consumer(
    js: JetStreamContext, consumer: nr.ConsumerConfig, observed: api.ConsumerInfo | None
) -> EnsureOutcome:
    """Create the consumer, or bring it to ``consumer`` in place (its owner was judged)."""
    try:
        if observed is None:
            await js.add_consumer(consumer.stream, _to_nats_consumer(consumer))
            return EnsureOutcome("consumer", consumer.durable_name, "created")
        return await _reconcile(
            "consumer",
            consumer.durable_name,
            nr.diff_consumer(consumer, _from_nats_consumer(consumer.stream, observed.config)),
            lambda: js.add_consumer(consumer.stream, _to_nats_consumer(consumer)),
        )
    except APIError as exc:
        if exc.err_code != OVERLAPPING_FILTERS:
            raise
        return EnsureOutcome(
            "consumer",
            consumer.durable_name,
            "conflict",
            f"consumer {consumer.durable_name!r} would read subjects another consumer of "
            f"stream {consumer.stream!r} reads ({', '.join(consumer.filter_subjects)}), which a "
            "WorkQueue stream refuses: a priority level, partition or default level the spec "
            "dropped or moved left its consumer behind (jetpool never deletes one); let it "
            "drain, delete it (nats consumer rm), and the pool reconciles",
        )


OVERLAPPING_FILTERS = 10100
"""nats-server: "filtered consumer not unique on workqueue stream"."""

SCHEDULE_REFUSALS = {10189: "pattern", 10190: "target subject", 10223: "time zone"}


async def _ensure_periodic_schedules(
    js: JetStreamContext, plan: nr.NatsPlan, subjects: Iterable[str]
) -> list[EnsureOutcome]:
    """Publish the spec's periodic schedules that are missing or differ; purge the ones the
    operator made that the spec no longer declares. ``subjects``: the periodic schedules'
    subjects in the task stream (empty for a stream made just now)."""
    stream = plan.task_stream.name
    stored: dict[str, periodic_schedules.StoredSchedule] = {}
    for subject in subjects:
        try:
            msg = await js.get_last_msg(stream, subject)
        except NotFoundError:
            continue
        stored[subject] = periodic_schedules.StoredSchedule(
            msg.data or b"", dict(msg.headers or {})
        )
    changes = periodic_schedules.changes(plan.periodic, stored)
    outcomes: list[EnsureOutcome] = []
    for message in changes.publish:
        name = message.subject.rsplit(".", 1)[-1]
        try:
            await js.publish(message.subject, message.payload, headers=dict(message.headers))
        except APIError as exc:
            what = SCHEDULE_REFUSALS.get(exc.err_code or 0)
            if what is None:
                raise
            outcomes.append(
                EnsureOutcome(
                    "schedule",
                    name,
                    "conflict",
                    f"nats-server refuses periodic schedule {name!r}: its {what} is invalid "
                    f"({exc.description})",
                )
            )
            continue
        action = "updated" if message.subject in stored else "created"
        outcomes.append(EnsureOutcome("schedule", name, action))
    for subject in changes.delete:
        await js.purge_stream(stream, subject=subject)
        outcomes.append(EnsureOutcome("schedule", subject.rsplit(".", 1)[-1], "deleted"))
    return outcomes


async def _reconcile(
    kind: str, name: str, diff: nr.Diff, update: Callable[[], Awaitable[object]]
) -> EnsureOutcome:
    if isinstance(diff, nr.InSync):
        return EnsureOutcome(kind, name, "unchanged")
    if isinstance(diff, nr.Conflict):
        return EnsureOutcome(kind, name, "conflict", diff.message)
    await update()
    changed = ", ".join(c.field for c in diff.changes)
    log.info("updated %s %s (%s)", kind, name, changed)
    return EnsureOutcome(kind, name, "updated", changed)


@dataclass(frozen=True, slots=True)
class Deletion:
    deleted: list[str]
    kept: list[str]
    """Why each stream that exists but is not the pool's own was left alone."""


async def delete_streams(nc: NATS, streams: Iterable[str], owner: tenancy.Owner) -> Deletion:
    """Delete the pool's streams (deletionPolicy Delete), only those it owns
    (:func:`tenancy.judge_delete`); absent streams are neither."""
    js = nc.jetstream(timeout=REQUEST_TIMEOUT_SECONDS)
    result = Deletion([], [])
    for name in streams:
        try:
            info = await js.stream_info(name)
            verdict = tenancy.judge_delete("stream", name, owner, info.config.metadata)
            if not verdict.allowed:
                result.kept.append(verdict.message)
                continue
            await js.delete_stream(name)
            result.deleted.append(name)
        except NotFoundError:
            pass
    return result


# --- safety net: tasks the server stopped delivering ------------------------------------------

MAX_DELIVERIES_ADVISORY = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream}.{consumer}"
MAX_DELIVERIES_WILDCARD = MAX_DELIVERIES_ADVISORY.format(stream="*", consumer="*")
STRANDED_ERROR_TYPE: str = stranded.Finding.MAX_DELIVERIES
"""What the advisory path files a task under (the sweep says more, :class:`stranded.Finding`)."""


@dataclass(frozen=True, slots=True)
class StrandedTaskTarget:
    """Where a pool's stranded tasks go, and whose they are."""

    stream: str
    consumer: str
    dead_letter_prefix: str
    namespace: str
    pool: str
    task_state_bucket: str | None = None
    """Where the dead-lettered task's state is recorded (None: the pool tracks none)."""
    keep_results: bool = False


async def dead_letter_stranded(
    nc: NATS,
    target: StrandedTaskTarget,
    sequence: int,
    deliveries: int,
    *,
    error_type: str = STRANDED_ERROR_TYPE,
    error_message: str | None = None,
) -> bool:
    """Move a task the consumer gave up on (``maxDeliver`` reached) to the dead-letter stream.

    Workers dead-letter a task themselves after ``retry.maxAttempts``; the server's cap sits
    above that, so reaching it means workers died or hung on the task every time. Without this
    the message would stay in the WorkQueue stream, never delivered again: silently lost.
    Idempotent: the record's ``Nats-Msg-Id`` is ``<stream>:<seq>:<publish time>``, exactly as
    a worker would build it. Returns False when the message is already gone. A sweep passes
    its own ``error_type`` and ``error_message`` when it cannot tell that the task reached
    ``maxDeliver`` (``core/stranded.py``).
    """
    js = nc.jetstream(timeout=REQUEST_TIMEOUT_SECONDS)
    try:
        raw = await js.get_msg(target.stream, sequence)
    except NotFoundError:
        return False
    headers = {str(k): str(v) for k, v in (raw.headers or {}).items()}
    now = datetime.now(UTC)
    record = DeadLetterRecord(
        task_id=headers.get(h.TASK_ID) or headers.get(h.MSG_ID) or f"seq-{sequence}",
        pool=target.pool,
        namespace=target.namespace,
        reason=DeadLetterReason.MAX_ATTEMPTS,
        error_type=error_type,
        error_message=error_message
        or (
            f"delivered {deliveries} times without an ack, retry or dead-letter: workers "
            "crashed or hung on it every time"
        ),
        attempts=deliveries,
        original_subject=raw.subject or "",
        original_stream=target.stream,
        original_sequence=sequence,
        headers=headers,
        payload=raw.data or b"",
        first_failure_at=raw.time or now,
        last_failure_at=now,
        worker="jetpool-operator",
    )
    await js.publish(
        record.subject(target.dead_letter_prefix),
        record.model_dump_json().encode(),
        headers=record.publish_headers(record.dedup_id(target.stream, sequence, raw.time or now)),
    )
    with contextlib.suppress(NotFoundError):
        await js.delete_msg(target.stream, sequence)
    if target.task_state_bucket is not None:
        await _record_stranded_state(js, target, record, sequence, now)
    return True


async def _record_stranded_state(
    js: JetStreamContext,
    target: StrandedTaskTarget,
    record: DeadLetterRecord,
    sequence: int,
    now: datetime,
) -> None:
    """The task's last state (and error result), so ``jetpool task status`` does not keep
    showing it running: no worker will ever write it again."""
    bucket = target.task_state_bucket
    state = TaskState(
        id=record.task_id,
        phase=TaskPhase.DEAD_LETTERED,
        since=now,
        runs=record.attempts,
        deliveries=record.attempts,
        worker=record.worker,
        reason=str(record.reason),
        error=TaskError.of(record.error_type, record.error_message),
        stream_sequence=sequence,
        has_result=target.keep_results,
    )
    try:
        if target.keep_results:
            result = error_result(record.error_type, record.error_message)
            await js.publish(f"$KV.{bucket}.{result_key(record.task_id)}", result.to_bytes())
        await js.publish(f"$KV.{bucket}.{state_key(record.task_id)}", state.to_bytes())
    except (nats.errors.Error, TimeoutError) as exc:  # the dead letter itself is stored
        log.warning("could not record the state of stranded task %s: %s", record.task_id, exc)


@dataclass(frozen=True, slots=True)
class StrandedWatch:
    target: StrandedTaskTarget
    on_moved: Callable[[int], None]


async def handle_max_deliveries(
    nc: NATS, target: StrandedTaskTarget, on_moved: Callable[[int], None], msg: Msg
) -> None:
    """Dead-letter the task a max-deliveries advisory names."""
    try:
        advisory = json.loads(msg.data)
        sequence, deliveries = int(advisory["stream_seq"]), int(advisory["deliveries"])
    except (ValueError, KeyError, TypeError):
        log.warning("ignoring malformed advisory on %s", msg.subject)
        return
    try:
        if await dead_letter_stranded(nc, target, sequence, deliveries):
            on_moved(sequence)
    except (nats.errors.Error, OSError, TimeoutError) as exc:
        log.error("could not dead-letter stranded task %s:%s: %s", target.stream, sequence, exc)


async def sweep_stranded_tasks(
    nc: NATS,
    target: StrandedTaskTarget,
    *,
    limit: int = stranded.SWEEP_LIMIT,
    settle: float = stranded.SETTLE_SECONDS,
) -> list[int]:
    """Dead-letter the tasks the consumer will never deliver again that no advisory announced
    while an operator listened (``core/stranded.py`` says which can be known, also while other
    tasks are in flight); returns the moved sequences, lowest first."""
    view = await _stranded_consumer_view(nc, target)
    plan = stranded.sweep_plan(view, limit)
    if plan is None or not await _stranded_sequences(nc, target.stream, plan, 1):
        return []
    # an ack counted in the floor may not have removed its message yet: give it time, then
    # make sure the consumer is still the one that was read before believing the stream
    await asyncio.sleep(settle)
    again = await _stranded_consumer_view(nc, target)
    if not stranded.still_valid(plan, again):
        return []
    found = await _stranded_sequences(nc, target.stream, plan, plan.count_up_to)
    verdict = stranded.attribute(len(found), again)
    moved: list[int] = []
    for sequence in found[:limit]:
        if await dead_letter_stranded(
            nc,
            target,
            sequence,
            verdict.attempts,
            error_type=verdict.finding.value,
            error_message=verdict.message,
        ):
            moved.append(sequence)
    return moved


async def _stranded_consumer_view(nc: NATS, target: StrandedTaskTarget) -> stranded.ConsumerView:
    js = nc.jetstream(timeout=REQUEST_TIMEOUT_SECONDS)
    info = await js.consumer_info(target.stream, target.consumer)
    config = info.config
    filters = config.filter_subjects or ([config.filter_subject] if config.filter_subject else [])
    return stranded.ConsumerView(
        ack_pending=int(info.num_ack_pending or 0),
        delivered_stream_sequence=int(info.delivered.stream_seq or 0),
        ack_floor_stream_sequence=int(info.ack_floor.stream_seq or 0),
        redelivered=int(info.num_redelivered or 0),
        max_deliver=int(config.max_deliver or 0),
        filter_subjects=tuple(filters),
        created=str(info.created or ""),
    )


async def _stranded_sequences(
    nc: NATS, stream: str, plan: stranded.SweepPlan, at_most: int
) -> list[int]:
    """The lowest ``at_most`` sequences still in the stream that the plan covers."""
    js = nc.jetstream(timeout=REQUEST_TIMEOUT_SECONDS)
    found: list[int] = []
    for subject in plan.subjects:
        sequence, counted = 1, 0
        while counted < at_most:
            try:
                raw = await js.get_msg(stream, sequence, subject=subject, next=True)
            except NotFoundError:
                break
            if raw.seq is None or raw.seq > plan.up_to_sequence:
                break
            found.append(raw.seq)
            sequence, counted = raw.seq + 1, counted + 1
    return stranded.covered(found, plan)[:at_most]
