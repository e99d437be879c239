"""A worker user holding exactly the pool's documented permission set, on a real nats-server.

The worker process runs tasks, dead-letters, publishes stats and obeys the breaker with it,
every subscription under its pool's inbox prefix; the same credentials cannot publish another
pool's stats, write any control key, create or delete streams, or subscribe to any inbox but
their own pool's (no ``_INBOX.>``, no other pool's prefix).
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import nats
import nats.errors
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import KeyValueConfig
from nats.js.errors import BucketNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from e2e.testbed.nats_auth import NatsAuth, NatsUser, issue_user
from e2e.testbed.nats_server import NatsServer
from jetpool_protocol.control import BreakerState, ControlState
from jetpool_protocol.permissions import worker_permissions
from jetpool_protocol.stats import WorkerStats
from jetpool_protocol.task_state import TaskPhase
from jetpool_worker.pull import InboxPuller
from tests.worker.helpers import (
    Pool,
    dead_letter_ids,
    eventually,
    make_pool,
    make_tracked_pool,
    publish_task,
)
from tests.worker.subprocess_worker import done_ids, kill, spawn_worker

pytestmark = pytest.mark.nats

ACCOUNT = "tenant-a"


@pytest.fixture
async def admin(secure_nats_server: NatsServer, nats_auth: NatsAuth) -> AsyncIterator[NATS]:
    """The account's unrestricted user: plays the operator (streams, control) and the producer."""
    nc = await nats.connect(
        secure_nats_server.url,
        tls=secure_nats_server.tls_context(),
        user_credentials=str(nats_auth.user(ACCOUNT).creds_file),
    )
    yield nc
    await nc.close()


async def _control_kv(admin: NATS) -> KeyValue:
    js = admin.jetstream()
    try:
        return await js.key_value("jetpool-control")
    except BucketNotFoundError:
        return await js.create_key_value(KeyValueConfig(bucket="jetpool-control", history=1))


def _pool_user(nats_auth: NatsAuth, pool: Pool) -> NatsUser:
    return issue_user(
        nats_auth.directory,
        nats_auth.account(ACCOUNT),
        f"pool-{pool.settings.pool_name}",
        permissions=worker_permissions(pool.settings).as_jwt_claims(),
    )


async def _restricted(
    server: NatsServer, user: NatsUser, errors: list[str], *, inbox_prefix: str = "_INBOX"
) -> NATS:
    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    return await nats.connect(
        server.url,
        tls=server.tls_context(),
        user_credentials=str(user.creds_file),
        error_cb=on_error,
        allow_reconnect=False,
        inbox_prefix=inbox_prefix,
    )


def _subscriptions(server: NatsServer, connection_name: str) -> list[str]:
    """Every subject the named client connection subscribes to, as the server lists it."""
    url = f"{server.monitor_url}/connz?subs=1&limit=1024"
    with urllib.request.urlopen(url, timeout=5) as response:
        connections = json.load(response)["connections"]
    return [
        subject
        for conn in connections
        if conn.get("name") == connection_name
        for subject in conn.get("subscriptions_list") or []
    ]


def _refused_subscriptions(errors: list[str]) -> set[str]:
    """Subjects the server refused to subscribe to (its -ERR, as nats-py reports it)."""
    marker = "permissions violation for subscription to "
    return {
        e.lower().split(marker, 1)[1].strip().strip("'\"") for e in errors if marker in e.lower()
    }


def _state(breaker: BreakerState, epoch: int) -> bytes:
    return (
        ControlState(breaker=breaker, epoch=epoch, since=datetime.now(UTC))
        .model_dump_json()
        .encode()
    )


