"""The NATS adapter obeys the ownership rules on a real nats-server (2.10+ metadata)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from nats.aio.client import Client as NATS
from nats.js import api

from jetpool_operator.adapters.nats import NotOwner, delete_streams, ensure_plan
from jetpool_operator.api.v1alpha1 import WorkerPoolSpec
from jetpool_operator.core import nats_resources
from jetpool_operator.core.tenancy import OWNER_NAME, OWNER_NAMESPACE, OWNER_UID, Owner, Refusal

pytestmark = pytest.mark.nats


def _plan(namespace: str, pool: str, uid: str, **nats: Any) -> nats_resources.NatsPlan:
    spec = WorkerPoolSpec.model_validate(
        {"image": "w:1", "handler": "a:b", "nats": {"url": "nats://x", **nats}}
    )
    return nats_resources.plan(namespace, pool, spec, uid=uid)


def _ns() -> str:
    return f"t{uuid.uuid4().hex[:8]}"


async def _snapshot(nc: NATS, stream: str) -> tuple[Any, Any]:
    js = nc.jetstream()
    return (await js.stream_info(stream)).config, (await js.consumer_info(stream, "workers")).config


async def test_created_streams_and_consumer_record_their_owner(nc: NATS) -> None:
    ns = _ns()
    plan = _plan(ns, "victim", "uid-a")
    await ensure_plan(nc, plan)
    stream, consumer = await _snapshot(nc, plan.names.stream)
    dlq = (await nc.jetstream().stream_info(plan.names.dead_letter_stream)).config
    assert plan.task_state is not None
    states = (await nc.jetstream().stream_info(plan.task_state.name)).config
    for metadata in (stream.metadata, consumer.metadata, dlq.metadata, states.metadata):
        assert metadata[OWNER_NAMESPACE] == ns
        assert metadata[OWNER_NAME] == "victim"
        assert metadata[OWNER_UID] == "uid-a"
    # the task stream, dead-letter stream, task-state bucket and consumer read back as made
    assert [o.action for o in await ensure_plan(nc, plan)] == ["unchanged"] * 4


async def test_the_flow_control_streams_read_back_as_made(nc: NATS) -> None:
    limits = {
        "rateLimit": {"perSecond": 50, "perKey": {"header": "Customer", "perSecond": 5}},
        "keyedConcurrency": {"header": "Customer", "maxPerKey": 2},
    }
    spec = WorkerPoolSpec.model_validate(
        {"image": "w:1", "handler": "a:b", "nats": {"url": "nats://x"}, **limits}
    )
    plan = nats_resources.plan(_ns(), "limited", spec, uid="uid-f")
    created = await ensure_plan(nc, plan)
    assert [o.action for o in created] == ["created"] * 6
    # what nats-server normalizes (duplicate window, counters, TTLs) is asked for as such,
    # so a reconcile changes nothing
    assert [o.action for o in await ensure_plan(nc, plan)] == ["unchanged"] * 6


async def test_a_pool_naming_another_pool_s_stream_is_refused_and_changes_nothing(
    nc: NATS,
) -> None:
    ns = _ns()
    victim = _plan(ns, "victim", "uid-a")
    await ensure_plan(nc, victim)
    before = await _snapshot(nc, victim.names.stream)
    hostile = _plan(
        f"{ns}-b", "hostile", "uid-b", stream=victim.names.stream, adoptExisting=True, maxMsgs=5
    )
    with pytest.raises(NotOwner) as refused:
        await ensure_plan(nc, hostile)
    assert refused.value.reason == Refusal.OWNED_BY_ANOTHER_POOL
    assert f"WorkerPool {ns}/victim" in str(refused.value)
    assert await _snapshot(nc, victim.names.stream) == before


async def test_an_unowned_stream_is_adopted_only_with_the_opt_in_and_then_stamped(
    nc: NATS,
) -> None:
    ns = _ns()
    plan = _plan(ns, "legacy", "uid-l")
    js = nc.jetstream()
    await js.add_stream(
        api.StreamConfig(
            name=plan.names.stream,
            subjects=list(plan.names.subjects),
            retention=api.RetentionPolicy.WORK_QUEUE,
        )
    )
    with pytest.raises(NotOwner) as refused:
        await ensure_plan(nc, plan)
    assert refused.value.reason == Refusal.ADOPTION_REQUIRED
    assert "adoptExisting" in str(refused.value)
    assert not (await js.stream_info(plan.names.stream)).config.metadata.get(OWNER_NAME)

    adopting = _plan(ns, "legacy", "uid-l", adoptExisting=True)
    outcomes = {(o.kind, o.name): o.action for o in await ensure_plan(nc, adopting)}
    assert outcomes[("stream", plan.names.stream)] == "updated"
    assert (await js.stream_info(plan.names.stream)).config.metadata[OWNER_UID] == "uid-l"
    # Once stamped, the opt-in is no longer needed.
    await ensure_plan(nc, plan)


async def test_an_unowned_consumer_in_an_owned_stream_needs_the_opt_in_too(nc: NATS) -> None:
    ns = _ns()
    plan = _plan(ns, "p", "uid-p")
    await ensure_plan(nc, plan)
    js = nc.jetstream()
    await js.delete_consumer(plan.names.stream, "workers")
    await js.add_consumer(plan.names.stream, api.ConsumerConfig(durable_name="workers"))
    with pytest.raises(NotOwner, match="consumer"):
        await ensure_plan(nc, plan)


async def test_deletion_removes_only_streams_the_pool_owns(nc: NATS) -> None:
    ns = _ns()
    victim = _plan(ns, "victim", "uid-a")
    await ensure_plan(nc, victim)
    streams = [victim.names.stream, victim.names.dead_letter_stream]

    for stranger in (Owner(f"{ns}-b", "hostile", "uid-b"), Owner(ns, "victim", "uid-old")):
        result = await delete_streams(nc, streams, stranger)
        assert result.deleted == []
        assert len(result.kept) == 2
    await nc.jetstream().stream_info(victim.names.stream)

    result = await delete_streams(nc, streams, Owner(ns, "victim", "uid-a"))
    assert result.deleted == streams


async def test_an_unowned_stream_of_another_namespace_is_not_adopted_even_with_the_opt_in(
    nc: NATS,
) -> None:
    victim_ns, hostile_ns = _ns(), _ns()
    name = f"legacy-{victim_ns}"
    js = nc.jetstream()
    await js.add_stream(
        api.StreamConfig(
            name=name,
            subjects=[f"tasks.{victim_ns}.orders.>"],
            retention=api.RetentionPolicy.WORK_QUEUE,
        )
    )
    before = (await js.stream_info(name)).config
    hostile = _plan(hostile_ns, "thief", "uid-t", stream=name, adoptExisting=True)
    with pytest.raises(NotOwner) as refused:
        await ensure_plan(nc, hostile)
    assert refused.value.reason == Refusal.ADOPTION_REFUSED
    assert (await js.stream_info(name)).config == before
