"""The operator keeps a pool's periodic schedules in step with its spec, on a real nats-server
whose own scheduler then releases the tasks."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from nats.aio.client import Client as NATS

from jetpool import Client
from jetpool_operator.adapters.nats import ResourceConflict, ensure_plan
from jetpool_operator.api.v1alpha1 import WorkerPoolSpec
from jetpool_operator.core import nats_resources

pytestmark = pytest.mark.nats


def _plan(namespace: str, **spec: Any) -> nats_resources.NatsPlan:
    parsed = WorkerPoolSpec.model_validate(
        {"image": "w:1", "handler": "a:b", "nats": {"url": "nats://x"}, **spec}
    )
    return nats_resources.plan(namespace, "reports", parsed)


async def test_the_specs_schedules_are_created_kept_and_removed_and_a_users_are_left_alone(
    nc: NATS,
) -> None:
    ns = f"t{uuid.uuid4().hex[:8]}"
    tick = {"name": "tick", "every": "1s", "payload": {"n": 1}}
    nightly = {"name": "nightly", "cron": "0 0 2 * * *", "timeZone": "Europe/Amsterdam"}
    both = _plan(ns, schedules={"periodic": [tick, nightly]})
    created = await ensure_plan(nc, both)
    assert sorted((o.name, o.action) for o in created if o.kind == "schedule") == [
        ("nightly", "created"),
        ("tick", "created"),
    ]
    assert [o for o in await ensure_plan(nc, both) if o.kind == "schedule"] == []

    client = Client(nc, namespace=ns, pool="reports")
    await client.schedule("mine", {"by": "user"}, every="1h")
    listed = {s.name: s for s in await client.schedules()}
    assert set(listed) == {"tick", "nightly", "mine"}
    assert listed["tick"].owner == "spec"
    assert listed["mine"].owner is None
    assert listed["nightly"].time_zone == "Europe/Amsterdam"

    # nats-server releases the spec's task on its own: the stream gains tasks every second
    consumer = (await nc.jetstream().consumer_info(both.task_stream.name, "workers")).num_pending
    await asyncio.sleep(2.5)
    later = (await nc.jetstream().consumer_info(both.task_stream.name, "workers")).num_pending
    assert later >= consumer + 2

    changed = _plan(ns, schedules={"periodic": [{**tick, "every": "2s"}]})
    outcomes = {(o.name, o.action) for o in await ensure_plan(nc, changed) if o.kind == "schedule"}
    assert outcomes == {("tick", "updated"), ("nightly", "deleted")}
    listed = {s.name: s for s in await client.schedules()}
    assert set(listed) == {"tick", "mine"}
    assert listed["tick"].pattern == "@every 2s"


async def test_a_schedule_the_server_refuses_is_a_conflict_that_names_it(nc: NATS) -> None:
    ns = f"t{uuid.uuid4().hex[:8]}"
    plan = _plan(
        ns, schedules={"periodic": [{"name": "tz", "cron": "@daily", "timeZone": "Mars/Olympus"}]}
    )
    with pytest.raises(ResourceConflict, match=r"periodic schedule 'tz'.*time zone"):
        await ensure_plan(nc, plan)