async def test_a_worker_with_only_its_pools_permissions_runs_dead_letters_reports_and_obeys(
    admin: NATS, secure_nats_server: NatsServer, nats_auth: NatsAuth, tmp_path: Path
) -> None:
    js = admin.jetstream()
    kv = await _control_kv(admin)
    pool = await make_pool(js, secure_nats_server.url, nats_tls_ca_file=str(nats_auth.tls.ca_file))
    user = _pool_user(nats_auth, pool)
    settings = pool.settings.model_copy(
        update={"nats_credentials_file": str(user.creds_file), "log_level": "DEBUG"}
    )
    stats: list[WorkerStats] = []

    async def collect(msg: Msg) -> None:
        stats.append(WorkerStats.model_validate_json(msg.data))

    sub = await admin.subscribe(settings.stats_subject, cb=collect)
    await admin.flush()
    done, log = tmp_path / "done", tmp_path / "worker.log"
    proc = spawn_worker(settings, done, log)
    try:
        ok = [f"ok-{uuid.uuid4().hex[:8]}" for _ in range(3)]
        for task_id in ok:
            await publish_task(js, pool, task_id)
        await publish_task(js, pool, "bad-1", {"raise": "ValueError"})
        await eventually(lambda: sorted(done_ids(done)) == sorted(ok), within=20, what="tasks")

        async def dead_lettered() -> bool:
            return await dead_letter_ids(js, pool) == ["bad-1"]

        await eventually(dead_lettered, within=20, what="the failing task dead-lettered")
        await eventually(lambda: any(s.succeeded == 3 for s in stats), what="stats published")

        await kv.put(settings.control_key, _state(BreakerState.OPEN, 1))
        await eventually(lambda: bool(stats) and not stats[-1].fetching, what="breaker obeyed")
        await publish_task(js, pool, "held")
        await asyncio.sleep(1.5)
        assert "held" not in done_ids(done)
        await kv.put(settings.control_key, _state(BreakerState.CLOSED, 2))
        await eventually(lambda: "held" in done_ids(done), within=15, what="closed again")
        assert "permissions violation" not in log.read_text().lower()
        # replies, the pull inbox and the KV watch's deliveries: all under the pool's prefix
        subscribed = await asyncio.to_thread(_subscriptions, secure_nats_server, settings.worker_id)
        assert len(subscribed) >= 3, subscribed
        assert all(s.startswith(f"{settings.inbox_prefix}.") for s in subscribed), subscribed
    finally:
        kill(proc)
        await sub.unsubscribe()
        await kv.delete(settings.control_key)


async def test_a_pools_credentials_cannot_forge_another_pools_stats_or_control(
    admin: NATS, secure_nats_server: NatsServer, nats_auth: NatsAuth
) -> None:
    js = admin.jetstream()
    kv = await _control_kv(admin)
    mine = await make_pool(js, secure_nats_server.url)
    victim = await make_pool(js, secure_nats_server.url)
    await kv.put(victim.settings.control_key, _state(BreakerState.CLOSED, 7))
    forged: list[Msg] = []

    async def collect(msg: Msg) -> None:
        forged.append(msg)

    sub = await admin.subscribe(victim.settings.stats_subject, cb=collect)
    await admin.flush()
    errors: list[str] = []
    nc = await _restricted(secure_nats_server, _pool_user(nats_auth, mine), errors)
    try:
        fake = WorkerStats(
            worker="w-fake",
            pool=victim.settings.pool_name,
            namespace=victim.settings.pool_namespace,
            at=datetime.now(UTC),
            started_at=datetime.now(UTC),
            failed=10_000,
        )
        await nc.publish(victim.settings.stats_subject, fake.model_dump_json().encode())
        open_state = _state(BreakerState.OPEN, 99)
        await nc.publish(f"$KV.jetpool-control.{victim.settings.control_key}", open_state)
        await nc.flush()
        await eventually(lambda: len(errors) >= 2, what="both publishes refused")
        await asyncio.sleep(0.3)
        assert forged == []
        entry = await kv.get(victim.settings.control_key)
        assert entry.value is not None
        assert json.loads(entry.value)["epoch"] == 7
        assert all("permissions violation for publish" in e.lower() for e in errors)
    finally:
        await nc.close()
        await sub.unsubscribe()
        await kv.delete(victim.settings.control_key)


