"""NATS access for the operator: JetStream management, consumer backlog, control state, stats.

Backlog is read with ``$JS.API.CONSUMER.INFO`` over an authenticated NATS connection: the
consumer leader answers, so counts are never a stale follower's (the failure mode KEDA's
monitoring-port scaler had to work around). One connection per (url, credentials) is shared by
every pool that uses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

import nats
from nats.aio.client import Client as NATS
from nats.aio.client import RawCredentials
from nats.aio.msg import Msg
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BucketNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from jetpool_protocol.control import ControlState
from jetpool_protocol.naming import CONTROL_BUCKET, STATS_SUBJECT_PREFIX
from jetpool_protocol.stats import WorkerStats

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 2.0
REQUEST_TIMEOUT_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class ConnectionKey:
    url: str
    credentials: str | None = None
    tls_ca: str | None = None


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


StatsSink = Callable[[WorkerStats], None]


class NatsConnections:
    """Shared, lazily opened NATS connections; each also feeds worker stats to a sink."""

    def __init__(self, stats_sink: StatsSink) -> None:
        self._stats_sink = stats_sink
        self._connections: dict[ConnectionKey, NATS] = {}
        self._kv: dict[ConnectionKey, KeyValue] = {}
        self._lock = asyncio.Lock()

    async def get(self, key: ConnectionKey) -> NATS:
        async with self._lock:
            nc = self._connections.get(key)
            if nc is not None and nc.is_connected:
                return nc
            if nc is not None:
                with contextlib.suppress(Exception):
                    await nc.close()
                self._connections.pop(key, None)
                self._kv.pop(key, None)
            nc = await nats.connect(
                key.url,
                user_credentials=RawCredentials(key.credentials) if key.credentials else None,
                connect_timeout=CONNECT_TIMEOUT_SECONDS,
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=1,
                name="jetpool-operator",
            )
            await nc.subscribe(f"{STATS_SUBJECT_PREFIX}.>", cb=self._on_stats)
            self._connections[key] = nc
            return nc

    async def _on_stats(self, msg: Msg) -> None:
        try:
            self._stats_sink(WorkerStats.model_validate_json(msg.data))
        except ValueError:
            log.warning("ignoring malformed worker stats on %s", msg.subject)

    async def consumer_backlog(self, key: ConnectionKey, stream: str, consumer: str) -> ConsumerBacklog:
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

    async def _control_kv(self, key: ConnectionKey) -> KeyValue:
        kv = self._kv.get(key)
        if kv is None:
            js = (await self.get(key)).jetstream(timeout=REQUEST_TIMEOUT_SECONDS)
            try:
                kv = await js.key_value(CONTROL_BUCKET)
            except BucketNotFoundError:
                kv = await js.create_key_value(
                    KeyValueConfig(bucket=CONTROL_BUCKET, history=1, storage=StorageType.FILE)
                )
            self._kv[key] = kv
        return kv

    async def publish_control(self, key: ConnectionKey, control_key: str, state: ControlState) -> None:
        kv = await self._control_kv(key)
        await kv.put(control_key, state.model_dump_json().encode())

    async def read_control(self, key: ConnectionKey, control_key: str) -> ControlState | None:
        kv = await self._control_kv(key)
        try:
            entry = await kv.get(control_key)
        except (NotFoundError, KeyError):
            return None
        return ControlState.model_validate_json(entry.value or b"{}")

    async def delete_control(self, key: ConnectionKey, control_key: str) -> None:
        kv = await self._control_kv(key)
        with contextlib.suppress(NotFoundError, KeyError):
            await kv.delete(control_key)

    async def close(self) -> None:
        for nc in self._connections.values():
            with contextlib.suppress(Exception):
                await nc.drain()
        self._connections.clear()
        self._kv.clear()
