"""The periodic schedules a pool's spec declares, as the messages that make them, and what it
takes to bring the task stream's schedules in step (pure; the adapter publishes and purges).

Only schedules the operator made (header ``Jetpool-Schedule-Owner: spec``) are removed when the
spec drops them; schedules users publish themselves (``jetpool schedule add``) are left alone
unless the spec declares the same name, which then wins.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from jetpool_operator.api.v1alpha1 import PeriodicSchedule, WorkerPoolSpec
from jetpool_protocol import headers as h
from jetpool_protocol.schedules import (
    OWNER_SPEC,
    SCHEDULE_OWNER,
    check_cron,
    check_every,
    periodic_subject,
    schedule_headers,
)

SERVER_ADDED = frozenset({"Nats-Rollup"})
"""Headers nats-server adds to a stored schedule (not part of what the operator publishes)."""


@dataclass(frozen=True, slots=True)
class ScheduleMessage:
    subject: str
    payload: bytes
    headers: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class StoredSchedule:
    payload: bytes
    headers: Mapping[str, str]

    @property
    def owned(self) -> bool:
        return self.headers.get(SCHEDULE_OWNER) == OWNER_SPEC


@dataclass(frozen=True, slots=True)
class ScheduleChanges:
    publish: tuple[ScheduleMessage, ...]
    delete: tuple[str, ...]


def _message(prefix: str, default_subject_root: str, schedule: PeriodicSchedule) -> ScheduleMessage:
    pattern = check_every(schedule.every) if schedule.every else check_cron(schedule.cron or "")
    target = schedule.subject or f"{default_subject_root}{schedule.name}"
    headers = schedule_headers(
        pattern,
        target,
        time_zone=schedule.time_zone,
        extra={
            h.CONTENT_TYPE: "application/json",
            **schedule.headers,
            SCHEDULE_OWNER: OWNER_SPEC,
        },
    )
    payload = json.dumps(schedule.payload, separators=(",", ":"), sort_keys=True).encode()
    return ScheduleMessage(
        periodic_subject(prefix, schedule.name), payload, tuple(sorted(headers.items()))
    )


def desired(
    prefix: str, default_subject_root: str, spec: WorkerPoolSpec
) -> tuple[ScheduleMessage, ...]:
    """``default_subject_root``: ``tasks.<ns>.<pool>.``, where a schedule without a subject
    sends its tasks."""
    return tuple(_message(prefix, default_subject_root, s) for s in spec.schedules.periodic)


def changes(
    wanted: tuple[ScheduleMessage, ...], stored: Mapping[str, StoredSchedule]
) -> ScheduleChanges:
    """Publish what is missing or differs; delete the operator's own that the spec dropped."""
    publish = []
    for message in wanted:
        have = stored.get(message.subject)
        if have is None or (
            have.payload,
            tuple(sorted((k, v) for k, v in have.headers.items() if k not in SERVER_ADDED)),
        ) != (message.payload, message.headers):
            publish.append(message)
    names = {m.subject for m in wanted}
    delete = tuple(sorted(s for s, have in stored.items() if have.owned and s not in names))
    return ScheduleChanges(tuple(publish), delete)
