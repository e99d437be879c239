"""Schedules as nats-server takes them: patterns, subjects and headers."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from jetpool_protocol.schedules import (
    Kind,
    ScheduleError,
    at_pattern,
    check_cron,
    check_every,
    delayed_subject,
    parse_stored,
    periodic_subject,
    schedule_headers,
    schedules_allowed,
)

PREFIX = "jetpool.schedules.shop.emails"


def test_a_one_shot_is_an_rfc3339_at_pattern() -> None:
    assert at_pattern(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)) == "@at 2026-01-02T03:04:05Z"


@pytest.mark.parametrize("text", ["30s", "5m", "1h30m", "2h"])
def test_written_intervals_pass(text: str) -> None:
    assert check_every(text) == f"@every {text}"


@pytest.mark.parametrize("text", ["", "0s", "0m0s", "1d", "999ms", "5 minutes", "m"])
def test_intervals_nats_server_refuses_are_refused_here(text: str) -> None:
    with pytest.raises(ScheduleError):
        check_every(text)


def test_cron_needs_six_fields_or_a_predefined_name() -> None:
    assert check_cron("0  */5 * * * *") == "0 */5 * * * *"
    assert check_cron("@daily") == "@daily"
    with pytest.raises(ScheduleError, match="6 fields"):
        check_cron("*/5 * * * *")
    with pytest.raises(ScheduleError):
        check_cron("@reboot")


def test_a_time_zone_goes_with_cron_only() -> None:
    headers = schedule_headers("0 0 9 * * *", "tasks.shop.emails.report", time_zone="UTC")
    assert headers["Nats-Schedule-Time-Zone"] == "UTC"
    with pytest.raises(ScheduleError):
        schedule_headers("@every 1m", "tasks.shop.emails.x", time_zone="UTC")


def test_schedule_headers_keep_the_tasks_own() -> None:
    headers = schedule_headers("@every 1m", "tasks.shop.emails.x", extra={"Jetpool-Ttl": "60"})
    assert headers == {
        "Jetpool-Ttl": "60",
        "Nats-Schedule": "@every 1m",
        "Nats-Schedule-Target": "tasks.shop.emails.x",
    }


def test_subjects_separate_delayed_tasks_from_periodic_schedules() -> None:
    assert delayed_subject(PREFIX, "order-17") == f"{PREFIX}.task.order-17"
    assert periodic_subject(PREFIX, "nightly") == f"{PREFIX}.periodic.nightly"
    with pytest.raises(ScheduleError):
        periodic_subject(PREFIX, "Nightly.Report")


def test_a_stored_schedule_reads_back() -> None:
    info = parse_stored(
        PREFIX,
        f"{PREFIX}.periodic.nightly",
        {"Nats-Schedule": "@daily", "Nats-Schedule-Target": "tasks.shop.emails.n"},
        12,
    )
    assert (info.kind, info.name, info.pattern, info.sequence) == (
        Kind.PERIODIC,
        "nightly",
        "@daily",
        12,
    )
    with pytest.raises(ScheduleError):
        parse_stored(PREFIX, f"{PREFIX}.periodic.x", {}, 1)


def test_only_a_stream_without_limits_can_hold_schedules() -> None:
    assert schedules_allowed(-1, -1)
    assert schedules_allowed(0, 0)
    assert not schedules_allowed(100, 0)
    assert not schedules_allowed(0, 1024)