async def test_a_pools_credentials_cannot_create_change_or_delete_streams(
    admin: NATS, secure_nats_server: NatsServer, nats_auth: NatsAuth
) -> None:
    js = admin.jetstream()
    mine = await make_pool(js, secure_nats_server.url)
    errors: list[str] = []
    nc = await _restricted(secure_nats_server, _pool_user(nats_auth, mine), errors)
    tenant_js = nc.jetstream(timeout=1.0)
    name = f"X{uuid.uuid4().hex[:8]}"
    try:
        with pytest.raises(nats.errors.TimeoutError):
            await tenant_js.add_stream(name=name, subjects=[f"steal.{name}.>"])
        with pytest.raises(nats.errors.TimeoutError):
            await tenant_js.update_stream(name=mine.settings.stream, subjects=[">"])
        with pytest.raises(nats.errors.TimeoutError):
            await tenant_js.delete_stream(mine.settings.stream)
        with pytest.raises(nats.errors.TimeoutError):
            await tenant_js.delete_consumer(mine.settings.stream, mine.settings.consumer)
        with pytest.raises(NotFoundError):
            await js.stream_info(name)
        info = await js.stream_info(mine.settings.stream)
        assert info.config.subjects == [f"{mine.subject_prefix}.>"]
        assert (await js.consumer_info(mine.settings.stream, "workers")).name == "workers"
        await eventually(lambda: len(errors) >= 4, what="every admin request refused")
    finally:
        await nc.close()


async def test_a_worker_whose_user_lacks_its_inbox_prefix_says_which_permission_is_missing(
    admin: NATS, secure_nats_server: NatsServer, nats_auth: NatsAuth, tmp_path: Path
) -> None:
    """A per-pool user issued with the older set (subscribe ``_INBOX.>``): the worker, on its
    pool's prefix, gets no reply, runs nothing, and logs the subscribe permission it needs."""
    js = admin.jetstream()
    pool = await make_pool(js, secure_nats_server.url, nats_tls_ca_file=str(nats_auth.tls.ca_file))
    claims = worker_permissions(pool.settings).as_jwt_claims()
    claims["sub"] = {"allow": ["_INBOX.>"]}
    user = issue_user(
        nats_auth.directory,
        nats_auth.account(ACCOUNT),
        f"old-{pool.settings.pool_name}",
        permissions=claims,
    )
    settings = pool.settings.model_copy(update={"nats_credentials_file": str(user.creds_file)})
    done, log = tmp_path / "done", tmp_path / "worker.log"
    proc = spawn_worker(settings, done, log)
    try:
        await publish_task(js, pool, "never")
        hint = f"must be allowed to subscribe to {settings.inbox_prefix}.>"
        await eventually(lambda: log.exists() and hint in log.read_text(), what="the hint")
        assert "permissions violation for subscription" in log.read_text().lower()
        assert done_ids(done) == []
    finally:
        kill(proc)


async def test_a_pools_credentials_cannot_read_other_connections_inboxes(
    admin: NATS, secure_nats_server: NatsServer, nats_auth: NatsAuth
) -> None:
    """A pool's user asks for every inbox, and for another pool's, while that pool pulls a
    task through its own inbox: each subscription is refused and nothing leaks; the same
    connection still works under its own prefix."""
    js = admin.jetstream()
    mine = await make_pool(js, secure_nats_server.url)
    theirs = await make_pool(js, secure_nats_server.url)
    errors: list[str] = []
    nc = await _restricted(
        secure_nats_server,
        _pool_user(nats_auth, mine),
        errors,
        inbox_prefix=mine.settings.inbox_prefix,
    )
    victim_errors: list[str] = []
    victim = await _restricted(
        secure_nats_server,
        _pool_user(nats_auth, theirs),
        victim_errors,
        inbox_prefix=theirs.settings.inbox_prefix,
    )
    sniffed: list[Msg] = []
    pulled: list[Msg] = []

    async def sniff(msg: Msg) -> None:
        sniffed.append(msg)

    async def arrive(msg: Msg) -> None:
        pulled.append(msg)
        await msg.ack()

    attempts = ("_INBOX.>", f"{theirs.settings.inbox_prefix}.>", "*.>", ">")
    puller = InboxPuller(
        victim,
        theirs.settings.stream,
        theirs.settings.consumer,
        on_message=arrive,
        on_change=lambda: None,
        expires=2.0,
    )
    try:
        for subject in attempts:
            await nc.subscribe(subject, cb=sniff)
        await nc.flush()
        await eventually(
            lambda: _refused_subscriptions(errors) >= {a.lower() for a in attempts},
            what=f"every subscription refused (errors: {errors})",
        )

        await puller.start()
        await publish_task(js, theirs, "secret-task", {"card": "4111 1111 1111 1111"})
        await puller.pull(1)
        await eventually(lambda: len(pulled) == 1, what="the other pool's task pulled")
        await victim.jetstream().consumer_info(theirs.settings.stream, theirs.settings.consumer)
        await asyncio.sleep(0.3)
        assert sniffed == []
        assert victim_errors == []

        # the refusals are per subscription: the connection works under its own prefix
        info = await nc.jetstream().consumer_info(mine.settings.stream, mine.settings.consumer)
        assert info.name == mine.settings.consumer
    finally:
        await puller.close()
        await victim.close()
        await nc.close()


