"""The client's schedules: delayed tasks and periodic schedules in the pool's task stream
(:mod:`jetpool_protocol.schedules` says how they work)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

import nats.js.errors
from nats.js.api import PubAck

from jetpool_cli.errors import ClientError
from jetpool_cli.publishing import OutgoingTask
from jetpool_protocol.schedules import (
    PERIODIC_TOKEN,
    ScheduleError,
    ScheduleInfo,
    at_pattern,
    delayed_subject,
    parse_stored,
    periodic_subject,
    schedule_headers,
)

if TYPE_CHECKING:
    from jetpool_cli.client import Client

SCHEDULES_DISABLED = 10188
BAD_PATTERN = 10189
BAD_TARGET = 10190
BAD_TIME_ZONE = 10223


async def _publish_schedule(
    client: Client, subject: str, payload: bytes, headers: dict[str, str]
) -> PubAck:
    try:
        ack = await client.js.publish(
            subject, payload, headers=headers, timeout=client.request_timeout
        )
    except nats.js.errors.NoStreamResponseError as exc:
        raise ClientError(
            f"no stream takes {subject}: the pool's task stream has no schedule subjects yet "
            "(an operator older than this client, or the pool is not reconciled)"
        ) from exc
    except nats.js.errors.APIError as exc:
        why = {
            SCHEDULES_DISABLED: "the pool's task stream does not allow schedules (a pool with "
            "nats.maxMsgs or nats.maxBytes, or schedules.enabled: false; docs/tasks.md)",
            BAD_PATTERN: f"nats-server refuses the schedule {headers.get('Nats-Schedule')!r}",
            BAD_TARGET: f"the target {headers.get('Nats-Schedule-Target')!r} is not a subject "
            "of the pool's task stream",
            BAD_TIME_ZONE: f"unknown time zone {headers.get('Nats-Schedule-Time-Zone')!r} "
            "(use an IANA name such as Europe/Amsterdam)",
        }.get(exc.err_code or 0)
        if why is None:
            raise
        raise ClientError(why) from exc
    return ack


async def publish_delayed(client: Client, task: OutgoingTask, run_at: datetime) -> PubAck:
    """Hold ``task`` until ``run_at``; the acknowledgement of its schedule."""
    subject = delayed_subject(client.names.schedule_subject_prefix, task.task_id)
    headers = schedule_headers(at_pattern(run_at), task.subject, extra=task.headers)
    return await _publish_schedule(client, subject, task.payload, headers)


async def _task_stream(client: Client) -> str | None:
    """The stream holding the pool's schedules; None when none does (schedules are off)."""
    try:
        return str(
            await client.js.find_stream_name_by_subject(
                f"{client.names.schedule_subject_prefix}.{PERIODIC_TOKEN}.x"
            )
        )
    except nats.js.errors.APIError:  # no stream captures it (nats-py gives no error code)
        return None


async def _schedule_stream(client: Client) -> str:
    stream = await _task_stream(client)
    if stream is None:
        raise ClientError(
            f"pool {client.names.namespace}/{client.names.pool} has no schedules: no stream "
            f"takes {client.names.schedule_subject_prefix}.> (schedules.enabled: false, "
            "nats.maxMsgs/maxBytes set, or the pool is not reconciled yet)"
        )
    return stream


async def unschedule_task(client: Client, task_id: str) -> bool:
    """Take a delayed task off its schedule; False when it was released already (or the
    pool has no schedules)."""
    subject = delayed_subject(client.names.schedule_subject_prefix, task_id)
    stream = await _task_stream(client)
    return stream is not None and await _purge_schedule(client, stream, subject)


async def _purge_schedule(client: Client, stream: str, subject: str) -> bool:
    """Delete the schedule on ``subject``; False when there is none (released, deleted)."""
    try:
        await client.js.get_last_msg(stream, subject)
    except nats.js.errors.NotFoundError:
        return False
    await client.js.purge_stream(stream, subject=subject)
    return True


async def schedule_periodic(
    client: Client,
    name: str,
    pattern: str,
    payload: Any,
    *,
    subject: str | None = None,
    time_zone: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> int:
    """Create or replace the periodic schedule ``name``: each firing is a new task (id
    ``seq-<stream sequence>``) on ``subject``."""
    target = subject or client.default_subject(name)
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    extra = {"Content-Type": "application/json", **(headers or {})}
    try:
        all_headers = schedule_headers(pattern, target, time_zone=time_zone, extra=extra)
        schedule_subject = periodic_subject(client.names.schedule_subject_prefix, name)
    except ScheduleError as exc:
        raise ClientError(str(exc)) from exc
    ack = await _publish_schedule(client, schedule_subject, body, all_headers)
    return int(ack.seq)


async def list_schedules(client: Client) -> list[ScheduleInfo]:
    prefix = client.names.schedule_subject_prefix
    stream = await _schedule_stream(client)
    info = await client.js.stream_info(stream, subjects_filter=f"{prefix}.>")
    found: list[ScheduleInfo] = []
    for subject in sorted(info.state.subjects or {}):
        try:
            msg = await client.js.get_last_msg(stream, subject)
            found.append(parse_stored(prefix, subject, dict(msg.headers or {}), msg.seq or 0))
        except (nats.js.errors.NotFoundError, ScheduleError):
            continue  # released or deleted meanwhile, or not a schedule
    return found


async def delete_schedule(client: Client, name: str) -> bool:
    """Delete the periodic schedule ``name``; False when there is none."""
    try:
        subject = periodic_subject(client.names.schedule_subject_prefix, name)
    except ScheduleError as exc:
        raise ClientError(str(exc)) from exc
    return await _purge_schedule(client, await _schedule_stream(client), subject)
