"""A laned pool's stream, transform and consumers on a real nats-server (ensure_plan)."""

from __future__ import annotations

import uuid
from typing import Any, cast

import pytest
from nats.aio.client import Client as NATS

from e2e.testbed.nats_server import NatsServer
from jetpool_operator.adapters.nats import ConnectionKey, ResourceConflict, ensure_plan
from jetpool_operator.api.v1alpha1 import WorkerPoolSpec
from jetpool_operator.controller import OperatorRuntime, sync_nats
from jetpool_operator.core import nats_resources
from jetpool_operator.core.lanes import base_subject
from jetpool_operator.core.observation import ObservationMode

pytestmark = pytest.mark.nats

PRIORITIES = {
    "levels": [{"name": "high", "weight": 100}, {"name": "normal", "weight": 10}, {"name": "low"}],
    "default": "normal",
}


def _plan(namespace: str, **spec: Any) -> nats_resources.NatsPlan:
    pool = WorkerPoolSpec.model_validate(
        {"image": "w:1", "handler": "a:b", "nats": {"url": "nats://x"}, **spec}
    )
    return nats_resources.plan(namespace, "lanes", pool, uid="uid-l")


def _ns() -> str:
    return f"t{uuid.uuid4().hex[:8]}"


async def _pending(nc: NATS, plan: nats_resources.NatsPlan) -> dict[str, int]:
    js = nc.jetstream()
    out = {}
    for consumer in plan.consumers:
        info = await js.consumer_info(consumer.stream, consumer.durable_name)
        out[consumer.durable_name] = int(info.num_pending or 0)
    return out


async def test_a_laned_pool_gets_its_transform_and_every_lane_consumer(nc: NATS) -> None:
    ns = _ns()
    plan = _plan(ns, priorities=PRIORITIES, ordered={"partitions": 4})
    outcomes = await ensure_plan(nc, plan)
    consumers = {o.name: o.action for o in outcomes if o.kind == "consumer"}
    assert consumers == {c.durable_name: "created" for c in plan.consumers}
    assert len(consumers) == 3 + 4
    js = nc.jetstream()
    info = await js.stream_info(plan.task_stream.name)
    assert info.config.subject_transform is not None
    assert (info.config.subject_transform.src, info.config.subject_transform.dest) == (
        plan.task_stream.subject_transform
    )
    partition = (await js.consumer_info(plan.task_stream.name, "workers-ordered-0")).config
    assert (partition.max_ack_pending, partition.max_deliver) == (1, -1)

    base = base_subject(ns, "lanes")
    ack = await js.publish(f"{base}.ordered.alpha", b"a")
    stored = (await js.get_msg(plan.task_stream.name, ack.seq)).subject
    assert stored is not None
    # FNV-1a of "alpha" mod 4, as nats-server (and every publisher) computes it
    prefix, partition_token, key = stored.rsplit(".", 2)
    assert (prefix, key) == (f"{base}.ordered", "alpha")
    await js.publish(f"{base}.high.resize", b"h")
    await js.publish(f"{base}.low.resize", b"l")
    await js.publish(f"{base}.normal.resize", b"n")
    await js.publish(f"{base}.resize", b"n")
    pending = await _pending(nc, plan)
    assert pending == {
        "workers": 2,
        "workers-high": 1,
        "workers-low": 1,
        **{f"workers-ordered-{p}": int(str(p) == partition_token) for p in range(4)},
    }
    # what nats-server stores (the transform, the filters, unlimited deliveries) reads back
    # as asked for: a reconcile changes nothing
    again = await ensure_plan(nc, plan)
    assert {o.action for o in again} == {"unchanged"}, again


async def test_a_plain_pool_that_gains_priorities_keeps_its_queued_tasks_on_workers(
    nc: NATS,
) -> None:
    ns = _ns()
    plain = _plan(ns)
    await ensure_plan(nc, plain)
    base = base_subject(ns, "lanes")
    js = nc.jetstream()
    await js.publish(f"{base}.resize", b"queued before")
    laned = _plan(ns, priorities=PRIORITIES, ordered={})
    outcomes = {(o.kind, o.name): o.action for o in await ensure_plan(nc, laned)}
    assert outcomes[("stream", laned.task_stream.name)] == "updated"
    assert outcomes[("consumer", "workers")] == "updated"
    assert outcomes[("consumer", "workers-high")] == "created"
    config = (await js.consumer_info(laned.task_stream.name, "workers")).config
    assert sorted(config.filter_subjects or []) == sorted(laned.consumer.filter_subjects)
    assert config.max_deliver == -1
    assert (await _pending(nc, laned))["workers"] == 1
    assert {o.action for o in await ensure_plan(nc, laned)} == {"unchanged"}


