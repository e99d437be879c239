"""Delayed and periodic tasks as nats-server message schedules (server 2.12+ ``@at``, 2.14+
``@every`` and cron): no scheduler process of jetpool's own.

A schedule is a message on ``<prefix>.task.<key>`` (one delayed task) or
``<prefix>.periodic.<name>`` in the pool's task stream (``<prefix>`` is
:attr:`~jetpool_protocol.naming.PoolNames.schedule_subject_prefix`). The workers' consumer
reads only the task subjects, so the schedule itself is never delivered; at its time the server
publishes its payload and headers to ``Nats-Schedule-Target``, a task subject, where the
workers take it like any task. Facts verified against nats-server 2.15 (docs/tasks.md):

* the stream needs ``allow_msg_schedules`` (with roll-ups, and discard *old*: see
  :func:`schedules_allowed`); a schedule survives server restarts (file storage);
* the produced task carries the schedule's payload and headers except ``Nats-Msg-Id`` and
  ``Nats-Schedule*``, plus ``Nats-Scheduler`` (the schedule's subject);
* re-publishing on a schedule's subject replaces it; purging the subject deletes it.

Pure: subjects and headers; the I/O is in the client and the operator.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from jetpool_protocol.envelope import format_time
from jetpool_protocol.task_state import id_key

SCHEDULE: str = "Nats-Schedule"
SCHEDULE_TARGET: str = "Nats-Schedule-Target"
SCHEDULE_TIME_ZONE: str = "Nats-Schedule-Time-Zone"
SCHEDULER: str = "Nats-Scheduler"
"""On a task the server released: the subject of the schedule that released it."""
SCHEDULE_OWNER: str = "Jetpool-Schedule-Owner"
"""``spec`` on the periodic schedules the operator keeps in step with the pool's spec."""
OWNER_SPEC = "spec"

TASK_TOKEN = "task"
PERIODIC_TOKEN = "periodic"
NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
"""A periodic schedule's name: a DNS-1123 label, so it is one subject token."""
EVERY_PATTERN = r"([0-9]+h)?([0-9]+m)?([0-9]+s)?"
"""Go durations of whole seconds, the form ``@every`` accepts (at least 1s)."""
PREDEFINED = frozenset(
    {"@hourly", "@daily", "@midnight", "@weekly", "@monthly", "@yearly", "@annually"}
)
CRON_PATTERN = r"^(@(" + "|".join(sorted(p[1:] for p in PREDEFINED)) + r")|\S+( \S+){5})$"
"""Six space-separated fields (seconds first) or a predefined name (the CRD checks it too)."""
CRON_FIELDS = 6


class ScheduleError(ValueError):
    """A schedule nats-server would refuse; the message says which part and why."""


class Kind(StrEnum):
    DELAYED = "delayed"
    PERIODIC = "periodic"


def schedules_allowed(max_msgs: int, max_bytes: int) -> bool:
    """Whether a pool's task stream can hold schedules. nats-server requires discard *old*
    for them; with a message or byte limit that would drop the oldest queued tasks when the
    stream is full instead of refusing new ones, so a pool with limits has no schedules."""
    return max_msgs <= 0 and max_bytes <= 0


def delayed_subject(prefix: str, task_id: str) -> str:
    return f"{prefix}.{TASK_TOKEN}.{id_key(task_id)}"


def periodic_subject(prefix: str, name: str) -> str:
    if not NAME.fullmatch(name):
        raise ScheduleError(
            f"schedule name {name!r} must be lowercase letters, digits and '-' (at most 63)"
        )
    return f"{prefix}.{PERIODIC_TOKEN}.{name}"


def at_pattern(when: datetime) -> str:
    return f"@at {format_time(when)}"


def check_every(text: str) -> str:
    """A Go duration of whole seconds, at least 1s (``30s``, ``1m30s``, ``2h``), as
    ``@every`` takes it."""
    match = re.fullmatch(EVERY_PATTERN, text.strip())
    if match is None or not any(int(part[:-1]) for part in match.groups() if part):
        raise ScheduleError(
            f"interval {text!r} must look like 30s, 5m, 1h30m (whole seconds, at least 1s)"
        )
    return f"@every {text.strip()}"


def check_cron(text: str) -> str:
    """Six fields (seconds first) or a predefined ``@hourly``-style name."""
    value = " ".join(text.split())
    if value in PREDEFINED:
        return value
    if len(value.split(" ")) != CRON_FIELDS:
        raise ScheduleError(
            f"cron {text!r} needs 6 fields: second minute hour day-of-month month "
            "day-of-week (e.g. '0 */5 * * * *'), or one of " + ", ".join(sorted(PREDEFINED))
        )
    return value


def schedule_headers(
    pattern: str,
    target: str,
    *,
    time_zone: str | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The headers that make a message a schedule releasing its payload to ``target``."""
    if time_zone and pattern.startswith(("@at ", "@every ")):
        raise ScheduleError("a time zone applies to cron schedules only")
    headers = dict(extra or {})
    headers[SCHEDULE] = pattern
    headers[SCHEDULE_TARGET] = target
    if time_zone:
        headers[SCHEDULE_TIME_ZONE] = time_zone
    return headers


@dataclass(frozen=True, slots=True)
class ScheduleInfo:
    """One stored schedule, as ``jetpool schedule list`` shows it."""

    subject: str
    kind: Kind
    name: str
    """The periodic schedule's name, or the delayed task's id key."""
    pattern: str
    target: str
    time_zone: str | None
    owner: str | None
    sequence: int


def parse_stored(
    prefix: str, subject: str, headers: Mapping[str, str], sequence: int
) -> ScheduleInfo:
    """A schedule read back from the stream (raises :class:`ScheduleError` if it is none)."""
    if not subject.startswith(prefix + "."):
        raise ScheduleError(f"{subject} is not under {prefix}")
    kind_token, _, name = subject[len(prefix) + 1 :].partition(".")
    kinds = {TASK_TOKEN: Kind.DELAYED, PERIODIC_TOKEN: Kind.PERIODIC}
    if kind_token not in kinds or not name or SCHEDULE not in headers:
        raise ScheduleError(f"{subject} holds no jetpool schedule")
    return ScheduleInfo(
        subject=subject,
        kind=kinds[kind_token],
        name=name,
        pattern=headers[SCHEDULE],
        target=headers.get(SCHEDULE_TARGET, ""),
        time_zone=headers.get(SCHEDULE_TIME_ZONE),
        owner=headers.get(SCHEDULE_OWNER),
        sequence=sequence,
    )
