"""The spec's periodic schedules as messages, and what keeps the stream in step with them."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from jetpool_operator.api.v1alpha1 import WorkerPoolSpec
from jetpool_operator.core.nats_resources import plan
from jetpool_operator.core.periodic_schedules import StoredSchedule, changes, desired

PREFIX = "jetpool.schedules.shop.emails"
ROOT = "tasks.shop.emails."


def spec(*periodic: dict[str, Any]) -> WorkerPoolSpec:
    return WorkerPoolSpec.model_validate(
        {
            "image": "w:1",
            "handler": "app:run",
            "nats": {"url": "nats://n"},
            "schedules": {"periodic": list(periodic)},
        }
    )


NIGHTLY = {"name": "nightly", "cron": "0 0 2 * * *", "timeZone": "Europe/Amsterdam"}
TICK = {"name": "tick", "every": "30s", "payload": {"ping": True}, "subject": "tasks.shop.emails.p"}


def stored(message: Any, **headers: str) -> StoredSchedule:
    return StoredSchedule(
        message.payload, {**dict(message.headers), "Nats-Rollup": "sub", **headers}
    )


def test_each_declared_schedule_is_one_message_marked_as_the_specs() -> None:
    nightly, tick = desired(PREFIX, ROOT, spec(NIGHTLY, TICK))
    assert nightly.subject == f"{PREFIX}.periodic.nightly"
    assert dict(nightly.headers) == {
        "Content-Type": "application/json",
        "Jetpool-Schedule-Owner": "spec",
        "Nats-Schedule": "0 0 2 * * *",
        "Nats-Schedule-Target": "tasks.shop.emails.nightly",
        "Nats-Schedule-Time-Zone": "Europe/Amsterdam",
    }
    assert nightly.payload == b"{}"
    assert dict(tick.headers)["Nats-Schedule"] == "@every 30s"
    assert dict(tick.headers)["Nats-Schedule-Target"] == "tasks.shop.emails.p"
    assert tick.payload == b'{"ping":true}'


def test_what_is_stored_as_declared_is_left_alone() -> None:
    wanted = desired(PREFIX, ROOT, spec(NIGHTLY, TICK))
    result = changes(wanted, {m.subject: stored(m) for m in wanted})
    assert (result.publish, result.delete) == ((), ())


def test_missing_or_changed_schedules_are_published() -> None:
    nightly, tick = desired(PREFIX, ROOT, spec(NIGHTLY, TICK))
    [old_tick] = desired(PREFIX, ROOT, spec({**TICK, "every": "1m"}))
    result = changes((nightly, tick), {tick.subject: stored(old_tick)})
    assert result.publish == (nightly, tick)


def test_only_the_operators_own_schedules_are_deleted_when_the_spec_drops_them() -> None:
    [nightly] = desired(PREFIX, ROOT, spec(NIGHTLY))
    mine = StoredSchedule(b"{}", {"Jetpool-Schedule-Owner": "spec", "Nats-Schedule": "@daily"})
    users = StoredSchedule(b"{}", {"Nats-Schedule": "@hourly"})
    result = changes((), {nightly.subject: mine, f"{PREFIX}.periodic.cli-made": users})
    assert result.delete == (nightly.subject,)


def test_the_plan_carries_the_schedules_only_when_the_stream_holds_them() -> None:
    with_schedules = spec(NIGHTLY)
    assert len(plan("shop", "emails", with_schedules).periodic) == 1
    off = with_schedules.model_copy(
        update={"schedules": with_schedules.schedules.model_copy(update={"enabled": False})}
    )
    assert plan("shop", "emails", off).periodic == ()


@pytest.mark.parametrize(
    "schedule",
    [
        {"name": "a", "cron": "*/5 * * * *"},
        {"name": "a", "cron": "@reboot"},
        {"name": "a", "every": "0s"},
        {"name": "a", "every": "1d"},
        {"name": "Caps", "every": "1m"},
    ],
)
def test_schedules_nats_server_would_refuse_are_rejected_with_the_pool(
    schedule: dict[str, Any],
) -> None:
    with pytest.raises(ValidationError):
        spec(schedule)