async def test_more_partitions_update_the_transform_and_leave_the_old_consumers_alone(
    nc: NATS,
) -> None:
    ns = _ns()
    await ensure_plan(nc, _plan(ns, ordered={"partitions": 4}))
    more = _plan(ns, ordered={"partitions": 6})
    outcomes = {(o.kind, o.name): o.action for o in await ensure_plan(nc, more)}
    assert outcomes[("stream", more.task_stream.name)] == "updated"
    assert outcomes[("consumer", "workers-ordered-5")] == "created"
    fewer = _plan(ns, ordered={"partitions": 2})
    await ensure_plan(nc, fewer)
    js = nc.jetstream()
    info = await js.stream_info(more.task_stream.name)
    assert info.config.subject_transform is not None
    assert info.config.subject_transform.dest == fewer.task_stream.subject_transform[1]  # type: ignore[index]
    # reconcile never deletes: the partitions a smaller count no longer plans stay
    assert (await js.consumer_info(more.task_stream.name, "workers-ordered-5")).config


async def test_dropping_ordered_keys_removes_the_transform(nc: NATS) -> None:
    ns = _ns()
    await ensure_plan(nc, _plan(ns, ordered={}))
    levels = _plan(ns, priorities=PRIORITIES)
    await ensure_plan(nc, levels)
    info = await nc.jetstream().stream_info(levels.task_stream.name)
    assert info.config.subject_transform is None
    assert {o.action for o in await ensure_plan(nc, levels)} == {"unchanged"}


async def test_the_tick_reads_every_lane_and_sums_the_backlog(nats_server: NatsServer) -> None:
    ns = _ns()
    pool_spec = WorkerPoolSpec.model_validate(
        {
            "image": "w:1",
            "handler": "a:b",
            "nats": {"url": nats_server.url},
            "priorities": PRIORITIES,
            "ordered": {"partitions": 4},
        }
    )
    plan = nats_resources.plan(ns, "lanes", pool_spec, uid="uid-l")
    operator = OperatorRuntime(kube=cast(Any, None), observation_mode=ObservationMode.PER_POOL)
    pool = operator.start_pool(ns, "lanes")
    try:
        seen = await sync_nats(operator, pool, pool_spec, plan, lambda *_: None, 0.0)
        assert seen.problem is None
        assert seen.backlog_by_level == {"high": 0, "normal": 0, "low": 0, "ordered": 0}
        js = (await operator.nats.get(ConnectionKey(nats_server.url))).jetstream()
        base = base_subject(ns, "lanes")
        for subject in ("high.a", "high.b", "a", "normal.b", "ordered.k1", "ordered.k2"):
            await js.publish(f"{base}.{subject}", b"x")
        seen = await sync_nats(operator, pool, pool_spec, plan, lambda *_: None, 1.0)
        assert seen.backlog_by_level == {"high": 2, "normal": 2, "low": 0, "ordered": 2}
        assert seen.backlog is not None
        assert seen.backlog.pending == 6
    finally:
        await operator.stop_pool(pool)
        await operator.nats.close()


async def test_a_consumer_left_behind_that_overlaps_is_a_conflict_naming_the_way_out(
    nc: NATS,
) -> None:
    ns = _ns()
    await ensure_plan(nc, _plan(ns, priorities=PRIORITIES))
    # back to one consumer over everything: workers-high and workers-low still read theirs
    with pytest.raises(ResourceConflict, match="nats consumer rm") as refused:
        await ensure_plan(nc, _plan(ns))
    assert "'workers'" in str(refused.value)
    # a moved default level: workers would take high's subjects
    moved = {**PRIORITIES, "default": "high"}
    with pytest.raises(ResourceConflict, match="another consumer"):
        await ensure_plan(nc, _plan(ns, priorities=moved))
