"""The worker's own JetStream pull protocol: what is owed, status messages, late deliveries."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import api

from e2e.testbed.nats_server import NatsServer
from jetpool_worker import consumer_loop
from jetpool_worker.consumer_loop import Worker
from jetpool_worker.pull import (
    CLOCK_TOLERANCE_SECONDS,
    EXPIRY_GRACE_SECONDS,
    InboxPuller,
    PullLedger,
    status_of,
)
from tests.worker import handlers
from tests.worker.helpers import Pool, eventually, make_pool, publish_task

# ------------------------------------------------------------------ the ledger (pure)


def test_a_delivery_counts_against_the_oldest_request():
    ledger = PullLedger()
    ledger.sent(2, now=0.0, expires=0.5)
    ledger.sent(3, now=0.1, expires=0.5)
    for _ in range(3):
        ledger.received()
    assert ledger.owed(now=0.2) == 2
    assert len(ledger) == 1


def test_a_request_timeout_ends_the_oldest_request_only_once_it_can_have_expired():
    ledger = PullLedger()
    ledger.sent(4, now=0.0, expires=0.5)
    ledger.timed_out(now=0.5 - CLOCK_TOLERANCE_SECONDS - 0.01)  # a late 408 of an older one
    assert ledger.owed(now=0.4) == 4
    ledger.timed_out(now=0.5)
    assert ledger.owed(now=0.5) == 0


def test_a_request_whose_timeout_never_arrives_is_forgotten_after_its_expiry_and_grace():
    ledger = PullLedger()
    ledger.sent(4, now=0.0, expires=0.5)
    assert ledger.owed(now=0.5 + EXPIRY_GRACE_SECONDS - 0.01) == 4
    assert ledger.owed(now=0.5 + EXPIRY_GRACE_SECONDS) == 0


def test_a_refused_request_is_the_newest_and_the_older_ones_stand():
    ledger = PullLedger()
    ledger.sent(2, now=0.0, expires=0.5)
    ledger.sent(5, now=0.1, expires=0.5)
    ledger.rejected()
    assert ledger.owed(now=0.2) == 2


def test_quiet_in_lasts_until_the_newest_request_can_take_no_more_messages():
    ledger = PullLedger()
    assert ledger.quiet_in(now=0.0) == 0.0
    ledger.sent(1, now=0.0, expires=0.5)
    ledger.sent(1, now=0.2, expires=0.5)
    assert ledger.quiet_in(now=0.3) == pytest.approx(0.4 + EXPIRY_GRACE_SECONDS)
    ledger.reset()
    assert ledger.quiet_in(now=0.3) == 0.0


def test_requests_confirmed_late_stay_live_until_the_confirmation_plus_their_expiry():
    # sent at 0.0 but stuck in a busy client's buffer: the server may have got them as late as
    # the flush that returned at 2.0, so a closing inbox must wait until 2.5 (plus grace)
    ledger = PullLedger()
    ledger.sent(4, now=0.0, expires=0.5)
    ledger.sent(4, now=0.1, expires=0.5)
    ledger.reached_server_by(2.0, expires=0.5)
    assert ledger.quiet_in(now=2.0) == pytest.approx(0.5 + EXPIRY_GRACE_SECONDS)
    assert ledger.owed(now=2.7) == 8
    assert ledger.owed(now=2.5 + EXPIRY_GRACE_SECONDS) == 0


def test_a_confirmation_never_shortens_a_request_sent_after_it():
    ledger = PullLedger()
    ledger.sent(1, now=3.0, expires=0.5)
    ledger.reached_server_by(2.0, expires=0.5)
    assert ledger.quiet_in(now=3.0) == pytest.approx(0.5 + EXPIRY_GRACE_SECONDS)


def test_a_message_with_a_reply_subject_is_a_delivery_even_with_a_status_header():
    hostile = Msg(
        _client=None, subject="t", reply="$JS.ACK.S.c.1.1.1.1.0", headers={"Status": "408"}
    )
    status = Msg(_client=None, subject="_INBOX.x", headers={"Status": "408"})
    assert status_of(hostile) is None
    assert status_of(status) == "408"


def test_any_status_ends_a_no_wait_request_even_before_an_older_one_expires():
    ledger = PullLedger()
    ledger.sent_no_wait(3, now=0.0)
    ledger.received()
    ended = ledger.timed_out(now=0.0)  # 404 No Messages / 408 after the one there was
    assert ended is not None
    assert ended.delivered == 1
    assert ledger.owed(now=0.0) == 0


def test_a_no_wait_request_given_all_it_asked_for_ends_without_a_status():
    ledger = PullLedger()
    ledger.sent_no_wait(2, now=0.0)
    assert ledger.received() is None
    done = ledger.received()
    assert done is not None
    assert done.delivered == 2
    assert len(ledger) == 0


def test_only_requests_that_wait_on_the_server_count_as_waiting():
    ledger = PullLedger()
    ledger.sent_no_wait(2, now=0.0)
    assert not ledger.waiting
    ledger.sent(1, now=0.0, expires=2.0)
    assert ledger.waiting


# ------------------------------------------------------------------ the puller (real server)


class Recorder:
    """What an :class:`InboxPuller` hands out, on a clock the test moves."""

    def __init__(self) -> None:
        self.delivered: list[Any] = []
        self.changes = 0
        self.now = 0.0

    async def on_message(self, msg: Any) -> None:
        self.delivered.append(msg)

    def on_change(self) -> None:
        self.changes += 1

    def puller(self, nc: NATS, pool: Pool, expires: float) -> InboxPuller:
        return InboxPuller(
            nc,
            pool.settings.stream,
            pool.settings.consumer,
            on_message=self.on_message,
            on_change=self.on_change,
            expires=expires,
            clock=lambda: self.now,
        )


@pytest.mark.nats
async def test_deliveries_reach_the_handler_and_count_down_what_is_owed(
    nc: NATS, nats_server: NatsServer
):
    pool = await make_pool(nc.jetstream(), nats_server.url)
    for i in range(2):
        await publish_task(nc.jetstream(), pool, f"d{i}")
    rec = Recorder()
    puller = rec.puller(nc, pool, expires=5.0)
    await puller.start()
    await puller.pull(5)
    await eventually(lambda: len(rec.delivered) == 2, what="two deliveries")
    assert puller.owed() == 3
    for msg in rec.delivered:
        await msg.ack()
    await puller.close()


@pytest.mark.nats
async def test_an_expired_pull_reports_408_which_ends_it_and_never_reaches_the_handler(
    nc: NATS, nats_server: NatsServer
):
    pool = await make_pool(nc.jetstream(), nats_server.url)
    rec = Recorder()
    puller = rec.puller(nc, pool, expires=0.2)
    await puller.start()
    await puller.pull(3)
    rec.now = 0.2  # it can have expired now; the local forgetting would take until 0.45
    await eventually(lambda: rec.changes == 1, within=2, what="the 408")
    assert puller.owed() == 0
    assert rec.delivered == []
    await puller.close()


@pytest.mark.nats
async def test_a_pull_beyond_max_waiting_is_refused_and_the_first_still_stands(
    nc: NATS, nats_server: NatsServer
):
    js = nc.jetstream()
    pool = await make_pool(js, nats_server.url)
    await js.delete_consumer(pool.settings.stream, pool.settings.consumer)
    await js.add_consumer(
        pool.settings.stream,
        api.ConsumerConfig(
            durable_name=pool.settings.consumer,
            ack_policy=api.AckPolicy.EXPLICIT,
            max_waiting=1,
        ),
    )
    rec = Recorder()
    puller = rec.puller(nc, pool, expires=5.0)
    await puller.start()
    await puller.pull(2)
    await puller.pull(3)
    await eventually(lambda: rec.changes == 1, within=2, what="the 409")
    assert puller.owed() == 2
    await publish_task(js, pool, "after-refusal")
    await eventually(lambda: len(rec.delivered) == 1, what="the first pull served")
    await rec.delivered[0].ack()
    await puller.close()


@pytest.mark.nats
async def test_deleting_the_consumer_drops_every_outstanding_pull(
    nc: NATS, nats_server: NatsServer
):
    js = nc.jetstream()
    pool = await make_pool(js, nats_server.url)
    rec = Recorder()
    puller = rec.puller(nc, pool, expires=5.0)
    await puller.start()
    await puller.pull(2)
    await puller.pull(2)

    async def waiting() -> bool:
        info = await js.consumer_info(pool.settings.stream, pool.settings.consumer)
        return info.num_waiting == 2

    await eventually(waiting, what="both pulls waiting on the server")
    assert puller.owed() == 4
    await js.delete_consumer(pool.settings.stream, pool.settings.consumer)
    await eventually(lambda: rec.changes >= 1, within=2, what="the 409 Consumer Deleted")
    assert puller.owed() == 0
    await puller.close()


@pytest.mark.nats
async def test_the_inbox_survives_a_server_restart_and_a_pull_after_it_is_served(
    private_nats_server: NatsServer,
):
    client = await nats.connect(
        private_nats_server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2
    )
    js = client.jetstream()
    pool = await make_pool(js, private_nats_server.url)
    rec = Recorder()
    puller = rec.puller(client, pool, expires=0.5)
    await puller.start()
    await asyncio.to_thread(private_nats_server.restart)
    await eventually(lambda: client.is_connected, what="reconnect")
    await publish_task(js, pool, "after-restart")
    await puller.pull(1)
    await eventually(lambda: len(rec.delivered) == 1, what="delivery after the restart")
    await rec.delivered[0].ack()
    await puller.close()
    await client.close()


# ------------------------------------------------------------------ the worker's use of it


@pytest.mark.nats
async def test_a_task_delivered_after_the_worker_stopped_is_handed_back_not_run(
    nc: NATS, nats_server: NatsServer, monkeypatch: pytest.MonkeyPatch
):
    # Long pulls, so one is surely still waiting on the server when the stop comes.
    monkeypatch.setattr(consumer_loop, "FETCH_EXPIRY_SECONDS", 2.0)
    js = nc.jetstream()
    pool = await make_pool(js, nats_server.url)
    worker = Worker(pool.settings)
    run = asyncio.create_task(worker.run())
    await eventually(lambda: worker.fetch_requests > 0, what="a pull waiting")
    worker.request_stop()
    task_id = f"late-{uuid.uuid4().hex[:8]}"
    await publish_task(js, pool, task_id)
    await asyncio.wait_for(run, 10)
    sub = await js.pull_subscribe_bind(pool.settings.consumer, stream=pool.settings.stream)
    [msg] = await sub.fetch(1, timeout=5)
    assert msg.metadata.num_delivered == 2  # delivered to the stopping worker, nak'd by it
    assert handlers.DONE[task_id] == 0
    await msg.ack()
    await sub.unsubscribe()


@pytest.mark.nats
async def test_a_sweep_takes_what_is_there_now_and_returns_without_waiting(
    nc: NATS, nats_server: NatsServer
):
    pool = await make_pool(nc.jetstream(), nats_server.url)
    for i in range(3):
        await publish_task(nc.jetstream(), pool, f"s{i}")
    rec = Recorder()
    puller = rec.puller(nc, pool, expires=5.0)
    await puller.start()
    assert await puller.sweep(2) == 2
    assert await puller.sweep(5) == 1  # one left: a short answer, then the status
    assert await puller.sweep(5) == 0  # empty: 404 at once
    assert len(rec.delivered) == 3
    assert rec.changes == 0  # a sweep's end is its own answer, not a reason to pull again
    assert puller.owed() == 0
    for msg in rec.delivered:
        await msg.ack()
    await puller.close()


@pytest.mark.nats
async def test_a_sweep_of_a_consumer_at_its_max_ack_pending_is_held_not_answered(
    nc: NATS, nats_server: NatsServer
):
    """Why ordered partitions are never swept (jetpool_worker.lanes): the server holds a
    no_wait pull while the partition's one task runs, instead of answering it."""
    js = nc.jetstream()
    pool = await make_pool(js, nats_server.url)
    await js.delete_consumer(pool.settings.stream, "workers")  # a WorkQueue: one reader
    await js.add_consumer(
        pool.settings.stream,
        api.ConsumerConfig(
            durable_name="single",
            ack_policy=api.AckPolicy.EXPLICIT,
            max_ack_pending=1,
            filter_subject=f"{pool.subject_prefix}.>",
        ),
    )
    for i in range(2):
        await publish_task(js, pool, f"m{i}")
    rec = Recorder()
    puller = InboxPuller(
        nc,
        pool.settings.stream,
        "single",
        on_message=rec.on_message,
        on_change=rec.on_change,
        expires=5.0,
    )
    await puller.start()
    assert await puller.sweep(1) == 1
    held = asyncio.create_task(puller.sweep(1))
    await asyncio.sleep(0.5)
    assert not held.done()
    await rec.delivered[0].ack()  # the partition frees: the held pull is served
    assert await held == 1
    await rec.delivered[1].ack()
    await puller.close()
