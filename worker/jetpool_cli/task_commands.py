"""`jetpool task status|result|cancel` and `jetpool schedule add|list|delete`: thin commands
over :class:`jetpool_cli.client.Client`."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from jetpool_cli.client import CancelOutcome, Client
from jetpool_cli.connection import ConnectOptions, connect
from jetpool_cli.errors import EXIT_FAILURE, EXIT_OK, CliError
from jetpool_cli.output import render_table, to_json, truncate, when
from jetpool_protocol.task_state import TaskState

if TYPE_CHECKING:
    from jetpool_cli.main import Io

Command = Callable[[argparse.Namespace, "Io"], Any]


def add_parsers(
    commands: Any,
    common: Callable[[argparse.ArgumentParser], None],
    positive_float: Callable[[str], float],
) -> None:
    task = commands.add_parser("task", help="a task's status and result by id; cancel it")
    task_commands = task.add_subparsers(dest="task_command", required=True, metavar="COMMAND")
    status = task_commands.add_parser("status", help="what happened to tasks, by id")
    status.add_argument("ids", nargs="+", metavar="ID")
    common(status)
    result = task_commands.add_parser("result", help="a finished task's result (or its error)")
    result.add_argument("id", metavar="ID")
    result.add_argument(
        "--wait",
        type=positive_float,
        metavar="SECONDS",
        help="wait up to SECONDS for the task to finish (default: ask once)",
    )
    common(result)
    cancel = task_commands.add_parser(
        "cancel", help="cancel tasks: queued ones never run, running ones are told"
    )
    cancel.add_argument("ids", nargs="+", metavar="ID")
    common(cancel)

    schedule = commands.add_parser("schedule", help="periodic tasks (nats-server schedules)")
    schedule_commands = schedule.add_subparsers(
        dest="schedule_command", required=True, metavar="COMMAND"
    )
    add = schedule_commands.add_parser("add", help="create or replace a periodic schedule")
    add.add_argument("name", help="lowercase letters, digits and '-'")
    timing = add.add_mutually_exclusive_group(required=True)
    timing.add_argument("--every", metavar="DURATION", help="an interval: 30s, 5m, 1h30m")
    timing.add_argument("--cron", metavar="EXPR", help="6 fields, seconds first, or @hourly")
    add.add_argument("--time-zone", metavar="TZ", help="IANA time zone of a cron schedule")
    add.add_argument("--subject", help="task subject (default tasks.<ns>.<pool>.<name>)")
    add.add_argument("--data", metavar="JSON", default="{}", help="the tasks' JSON payload")
    common(add)
    lst = schedule_commands.add_parser("list", help="periodic schedules and delayed tasks")
    common(lst)
    delete = schedule_commands.add_parser("delete", help="delete a periodic schedule")
    delete.add_argument("name")
    common(delete)


def connect_options(args: argparse.Namespace) -> ConnectOptions:
    return ConnectOptions(
        url=args.nats_url,
        credentials_file=args.creds,
        tls_ca_file=args.tls_ca,
        tls_cert_file=args.tls_cert,
        tls_key_file=args.tls_key,
        connect_timeout=args.timeout,
        request_timeout=args.timeout,
    )


@asynccontextmanager
async def pool_client(args: argparse.Namespace) -> AsyncIterator[Client]:
    if not args.pool:
        raise CliError("name the pool (-n NAMESPACE -p POOL)", 2)
    async with connect(connect_options(args)) as nc:
        yield Client(nc, namespace=args.namespace, pool=args.pool, request_timeout=args.timeout)


def _state_row(task_id: str, state: TaskState | None) -> list[object]:
    if state is None:
        return [task_id, "unknown", "-", "-", "-", "-", "no state recorded (or it expired)"]
    detail = state.reason or ""
    if state.error is not None:
        detail = f"{state.error.type}: {state.error.message}"
    if state.next_attempt_at is not None:
        detail = f"next attempt {when(state.next_attempt_at)}; {detail}"
    if state.run_at is not None and state.phase.value == "scheduled":
        detail = f"runs at {when(state.run_at)}"
    return [
        task_id,
        state.phase.value,
        when(state.since),
        state.runs,
        state.worker or "-",
        state.deliveries,
        truncate(detail, 60),
    ]


async def cmd_task_status(args: argparse.Namespace, io: Io) -> int:
    async with pool_client(args) as client:
        states = await asyncio.gather(*(client.status(i) for i in args.ids))
    if args.output == "json":
        io.out(
            to_json(
                [
                    s.model_dump(mode="json", by_alias=True, exclude_none=True)
                    if s is not None
                    else {"id": i, "phase": "unknown"}
                    for i, s in zip(args.ids, states, strict=True)
                ]
            )
        )
    else:
        rows = [_state_row(i, s) for i, s in zip(args.ids, states, strict=True)]
        io.out(
            render_table(
                ["ID", "PHASE", "SINCE", "RUNS", "WORKER", "DELIVERIES", "DETAIL"],
                rows,
                color=io.stdout.isatty(),
            )
        )
    return EXIT_OK if all(s is not None for s in states) else EXIT_FAILURE


async def cmd_task_result(args: argparse.Namespace, io: Io) -> int:
    async with pool_client(args) as client:
        try:
            result = await client.result(args.id, timeout=args.wait)
        except TimeoutError as exc:
            raise CliError(str(exc)) from exc
    if args.output == "json":
        io.out(to_json(result.model_dump(mode="json", exclude_none=True)))
    elif result.ok:
        io.out(
            json.dumps(result.value) if result.omitted is None else f"(no value: {result.omitted})"
        )
    else:
        assert result.error is not None
        io.out(f"failed: {result.error.type}: {result.error.message}")
    return EXIT_OK if result.ok else EXIT_FAILURE


async def cmd_task_cancel(args: argparse.Namespace, io: Io) -> int:
    async with pool_client(args) as client:
        outcomes = [await client.cancel(i) for i in args.ids]
    if args.output == "json":
        io.out(
            to_json(
                [
                    {"id": i, "outcome": c.outcome.value, "phase": c.state and c.state.phase.value}
                    for i, c in zip(args.ids, outcomes, strict=True)
                ]
            )
        )
    else:
        explain = {
            CancelOutcome.CANCELLED: "cancelled (taken off its schedule)",
            CancelOutcome.REQUESTED: "cancel requested: a queued task never runs, a running "
            "one is told",
            CancelOutcome.ALREADY_FINISHED: "already finished",
            CancelOutcome.UNKNOWN: "no state recorded; it is cancelled if a worker takes it",
        }
        rows = [
            [i, c.state.phase.value if c.state else "unknown", explain[c.outcome]]
            for i, c in zip(args.ids, outcomes, strict=True)
        ]
        io.out(render_table(["ID", "PHASE", "OUTCOME"], rows, color=io.stdout.isatty()))
    finished = [c for c in outcomes if c.outcome is CancelOutcome.ALREADY_FINISHED]
    return EXIT_FAILURE if finished else EXIT_OK


async def cmd_schedule_add(args: argparse.Namespace, io: Io) -> int:
    try:
        payload = json.loads(args.data)
    except ValueError as exc:
        raise CliError(f"--data is not valid JSON ({exc})", 2) from exc
    async with pool_client(args) as client:
        sequence = await client.schedule(
            args.name,
            payload,
            every=args.every,
            cron=args.cron,
            time_zone=args.time_zone,
            subject=args.subject,
        )
    io.out(f"schedule {args.name} stored (stream sequence {sequence})")
    return EXIT_OK


async def cmd_schedule_list(args: argparse.Namespace, io: Io) -> int:
    async with pool_client(args) as client:
        found = await client.schedules()
    if args.output == "json":
        io.out(to_json([dataclasses.asdict(s) for s in found]))
    else:
        rows = [
            [
                s.kind.value,
                s.name,
                s.pattern,
                s.time_zone or "",
                s.target,
                s.owner or "",
                s.sequence,
            ]
            for s in found
        ]
        io.out(
            render_table(
                ["KIND", "NAME", "SCHEDULE", "TZ", "TARGET", "OWNER", "SEQ"],
                rows,
                color=io.stdout.isatty(),
            )
        )
    return EXIT_OK


async def cmd_schedule_delete(args: argparse.Namespace, io: Io) -> int:
    async with pool_client(args) as client:
        deleted = await client.delete_schedule(args.name)
    if not deleted:
        raise CliError(f"no periodic schedule {args.name!r} in pool {args.namespace}/{args.pool}")
    io.out(
        f"schedule {args.name} deleted (one the pool's spec declares comes back at the "
        "operator's next check: remove it from spec.schedules.periodic instead)"
    )
    return EXIT_OK


COMMANDS: dict[tuple[str, str | None], Command] = {
    ("task", "status"): cmd_task_status,
    ("task", "result"): cmd_task_result,
    ("task", "cancel"): cmd_task_cancel,
    ("schedule", "add"): cmd_schedule_add,
    ("schedule", "list"): cmd_schedule_list,
    ("schedule", "delete"): cmd_schedule_delete,
}
