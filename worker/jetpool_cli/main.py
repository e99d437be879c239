"""`jetpool`: publish tasks, follow and cancel them by id, keep periodic schedules, and
administer a pool's dead-letter stream.

A thin argparse layer: parse, resolve names, call :mod:`jetpool_cli.publishing` or
:mod:`jetpool_cli.dead_letters`, render. Expected failures are one line on stderr and a non-zero
exit code (1: the operation failed, 2: the command line was wrong or lacked ``--yes``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import metadata
from pathlib import Path
from typing import Any, TextIO

import nats.errors

from jetpool_cli import task_commands, top
from jetpool_cli.client import Client
from jetpool_cli.connection import DEFAULT_NATS_URL, connect
from jetpool_cli.dead_letters import (
    DeadLetterAdmin,
    DlqEntry,
    DlqStats,
    PurgeReport,
    RecordFilter,
    ReplayReport,
)
from jetpool_cli.durations import format_duration, parse_duration
from jetpool_cli.errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, CliError, describe
from jetpool_cli.output import render_table, to_json, truncate, when
from jetpool_cli.progress import Progress
from jetpool_cli.publishing import (
    JSON_CONTENT_TYPE,
    OutgoingTask,
    PublishReport,
    TaskOptions,
    build_task,
    check_json,
    is_json_content_type,
    publish_tasks,
    task_ids,
)
from jetpool_cli.task_commands import connect_options
from jetpool_protocol import headers as h
from jetpool_protocol import telemetry
from jetpool_protocol.dead_letter import DeadLetterReason
from jetpool_protocol.keyring import Keyring, KeyringError, load_keyring
from jetpool_protocol.naming import PoolNames

log = logging.getLogger("jetpool_cli")

ENV_NATS_URL = "JETPOOL_NATS_URL"
ENV_CREDENTIALS = "JETPOOL_NATS_CREDENTIALS_FILE"
ENV_TLS_CA = "JETPOOL_NATS_TLS_CA_FILE"
ENV_TLS_CERT = "JETPOOL_NATS_TLS_CERT_FILE"
ENV_TLS_KEY = "JETPOOL_NATS_TLS_KEY_FILE"
ENV_NAMESPACE = "JETPOOL_POOL_NAMESPACE"
ENV_POOL = "JETPOOL_POOL_NAME"
"""The same variables a worker pod has, so `jetpool` run inside one needs no flags."""

MESSAGE_WIDTH = 60


@dataclass(frozen=True, slots=True)
class Io:
    stdin: TextIO
    stdout: TextIO
    stderr: TextIO

    def out(self, text: str) -> None:
        self.stdout.write(text + "\n")

    def err(self, text: str) -> None:
        self.stderr.write(text + "\n")

    def progress(self, args: argparse.Namespace, verb: str, total: int | None = None) -> Progress:
        enabled = bool(args.progress) or self.stderr.isatty()
        return Progress(verb, self.stderr, enabled=enabled, total=total)


# ---------------------------------------------------------------------------------- parsing


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value:g}")
    return value


def _duration(text: str) -> timedelta:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _time(text: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an RFC 3339 time: {text!r}") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _header(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    if key.strip() in (h.MSG_ID, h.TASK_ID):
        raise argparse.ArgumentTypeError(f"{key.strip()} is the task id: use --id/--id-prefix")
    return key.strip(), value


def _common(parser: argparse.ArgumentParser) -> None:
    """Options every command takes, accepted after the subcommand (``jetpool dlq list -p x``)."""
    env = os.environ
    conn = parser.add_argument_group("connection")
    conn.add_argument(
        "--nats-url",
        default=env.get(ENV_NATS_URL) or DEFAULT_NATS_URL,
        help=f"NATS server URL (env {ENV_NATS_URL}; default %(default)s)",
    )
    conn.add_argument(
        "--creds",
        default=env.get(ENV_CREDENTIALS) or None,
        metavar="FILE",
        help=f"NATS credentials file (env {ENV_CREDENTIALS})",
    )
    conn.add_argument(
        "--tls-ca",
        default=env.get(ENV_TLS_CA) or None,
        metavar="FILE",
        help=f"CA bundle (PEM) of the NATS servers (env {ENV_TLS_CA})",
    )
    conn.add_argument(
        "--tls-cert",
        default=env.get(ENV_TLS_CERT) or None,
        metavar="FILE",
        help=f"client certificate (PEM) for mutual TLS (env {ENV_TLS_CERT})",
    )
    conn.add_argument(
        "--tls-key",
        default=env.get(ENV_TLS_KEY) or None,
        metavar="FILE",
        help=f"client key (PEM) for mutual TLS (env {ENV_TLS_KEY})",
    )
    conn.add_argument(
        "--timeout",
        type=_positive_float,
        default=5.0,
        metavar="SECONDS",
        help="connect, JetStream API and PubAck timeout (default %(default)s)",
    )
    target = parser.add_argument_group("pool")
    target.add_argument(
        "-n",
        "--namespace",
        default=env.get(ENV_NAMESPACE) or "default",
        help=f"the WorkerPool's namespace (env {ENV_NAMESPACE}; default %(default)s)",
    )
    target.add_argument(
        "-p", "--pool", default=env.get(ENV_POOL) or None, help=f"the WorkerPool (env {ENV_POOL})"
    )
    target.add_argument("--stream", help="task stream name (overrides the pool's default)")
    target.add_argument(
        "--dlq-stream", help="dead-letter stream name (overrides the pool's default)"
    )
    out = parser.add_argument_group("output")
    out.add_argument(
        "-o", "--output", choices=("table", "json"), default="table", help="output format"
    )
    out.add_argument(
        "--progress",
        action="store_true",
        help="show a progress line on stderr even when it is not a terminal",
    )
    out.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")


def _version() -> str:
    try:
        return metadata.version("jetpool")
    except metadata.PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jetpool",
        description="Publish tasks to a jetpool WorkerPool and manage its dead letters.",
    )
    parser.add_argument("--version", action="version", version=f"jetpool {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    pub = commands.add_parser("publish", help="publish tasks (idempotent by task id)")
    pub.add_argument("subject", help="subject of the tasks, e.g. tasks.default.emails.send")
    source = pub.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", metavar="JSON", help="the payload, inline")
    source.add_argument("--file", metavar="FILE", help="read the payload from FILE ('-': stdin)")
    source.add_argument(
        "--stdin-lines", action="store_true", help="one task per non-empty stdin line"
    )
    pub.add_argument(
        "--count", type=_positive_int, default=1, help="publish the payload N times (default 1)"
    )
    ids = pub.add_mutually_exclusive_group()
    ids.add_argument("--id", help="task id (one task); default: a random id")
    ids.add_argument(
        "--id-prefix", metavar="P", help="ids P-1, P-2, ...: re-running is deduplicated"
    )
    pub.add_argument("--ttl", type=_positive_float, metavar="SECONDS", help="task time to live")
    later = pub.add_mutually_exclusive_group()
    later.add_argument(
        "--delay", type=_duration, metavar="DURATION", help="release the tasks after, e.g. 30s"
    )
    later.add_argument(
        "--at", type=_time, metavar="TIME", help="release the tasks at an RFC 3339 time"
    )
    pub.add_argument(
        "--no-track",
        action="store_true",
        help="do not record the tasks as queued (with -p they are, so their status reads back)",
    )
    pub.add_argument(
        "--header",
        type=_header,
        action="append",
        default=[],
        metavar="K=V",
        help="extra header (repeatable)",
    )
    pub.add_argument(
        "--content-type",
        default=JSON_CONTENT_TYPE,
        help="Content-Type header; JSON payloads are validated (default %(default)s)",
    )
    pub.add_argument(
        "--sign-key-file", metavar="FILE", help="HMAC keyring; signs with its first key"
    )
    pub.add_argument(
        "--encrypt-key-file", metavar="FILE", help="AES-256 keyring; encrypts with its first key"
    )
    pub.add_argument(
        "--concurrency",
        type=_positive_int,
        default=64,
        help="PubAcks outstanding at once (default %(default)s)",
    )
    _common(pub)

    dlq = commands.add_parser("dlq", help="inspect, replay and purge dead-letter records")
    dlq_commands = dlq.add_subparsers(dest="dlq_command", required=True, metavar="COMMAND")
    reasons = [r.value for r in DeadLetterReason]

    def filters(p: argparse.ArgumentParser) -> None:
        p.add_argument("--reason", choices=reasons, help="only records with this reason")
        p.add_argument("--error-type", metavar="T", help="only records with this error type")

    lst = dlq_commands.add_parser("list", help="list records, oldest first")
    filters(lst)
    lst.add_argument("--since", type=_duration, metavar="DURATION", help="stored within, e.g. 2h")
    lst.add_argument(
        "--limit", type=_non_negative_int, default=50, help="at most N (0: all; default 50)"
    )
    _common(lst)

    show = dlq_commands.add_parser("show", help="one record in full")
    show.add_argument("seq", type=_positive_int, help="sequence number in the dead-letter stream")
    _common(show)

    stats = dlq_commands.add_parser("stats", help="counts by reason and error type")
    _common(stats)

    replay = dlq_commands.add_parser("replay", help="re-publish records' tasks, then delete them")
    replay.add_argument("seqs", type=_positive_int, nargs="*", metavar="SEQ")
    filters(replay)
    replay.add_argument("--since", type=_duration, metavar="DURATION", help="stored within")
    replay.add_argument("--all", action="store_true", help="every record")
    replay.add_argument("--limit", type=_positive_int, help="at most N records")
    replay.add_argument("--dry-run", action="store_true", help="show what would be replayed")
    replay.add_argument("--keep", action="store_true", help="keep the records after replaying")
    replay.add_argument("--by", help="who replays, for the audit header (default user@host)")
    replay.add_argument(
        "--reset-expiry",
        action="store_true",
        help="restart the task's TTL clock (needed to replay 'expired' records)",
    )
    replay.add_argument(
        "--sign-key-file",
        metavar="FILE",
        help="keyring: verify signed records, re-sign them with --reset-expiry",
    )
    _common(replay)

    purge = dlq_commands.add_parser("purge", help="delete records")
    purge.add_argument("seqs", type=_positive_int, nargs="*", metavar="SEQ")
    filters(purge)
    purge.add_argument(
        "--older-than", type=_duration, metavar="DURATION", help="stored before now - DURATION"
    )
    purge.add_argument("--all", action="store_true", help="every record")
    purge.add_argument("--dry-run", action="store_true", help="count, delete nothing")
    purge.add_argument("--yes", action="store_true", help="really delete")
    _common(purge)
    task_commands.add_parsers(commands, _common, _positive_float)
    top.add_parser(commands, _common, _positive_float)
    return parser


# -------------------------------------------------------------------------------- resolving


def _dlq_names(args: argparse.Namespace) -> tuple[str, str | None]:
    """Dead-letter stream and record prefix (``None``: read it from the stream's subjects)."""
    names = PoolNames(args.namespace, args.pool) if args.pool else None
    prefix = names.dead_letter_subject_prefix if names else None
    if args.dlq_stream:
        return args.dlq_stream, prefix
    if args.stream:
        return f"{args.stream}-dlq", prefix
    if names is None:
        raise CliError("name the pool (-n NAMESPACE -p POOL) or the stream (--dlq-stream)", 2)
    return names.dead_letter_stream, prefix


def _expected_stream(args: argparse.Namespace) -> str | None:
    if args.stream:
        return str(args.stream)
    return PoolNames(args.namespace, args.pool).stream if args.pool else None


def _selection(
    args: argparse.Namespace, *, age: timedelta | None, age_field: str, now: datetime
) -> tuple[list[int] | None, RecordFilter | None]:
    """Exactly one way of choosing records: sequence numbers, filters, or --all."""
    has_filter = bool(args.reason or args.error_type or age is not None)
    given = [bool(args.seqs), has_filter, bool(args.all)]
    if sum(given) == 0:
        raise CliError("choose records: SEQ ..., a filter (--reason/--error-type/...) or --all", 2)
    if sum(given) > 1:
        raise CliError("SEQ arguments, filters and --all cannot be combined", 2)
    if args.seqs:
        return list(args.seqs), None
    cut = now - age if age is not None else None
    return None, RecordFilter(
        reason=args.reason,
        error_type=args.error_type,
        since=cut if age_field == "since" else None,
        before=cut if age_field == "before" else None,
    )


async def _read_keyring(path: str | None, flag: str) -> Keyring | None:
    if path is None:
        return None
    try:
        return await asyncio.to_thread(load_keyring, path)
    except OSError as exc:
        raise CliError(f"{flag}: cannot read {path!r}: {exc.strerror}", EXIT_USAGE) from exc
    except KeyringError as exc:
        raise CliError(f"{flag}: cannot use {exc}", EXIT_USAGE) from exc


# ---------------------------------------------------------------------------------- publish


async def _payloads(args: argparse.Namespace, io: Io) -> tuple[AsyncIterator[bytes], int | None]:
    """The payload stream and its length when known (for the progress line)."""
    validate = is_json_content_type(args.content_type)
    if args.stdin_lines:
        if args.count != 1:
            raise CliError("--count repeats one payload; it cannot be used with --stdin-lines", 2)
        if args.id is not None:
            raise CliError("--id names one task; use --id-prefix with --stdin-lines", 2)

        async def lines() -> AsyncIterator[bytes]:
            number = 0
            while line := await asyncio.to_thread(io.stdin.readline):
                number += 1
                data = line.strip().encode()
                if not data:
                    continue
                if validate:
                    check_json(data, f"stdin line {number}")
                yield data

        return lines(), None
    if args.id is not None and args.count != 1:
        raise CliError("--id names one task; use --id-prefix with --count", 2)
    if args.data is not None:
        payload = args.data.encode()
        what = "--data"
    elif args.file == "-":
        payload = (await asyncio.to_thread(io.stdin.read)).encode()
        what = "stdin"
    else:
        try:
            payload = await asyncio.to_thread(Path(args.file).read_bytes)
        except OSError as exc:
            raise CliError(f"--file: cannot read {args.file!r}: {exc.strerror}", 2) from exc
        what = f"file {args.file!r}"
    if validate:
        check_json(payload, what)

    async def repeated() -> AsyncIterator[bytes]:
        for _ in range(args.count):
            yield payload

    return repeated(), args.count


async def cmd_publish(args: argparse.Namespace, io: Io) -> int:
    options = TaskOptions(
        ttl_seconds=args.ttl,
        content_type=args.content_type or None,
        extra_headers=dict(args.header),
        signing_keys=await _read_keyring(args.sign_key_file, "--sign-key-file"),
        encryption_keys=await _read_keyring(args.encrypt_key_file, "--encrypt-key-file"),
    )
    payloads, total = await _payloads(args, io)
    ids = task_ids(total, task_id=args.id, id_prefix=args.id_prefix)
    run_at = datetime.now(UTC) + args.delay if args.delay is not None else args.at
    if run_at is not None and not args.pool:
        raise CliError("--delay and --at need the pool (-p POOL): the schedule is the pool's", 2)

    async def tasks() -> AsyncIterator[OutgoingTask]:
        async for payload in payloads:
            task_id = next(ids)
            created = run_at or datetime.now(UTC)  # a delayed task's TTL starts at release
            yield build_task(args.subject, payload, task_id, created_at=created, options=options)

    progress = io.progress(args, "published", total)
    expected = _expected_stream(args) if run_at is None else None
    async with connect(connect_options(args)) as nc:
        client = (
            Client(nc, namespace=args.namespace, pool=args.pool, request_timeout=args.timeout)
            if args.pool
            else None
        )

        async def send(task: OutgoingTask) -> bool:
            assert client is not None
            handle = await client.publish_built(
                task, at=run_at, track=not args.no_track, stream=expected
            )
            return handle.duplicate

        report = await publish_tasks(
            nc.jetstream(timeout=args.timeout),
            tasks(),
            concurrency=args.concurrency,
            expected_stream=expected,
            request_timeout=args.timeout,
            on_progress=progress.update,
            send=send if client is not None and (run_at or not args.no_track) else None,
        )
    progress.finish(report.attempted)
    _render_publish(args, io, report)
    return EXIT_OK if report.failed == 0 and report.aborted is None else EXIT_FAILURE


def _render_publish(args: argparse.Namespace, io: Io, report: PublishReport) -> None:
    if args.output == "json":
        io.out(to_json(report.as_dict()))
    else:
        rate = report.attempted / report.elapsed_seconds if report.elapsed_seconds else 0.0
        io.out(
            f"published {report.published}, duplicates {report.duplicates}, "
            f"failed {report.failed} in {report.elapsed_seconds:.2f}s ({rate:.0f}/s)"
        )
    for error in report.errors:
        io.err(f"jetpool: failed: {error}")
    if report.aborted:
        io.err(f"jetpool: error: stopped: {report.aborted}")


# -------------------------------------------------------------------------------------- dlq


async def _with_admin(args: argparse.Namespace, action: Callable[[DeadLetterAdmin], Any]) -> Any:
    stream, prefix = _dlq_names(args)
    async with connect(connect_options(args)) as nc:
        admin = await DeadLetterAdmin.open(nc, stream, prefix, request_timeout=args.timeout)
        return await action(admin)


async def cmd_dlq_list(args: argparse.Namespace, io: Io) -> int:
    now = datetime.now(UTC)
    flt = RecordFilter(
        reason=args.reason,
        error_type=args.error_type,
        since=now - args.since if args.since is not None else None,
    )

    async def run(admin: DeadLetterAdmin) -> tuple[str, list[DlqEntry]]:
        return admin.target.subject_prefix, await admin.list(flt, limit=args.limit or None)

    prefix, entries = await _with_admin(args, run)
    rows = [e.summary(prefix) for e in entries]
    if args.output == "json":
        io.out(to_json(rows))
        return EXIT_OK
    if not rows:
        io.err("no dead-letter records match")
        return EXIT_OK
    io.out(
        render_table(
            ["SEQ", "TIME", "TASK-ID", "REASON", "ERROR-TYPE", "ATTEMPTS", "SUBJECT", "MESSAGE"],
            [
                [
                    r["seq"],
                    when(r["time"]),
                    r["task_id"] or "-",
                    r["reason"],
                    r["error_type"],
                    r["attempts"] if r["attempts"] is not None else "-",
                    r["original_subject"] or "-",
                    truncate(r["error_message"] or "", MESSAGE_WIDTH),
                ]
                for r in rows
            ],
            color=io.stdout.isatty(),
        )
    )
    return EXIT_OK


async def cmd_dlq_show(args: argparse.Namespace, io: Io) -> int:
    async def run(admin: DeadLetterAdmin) -> dict[str, Any]:
        return (await admin.show(args.seq)).detail(admin.target.subject_prefix)

    detail = await _with_admin(args, run)
    if args.output == "json":
        io.out(to_json(detail))
        return EXIT_OK
    blocks = {"message_headers", "headers", "payload", "body", "traceback"}
    width = max(len(k) for k in detail)
    for key, value in detail.items():
        if key not in blocks:
            shown = when(value) if isinstance(value, datetime) else value
            io.out(f"{key.replace('_', ' '):<{width}}  {'-' if shown is None else shown}")
    for key in ("headers", "message_headers"):
        if detail.get(key):
            io.out(f"\n{key.replace('_', ' ')}:")
            for name, value in detail[key].items():
                io.out(f"  {name}: {value}")
    for key, encoding in (("payload", "payload_encoding"), ("body", "body_encoding")):
        if key in detail:
            io.out(f"\n{key} ({detail[encoding]}):\n{detail[key]}")
    if detail.get("traceback"):
        io.out(f"\ntraceback:\n{detail['traceback'].rstrip()}")
    return EXIT_OK


async def cmd_dlq_stats(args: argparse.Namespace, io: Io) -> int:
    async def run(admin: DeadLetterAdmin) -> DlqStats:
        return await admin.stats()

    stats: DlqStats = await _with_admin(args, run)
    if args.output == "json":
        io.out(to_json(stats.as_dict()))
        return EXIT_OK
    age = ""
    if stats.oldest is not None:
        age = f" (oldest {format_duration(datetime.now(UTC) - stats.oldest)} ago)"
    io.out(f"stream {stats.stream}: {stats.total} records{age}")
    io.out(f"oldest {when(stats.oldest)}  newest {when(stats.newest)}")
    if stats.total:
        color = io.stdout.isatty()
        io.out("")
        io.out(render_table(["REASON", "COUNT"], list(stats.by_reason.items()), color=color))
        io.out("")
        io.out(
            render_table(["ERROR-TYPE", "COUNT"], list(stats.by_error_type.items()), color=color)
        )
        io.out("")
        io.out(render_table(["REASON", "ERROR-TYPE", "COUNT"], stats.by_subject, color=color))
    return EXIT_OK


async def cmd_dlq_replay(args: argparse.Namespace, io: Io) -> int:
    seqs, flt = _selection(args, age=args.since, age_field="since", now=datetime.now(UTC))
    signing_keys = await _read_keyring(args.sign_key_file, "--sign-key-file")
    task_stream = _expected_stream(args)
    if task_stream is None:
        raise CliError(
            "replay publishes only to the pool's task stream: name the pool (-n NAMESPACE "
            "-p POOL) or the stream (--stream)",
            EXIT_USAGE,
        )
    progress = io.progress(args, "replayed", len(seqs) if seqs else args.limit)

    async def run(admin: DeadLetterAdmin) -> tuple[str, ReplayReport]:
        report = await admin.replay(
            seqs=seqs,
            flt=flt,
            limit=args.limit,
            dry_run=args.dry_run,
            keep=args.keep,
            by=args.by,
            task_stream=task_stream,
            reset_expiry=args.reset_expiry,
            signing_keys=signing_keys,
            on_progress=progress.update,
        )
        return admin.target.stream, report

    stream, report = await _with_admin(args, run)
    progress.finish(len(report.items))
    for warning in report.warnings:
        io.err(f"warning: {warning}")
    summary = report.as_dict()
    if args.output == "json":
        io.out(to_json(summary))
    else:
        if report.items:
            io.out(
                render_table(
                    ["SEQ", "TASK-ID", "SUBJECT", "OUTCOME", "NEW-SEQ", "DELETED", "ERROR"],
                    [
                        [
                            i.seq,
                            i.task_id or "-",
                            i.subject or "-",
                            i.outcome,
                            i.new_seq or "-",
                            "yes" if i.deleted else "no",
                            truncate(i.error or "", MESSAGE_WIDTH),
                        ]
                        for i in report.items
                    ],
                    color=io.stdout.isatty(),
                )
            )
        if args.dry_run:
            io.out(f"would replay {summary['would_replay']} records from {stream} (dry run)")
        else:
            io.out(
                f"replayed {summary['replayed']}, duplicates {summary['duplicates']}, "
                f"failed {summary['failed']}, "
                + (f"refused {summary['refused']}, " if summary["refused"] else "")
                + f"deleted {summary['deleted']} from {stream}"
            )
    for item in report.items:
        if item.outcome == "refused":
            io.err(f"jetpool: refused dlq seq {item.seq}: {item.error}")
    return EXIT_FAILURE if report.failed or report.refused else EXIT_OK


async def cmd_dlq_purge(args: argparse.Namespace, io: Io) -> int:
    seqs, flt = _selection(args, age=args.older_than, age_field="before", now=datetime.now(UTC))
    dry_run = args.dry_run or not args.yes
    progress = io.progress(args, "checked" if dry_run else "deleted", len(seqs) if seqs else None)

    async def run(admin: DeadLetterAdmin) -> tuple[str, PurgeReport]:
        report = await admin.purge(seqs=seqs, flt=flt, dry_run=dry_run, on_progress=progress.update)
        return admin.target.stream, report

    stream, report = await _with_admin(args, run)
    progress.finish(report.removed + len(report.not_found))
    if not args.dry_run and not args.yes:
        raise CliError(
            f"refusing to purge {report.removed} records from {stream} without --yes "
            "(or see them with --dry-run)",
            EXIT_USAGE,
        )
    if args.output == "json":
        io.out(to_json({"stream": stream, **report.as_dict()}))
    elif report.dry_run:
        io.out(f"would remove {report.removed} records from {stream} (dry run)")
    else:
        io.out(f"removed {report.removed} records from {stream}")
    if report.not_found:
        io.err(f"jetpool: not found: {' '.join(map(str, report.not_found))}")
    return EXIT_FAILURE if report.not_found else EXIT_OK


COMMANDS: dict[tuple[str, str | None], Callable[[argparse.Namespace, Io], Any]] = {
    ("publish", None): cmd_publish,
    ("dlq", "list"): cmd_dlq_list,
    ("dlq", "show"): cmd_dlq_show,
    ("dlq", "stats"): cmd_dlq_stats,
    ("dlq", "replay"): cmd_dlq_replay,
    ("dlq", "purge"): cmd_dlq_purge,
    **task_commands.COMMANDS,
    **top.COMMANDS,
}


# ------------------------------------------------------------------------------------- main


async def main_async(
    argv: Sequence[str] | None = None,
    *,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Run one command and return its exit code; what tests call in-process."""
    io = Io(stdin or sys.stdin, stdout or sys.stdout, stderr or sys.stderr)
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        stream=io.stderr,
        format="%(levelname)s %(name)s: %(message)s",
    )
    sub = next(
        (v for k in ("dlq", "task", "schedule") if (v := getattr(args, f"{k}_command", None))),
        None,
    )
    command = COMMANDS[(args.command, sub)]
    try:
        telemetry.configure_tracing("jetpool-cli", os.environ)
    except ValueError as exc:
        io.err(f"jetpool: error: {exc}")
        return EXIT_USAGE
    try:
        return int(await command(args, io))
    except CliError as exc:
        io.err(f"jetpool: error: {exc.message}")
        return exc.exit_code
    except (nats.errors.Error, TimeoutError) as exc:
        log.debug("NATS failure", exc_info=True)
        io.err(f"jetpool: error: {describe(exc)}")
        return EXIT_FAILURE


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point (``jetpool``)."""
    try:
        return asyncio.run(main_async(argv))
    except KeyboardInterrupt:
        sys.stderr.write("jetpool: interrupted\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