async def test_a_pools_credentials_get_no_reply_without_the_pools_inbox_prefix(
    admin: NATS, secure_nats_server: NatsServer, nats_auth: NatsAuth
) -> None:
    """What a worker that ignored the prefix would meet: its reply inbox is refused, so no
    JetStream call (bind, pull, watch, dead-letter PubAck) ever gets an answer."""
    js = admin.jetstream()
    mine = await make_pool(js, secure_nats_server.url)
    errors: list[str] = []
    nc = await _restricted(secure_nats_server, _pool_user(nats_auth, mine), errors)
    try:
        with pytest.raises(nats.errors.TimeoutError):
            await nc.jetstream(timeout=1.0).consumer_info(
                mine.settings.stream, mine.settings.consumer
            )
        await eventually(
            lambda: any(s.startswith("_inbox.") for s in _refused_subscriptions(errors)),
            what=f"the default inbox refused (errors: {errors})",
        )
    finally:
        await nc.close()


async def test_a_worker_with_only_its_pools_permissions_tracks_states_obeys_cancels_and_limits(
    admin: NATS, secure_nats_server: NatsServer, nats_auth: NatsAuth, tmp_path: Path
) -> None:
    await _control_kv(admin)
    pool = await make_tracked_pool(
        admin,
        secure_nats_server.url,
        handler="tests.worker.handlers:handle",
        settings={"nats_tls_ca_file": str(nats_auth.tls.ca_file), "log_level": "DEBUG"},
        retry={"maxAttempts": 3, "backoff": {"initialSeconds": 0.1, "maxSeconds": 0.2}},
        rateLimit={"perSecond": 100},  # every start takes a permit from the pool's counters
        keyedConcurrency={"header": "Customer", "maxPerKey": 1},  # and keyed ones a lease
    )
    user = issue_user(
        nats_auth.directory,
        nats_auth.account(ACCOUNT),
        f"pool-{pool.name}",
        permissions=worker_permissions(pool.settings).as_jwt_claims(),
    )
    settings = pool.settings.model_copy(update={"nats_credentials_file": str(user.creds_file)})
    done, log = tmp_path / "done", tmp_path / "worker.log"
    proc = spawn_worker(settings, done, log)
    client = pool.client
    try:
        flaky = await client.publish({"fail_times": 1})  # a redelivery: its runs are read
        long = await client.publish({"sleep": 30})

        async def phase(task_id: str, want: TaskPhase) -> bool:
            state = await client.status(task_id)
            return state is not None and state.phase is want

        keyed = await client.publish({}, headers={"Customer": "acme"})
        await eventually(lambda: phase(keyed.id, TaskPhase.SUCCEEDED), within=20, what="keyed")
        await eventually(lambda: phase(flaky.id, TaskPhase.SUCCEEDED), within=20, what="flaky")
        assert (await flaky.status()).runs == 2  # type: ignore[union-attr]
        await eventually(lambda: phase(long.id, TaskPhase.RUNNING), within=20, what="running")
        await long.cancel()
        await eventually(lambda: phase(long.id, TaskPhase.CANCELLED), within=20, what="cancel")
        assert "permissions violation" not in log.read_text().lower()
    finally:
        kill(proc)

    # the same credentials cannot cancel tasks, nor spend another pool's rate limit
    errors: list[str] = []
    nc = await _restricted(secure_nats_server, user, errors, inbox_prefix=settings.inbox_prefix)
    try:
        await nc.publish(f"$KV.{settings.task_state_bucket}.cancel.someone", b"{}")
        await nc.publish("jetpool.ratelimit.lifecycle.another-pool.1", b"")
        await nc.flush()
        await eventually(lambda: len(errors) >= 2, what="the cancel and count refused")
        assert all("permissions violation for publish" in e.lower() for e in errors)
    finally:
        await nc.close()
