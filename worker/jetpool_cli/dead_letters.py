"""The dead-letter admin API: list, show, stats, replay and purge a pool's dead-letter stream.

Reads are stream message gets (``next_by_subj`` from a sequence with the filter subject), so
nothing is created on the server: no consumers, durable or ephemeral, are left behind. Counts by
reason and error type come from the stream's per-subject counts (``subjects_filter``), never
from scanning messages, because every record lives on ``<prefix>.<reason>.<error_type>``.

Records are stored in sequence order with the server's store time, so "older than" and "since"
become one binary search for a cut-off sequence instead of a scan.

Old records expire by the dead-letter stream's ``max_age`` (set by the operator from the
WorkerPool's ``deadLetter.maxAge``); purge is for removing records earlier than that.
"""

from __future__ import annotations

import base64
import getpass
import json
import logging
import socket
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from pydantic import ValidationError

from jetpool_cli.errors import (
    CliError,
    StreamNotFoundError,
    describe,
    is_message_not_found,
    is_stream_not_found,
)
from jetpool_protocol import headers as h
from jetpool_protocol.dead_letter import DeadLetterReason, DeadLetterRecord
from jetpool_protocol.envelope import InvalidTask, format_time
from jetpool_protocol.keyring import Keyring
from jetpool_protocol.naming import nats_token
from jetpool_protocol.security import sign, verify

log = logging.getLogger(__name__)

JS_API = "$JS.API"
DLQ_HEADERS = frozenset({h.DLQ_REASON, h.DLQ_ERROR_TYPE, h.DLQ_POOL})
REPLAY_AUDIT_HEADERS = frozenset({h.REPLAYED_FROM, h.REPLAYED_AT, h.REPLAYED_BY})


@dataclass(frozen=True, slots=True)
class DlqTarget:
    """A dead-letter stream and the subject prefix its records live under."""

    stream: str
    subject_prefix: str

    @property
    def all_subjects(self) -> str:
        return f"{self.subject_prefix}.>"


@dataclass(frozen=True, slots=True)
class RecordFilter:
    """Which records: by reason / error type (a subject filter) and by store time."""

    reason: str | None = None
    error_type: str | None = None
    since: datetime | None = None
    """Only records stored at or after this instant."""
    before: datetime | None = None
    """Only records stored before this instant."""

    def subject(self, prefix: str) -> str:
        if self.reason is None and self.error_type is None:
            return f"{prefix}.>"
        reason = nats_token(self.reason) if self.reason is not None else "*"
        error_type = nats_token(self.error_type) if self.error_type is not None else "*"
        return f"{prefix}.{reason}.{error_type}"


def split_subject(prefix: str, subject: str) -> tuple[str, str]:
    """``(<reason>, <error_type>)`` of a record's subject; ``("?", "?")`` when foreign."""
    rest = subject[len(prefix) + 1 :] if subject.startswith(prefix + ".") else ""
    reason, _, error_type = rest.partition(".")
    return reason or "?", error_type or "?"


def display_payload(payload: bytes) -> tuple[str, str]:
    """``(text, encoding)``: UTF-8 when the bytes are text, else base64."""
    try:
        return payload.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(payload).decode("ascii"), "base64"


@dataclass(frozen=True, slots=True)
class DlqEntry:
    """One message of the dead-letter stream, parsed into a record when it is one."""

    seq: int
    time: datetime
    subject: str
    headers: dict[str, str]
    data: bytes
    record: DeadLetterRecord | None
    problem: str | None = None
    """Why the body is not a :class:`DeadLetterRecord` (``record`` is then ``None``)."""

    @classmethod
    def parse(
        cls, seq: int, time: datetime, subject: str, headers: Mapping[str, str] | None, data: bytes
    ) -> DlqEntry:
        try:
            record: DeadLetterRecord | None = DeadLetterRecord.model_validate_json(data)
            problem = None
        except ValidationError as exc:
            record, problem = None, f"not a dead-letter record: {exc.error_count()} errors"
        return cls(seq, time, subject, dict(headers or {}), data, record, problem)

    def summary(self, prefix: str) -> dict[str, Any]:
        reason, error_type = split_subject(prefix, self.subject)
        rec = self.record
        return {
            "seq": self.seq,
            "time": self.time,
            "task_id": rec.task_id if rec else None,
            "reason": str(rec.reason) if rec else reason,
            "error_type": rec.error_type if rec else error_type,
            "attempts": rec.attempts if rec else None,
            "original_subject": rec.original_subject if rec else None,
            "error_message": rec.error_message if rec else self.problem,
        }

    def detail(self, prefix: str) -> dict[str, Any]:
        out = self.summary(prefix)
        out["subject"] = self.subject
        out["message_headers"] = self.headers
        if self.record is None:
            text, encoding = display_payload(self.data)
            out.update(problem=self.problem, body=text, body_encoding=encoding)
            return out
        rec = self.record
        payload, encoding = display_payload(rec.payload)
        out.update(
            pool=rec.pool,
            namespace=rec.namespace,
            original_stream=rec.original_stream,
            original_sequence=rec.original_sequence,
            first_failure_at=rec.first_failure_at,
            last_failure_at=rec.last_failure_at,
            worker=rec.worker,
            headers=rec.headers,
            payload=payload,
            payload_encoding=encoding,
            traceback=rec.traceback,
        )
        return out


@dataclass(frozen=True, slots=True)
class DlqStats:
    stream: str
    total: int
    by_reason: dict[str, int]
    by_error_type: dict[str, int]
    by_subject: list[tuple[str, str, int]]
    """``(reason, error_type, count)``, largest first."""
    oldest: datetime | None
    newest: datetime | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "stream": self.stream,
            "total": self.total,
            "by_reason": self.by_reason,
            "by_error_type": self.by_error_type,
            "by_subject": [
                {"reason": r, "error_type": e, "count": c} for r, e, c in self.by_subject
            ],
            "oldest": self.oldest,
            "newest": self.newest,
        }


def summarize_subjects(
    prefix: str, counts: Mapping[str, int]
) -> tuple[dict[str, int], dict[str, int], list[tuple[str, str, int]]]:
    """Per-subject counts -> counts by reason, by error type, and by the pair (largest first)."""
    by_reason: dict[str, int] = {}
    by_error_type: dict[str, int] = {}
    pairs: list[tuple[str, str, int]] = []
    for subject, count in counts.items():
        reason, error_type = split_subject(prefix, subject)
        by_reason[reason] = by_reason.get(reason, 0) + count
        by_error_type[error_type] = by_error_type.get(error_type, 0) + count
        pairs.append((reason, error_type, count))

    def ordered(d: dict[str, int]) -> dict[str, int]:
        return dict(sorted(d.items(), key=lambda kv: (-kv[1], kv[0])))

    pairs.sort(key=lambda p: (-p[2], p[0], p[1]))
    return ordered(by_reason), ordered(by_error_type), pairs


def default_replayed_by() -> str:
    """``user@host`` of whoever runs the replay, for the audit header."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


class ReplayRefused(CliError):
    """A record that must not be re-published: forged, or aimed outside the pool's stream."""


SYSTEM_SUBJECT_PREFIXES = ("$", "_INBOX.")
"""``$JS.``, ``$SYS.``, ``$KV.``... are server APIs and ``_INBOX.`` are replies: never tasks."""


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: ``*`` is one token, a final ``>`` is one or more."""
    want, have = pattern.split("."), subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return i == len(want) - 1 and len(have) > i
        if i >= len(have) or (token != "*" and token != have[i]):
            return False
    return len(want) == len(have)


def replay_subject_problem(subject: str, stream: str, stream_subjects: Sequence[str]) -> str | None:
    """Why a record's ``original_subject`` must not be published to, or ``None`` when it may.

    A record's fields are whatever its writer put there: replay only ever publishes to a
    concrete subject that the pool's own task stream captures.
    """
    shown = repr(subject if len(subject) <= 200 else subject[:200] + "...")
    tokens = subject.split(".")
    if any(not t or t in ("*", ">") or any(c.isspace() for c in t) for t in tokens):
        return f"original subject {shown} is not a publishable subject"
    if subject.startswith(SYSTEM_SUBJECT_PREFIXES):
        return f"original subject {shown} is a system or reply subject, not a task subject"
    if not any(subject_matches(p, subject) for p in stream_subjects):
        return (
            f"original subject {shown} is not a subject of the pool's task stream "
            f"{stream!r} ({', '.join(stream_subjects) or 'no subjects'})"
        )
    return None


def replay_message(
    record: DeadLetterRecord,
    *,
    dlq_stream: str,
    dlq_seq: int,
    by: str,
    now: datetime,
    reset_expiry: bool = False,
    signing_keys: Keyring | None = None,
) -> tuple[str, bytes, dict[str, str]]:
    """``(subject, payload, headers)`` that re-run a dead-lettered task.

    The original payload and headers go back to the original subject. ``Nats-*`` headers are
    server instructions of the first publish and are dropped, as are the dead-letter headers;
    the task id stays (encryption binds it), while ``Nats-Msg-Id`` becomes
    ``<task id>:replay:<dlq seq>`` so replaying the same record twice is deduplicated.
    ``reset_expiry`` restarts the task's TTL clock (``expired`` records would expire again at
    once); a signed task then needs ``signing_keys`` to be re-signed. With ``signing_keys`` a
    signed record's original signature is verified first (:class:`ReplayRefused` when it does
    not): re-signing a forged record would launder it.
    """
    signed = h.SIGNATURE in record.headers
    if signed and signing_keys is not None:
        try:
            verify(
                record.payload,
                record.headers,
                subject=record.original_subject,
                keys=signing_keys,
            )
        except InvalidTask as exc:
            raise ReplayRefused(
                f"task {record.task_id}: its original signature does not verify ({exc}); "
                "not replayed"
            ) from exc
    headers = {
        k: v
        for k, v in record.headers.items()
        if not k.lower().startswith("nats-") and k not in DLQ_HEADERS | REPLAY_AUDIT_HEADERS
    }
    headers[h.MSG_ID] = f"{record.task_id}:replay:{dlq_seq}"
    headers[h.REPLAYED_FROM] = f"{dlq_stream}:{dlq_seq}"
    headers[h.REPLAYED_AT] = format_time(now)
    headers[h.REPLAYED_BY] = by
    if reset_expiry:
        headers.pop(h.TASK_DEADLINE, None)
        headers[h.TASK_CREATED] = format_time(now)
        if signed:
            if signing_keys is None:
                raise CliError(
                    f"task {record.task_id} is signed; resetting its expiry needs --sign-key-file"
                )
            headers = sign(
                record.payload, headers, subject=record.original_subject, keys=signing_keys
            )
    return record.original_subject, record.payload, headers


@dataclass
class ReplayItem:
    seq: int
    task_id: str | None
    subject: str | None
    outcome: str
    """``replayed``, ``duplicate``, ``would-replay`` (dry run), ``refused`` (forged, or not a
    subject of the pool's task stream: never published) or ``failed``."""
    new_seq: int | None = None
    deleted: bool = False
    error: str | None = None
    reason: str | None = None


@dataclass
class ReplayReport:
    items: list[ReplayItem] = field(default_factory=list)
    dry_run: bool = False
    warnings: list[str] = field(default_factory=list)

    def count(self, outcome: str) -> int:
        return sum(1 for i in self.items if i.outcome == outcome)

    @property
    def failed(self) -> int:
        return self.count("failed")

    @property
    def refused(self) -> int:
        return self.count("refused")

    @property
    def deleted(self) -> int:
        return sum(1 for i in self.items if i.deleted)

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "replayed": self.count("replayed"),
            "duplicates": self.count("duplicate"),
            "would_replay": self.count("would-replay"),
            "failed": self.failed,
            "refused": self.refused,
            "deleted": self.deleted,
            "warnings": self.warnings,
            "items": [vars(i) for i in self.items],
        }


@dataclass
class PurgeReport:
    removed: int
    dry_run: bool
    not_found: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"removed": self.removed, "dry_run": self.dry_run, "not_found": self.not_found}


class DeadLetterAdmin:
    """Administration of one dead-letter stream; every method is a few JetStream API calls."""

    def __init__(self, nc: NatsClient, target: DlqTarget, *, timeout: float = 5.0) -> None:
        self.nc = nc
        self.js = nc.jetstream(timeout=timeout)
        self.target = target
        self.timeout = timeout

    @classmethod
    async def open(
        cls,
        nc: NatsClient,
        stream: str,
        subject_prefix: str | None = None,
        *,
        request_timeout: float = 5.0,
    ) -> DeadLetterAdmin:
        """Check the stream exists; without a prefix, take it from the stream's ``<p>.>``."""
        admin = cls(nc, DlqTarget(stream, subject_prefix or ""), timeout=request_timeout)
        info = await admin._stream_info()
        if subject_prefix is None:
            subjects = list(info.config.subjects or [])
            if len(subjects) != 1 or not subjects[0].endswith(".>"):
                raise CliError(
                    f"cannot tell the record subject prefix of stream {stream!r} "
                    f"(subjects {subjects}); pass --namespace/--pool"
                )
            admin.target = DlqTarget(stream, subjects[0][:-2])
        return admin

    async def _stream_info(self, subjects_filter: str | None = None) -> Any:
        try:
            return await self.js.stream_info(self.target.stream, subjects_filter=subjects_filter)
        except nats.js.errors.APIError as exc:
            if is_stream_not_found(exc):
                raise StreamNotFoundError(self.target.stream, "dead-letter stream") from exc
            raise

    async def _next(self, subject: str, seq: int) -> Any | None:
        """The first message at or after ``seq`` on ``subject``, or ``None``."""
        try:
            return await self.js.get_msg(
                self.target.stream, seq=max(seq, 1), subject=subject, next=True
            )
        except nats.js.errors.APIError as exc:
            if is_message_not_found(exc):
                return None
            if is_stream_not_found(exc):
                raise StreamNotFoundError(self.target.stream, "dead-letter stream") from exc
            raise

    @staticmethod
    def _entry(msg: Any) -> DlqEntry:
        return DlqEntry.parse(msg.seq, msg.time, msg.subject, msg.headers, msg.data or b"")

    async def first_seq_at_or_after(self, subject: str, when: datetime) -> int:
        """Smallest sequence whose record on ``subject`` was stored at or after ``when``.

        Binary search over ``next_by_subj`` gets: O(log n) requests, holes left by deletes and
        other subjects are skipped by the server. ``last_seq + 1`` when every record is older.
        """
        state = (await self._stream_info()).state
        lo, hi = max(state.first_seq, 1), state.last_seq + 1
        while lo < hi:
            mid = (lo + hi) // 2
            msg = await self._next(subject, mid)
            if msg is None or msg.seq >= hi or msg.time >= when:
                hi = mid
            else:
                lo = msg.seq + 1
        return int(lo)

    async def entries(
        self,
        flt: RecordFilter = RecordFilter(),
        *,
        limit: int | None = None,
        until_seq: int | None = None,
    ) -> AsyncIterator[DlqEntry]:
        """Matching records in sequence order (oldest first), none after ``until_seq``."""
        subject = flt.subject(self.target.subject_prefix)
        seq = 1
        if flt.since is not None:
            seq = await self.first_seq_at_or_after(subject, flt.since)
        yielded = 0
        while limit is None or yielded < limit:
            msg = await self._next(subject, seq)
            if msg is None or (flt.before is not None and msg.time >= flt.before):
                return
            if until_seq is not None and msg.seq > until_seq:
                return
            yield self._entry(msg)
            yielded += 1
            seq = msg.seq + 1

    async def list(
        self, flt: RecordFilter = RecordFilter(), *, limit: int | None = 50
    ) -> list[DlqEntry]:
        return [entry async for entry in self.entries(flt, limit=limit)]

    async def show(self, seq: int) -> DlqEntry:
        try:
            msg = await self.js.get_msg(self.target.stream, seq=seq)
        except nats.js.errors.APIError as exc:
            if is_message_not_found(exc):
                raise CliError(f"no record with sequence {seq} in {self.target.stream!r}") from exc
            if is_stream_not_found(exc):
                raise StreamNotFoundError(self.target.stream, "dead-letter stream") from exc
            raise
        return self._entry(msg)

    async def stats(self) -> DlqStats:
        """Counts from the stream's per-subject totals; two gets for the oldest and newest."""
        info = await self._stream_info(subjects_filter=self.target.all_subjects)
        counts: dict[str, int] = dict(info.state.subjects or {})
        by_reason, by_error_type, pairs = summarize_subjects(self.target.subject_prefix, counts)
        total = sum(counts.values())
        oldest = newest = None
        if total:
            first = await self._next(self.target.all_subjects, info.state.first_seq)
            oldest = first.time if first is not None else None
            try:
                last = await self.js.get_msg(self.target.stream, subject=self.target.all_subjects)
                newest = last.time
            except nats.js.errors.APIError as exc:
                if not is_message_not_found(exc):
                    raise
        return DlqStats(self.target.stream, total, by_reason, by_error_type, pairs, oldest, newest)

    async def _selected(
        self,
        seqs: Sequence[int] | None,
        flt: RecordFilter | None,
        limit: int | None,
        until_seq: int | None = None,
    ) -> AsyncIterator[DlqEntry | int]:
        """The entries named by sequence (a bare ``int`` when missing) or matched by a filter."""
        if seqs:
            for seq in seqs[:limit] if limit is not None else seqs:
                try:
                    yield await self.show(seq)
                except CliError:
                    yield seq
            return
        if flt is None:
            raise CliError("select records: sequence numbers or a filter", exit_code=2)
        async for entry in self.entries(flt, limit=limit, until_seq=until_seq):
            yield entry

    async def task_stream_subjects(self, task_stream: str) -> tuple[str, ...]:
        """The subjects the pool's task stream captures: the only places replay publishes to."""
        try:
            info = await self.js.stream_info(task_stream)
        except nats.js.errors.APIError as exc:
            if is_stream_not_found(exc):
                raise StreamNotFoundError(task_stream, "the pool's task stream") from exc
            raise
        return tuple(info.config.subjects or ())

    async def replay(
        self,
        *,
        task_stream: str,
        seqs: Sequence[int] | None = None,
        flt: RecordFilter | None = None,
        limit: int | None = None,
        dry_run: bool = False,
        keep: bool = False,
        by: str | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        reset_expiry: bool = False,
        signing_keys: Keyring | None = None,
        on_progress: Callable[[int], None] | None = None,
    ) -> ReplayReport:
        """Re-publish each selected record's task; delete the record once the PubAck is in.

        Only to subjects of ``task_stream`` (the pool's own), and with ``signing_keys`` only
        records whose original signature verifies; other records are reported as ``refused``
        and kept.

        A duplicate PubAck means this record was replayed before (and kept, or the delete was
        lost), so the record is deleted all the same. A filter covers the records stored when
        the replay starts, never those it causes: a replayed task that fails again lands at the
        end of the stream, and reading on to the end would replay it forever.
        """
        report = ReplayReport(dry_run=dry_run)
        who = by or default_replayed_by()
        subjects = await self.task_stream_subjects(task_stream)
        until_seq = None if seqs else int((await self._stream_info()).state.last_seq)
        async for entry in self._selected(seqs, flt, limit, until_seq):
            report.items.append(
                await self._replay_one(
                    entry,
                    dry_run=dry_run,
                    keep=keep,
                    by=who,
                    now=now(),
                    reset_expiry=reset_expiry,
                    signing_keys=signing_keys,
                    task_stream=(task_stream, subjects),
                )
            )
            if on_progress is not None:
                on_progress(len(report.items))
        expired = sum(
            1
            for i in report.items
            if i.reason == DeadLetterReason.EXPIRED and i.outcome in ("replayed", "would-replay")
        )
        if expired and not reset_expiry:
            report.warnings.append(
                f"{expired} record(s) were dead-lettered as 'expired': replayed without "
                "--reset-expiry they expire again at once"
            )
        return report

    async def _replay_one(
        self,
        entry: DlqEntry | int,
        *,
        dry_run: bool,
        keep: bool,
        by: str,
        now: datetime,
        reset_expiry: bool,
        signing_keys: Keyring | None,
        task_stream: tuple[str, Sequence[str]],
    ) -> ReplayItem:
        if isinstance(entry, int):
            return ReplayItem(entry, None, None, "failed", error="no such record")
        rec = entry.record
        if rec is None:
            return ReplayItem(entry.seq, None, None, "failed", error=entry.problem)
        item = ReplayItem(
            entry.seq, rec.task_id, rec.original_subject, "would-replay", reason=str(rec.reason)
        )
        if rec.payload_truncated:
            item.outcome = "failed"
            item.error = "the payload was cut to fit the dead-letter stream; cannot replay it"
            return item
        problem = replay_subject_problem(rec.original_subject, *task_stream)
        if problem is not None:
            item.outcome, item.error = "refused", problem
            return item
        try:
            subject, payload, headers = replay_message(
                rec,
                dlq_stream=self.target.stream,
                dlq_seq=entry.seq,
                by=by,
                now=now,
                reset_expiry=reset_expiry,
                signing_keys=signing_keys,
            )
        except ReplayRefused as exc:
            item.outcome, item.error = "refused", exc.message
            return item
        except CliError as exc:
            item.outcome, item.error = "failed", exc.message
            return item
        if dry_run:
            return item
        try:
            # Expected stream too: the server refuses if the subject left the stream meanwhile.
            ack = await self.js.publish(
                subject, payload, headers=headers, timeout=self.timeout, stream=task_stream[0]
            )
        except (nats.errors.Error, TimeoutError) as exc:
            item.outcome, item.error = "failed", describe(exc)
            return item
        item.outcome = "duplicate" if ack.duplicate else "replayed"
        item.new_seq = ack.seq
        if not keep:
            item.deleted = await self._delete(entry.seq)
        log.info("replayed dlq seq %d as %s seq %d", entry.seq, ack.stream, ack.seq)
        return item

    async def _delete(self, seq: int) -> bool:
        try:
            return bool(await self.js.delete_msg(self.target.stream, seq))
        except nats.js.errors.APIError as exc:
            if is_message_not_found(exc):
                return False
            raise

    async def _purge_request(self, subject: str, below_seq: int | None = None) -> int:
        """Stream purge with a subject filter (and optional "below sequence"); returns count.

        nats-py's ``purge_stream`` drops the server's ``purged`` count, so this is the raw API.
        """
        request: dict[str, Any] = {"filter": subject}
        if below_seq is not None:
            request["seq"] = below_seq
        reply = await self.nc.request(
            f"{JS_API}.STREAM.PURGE.{self.target.stream}",
            json.dumps(request).encode(),
            timeout=self.timeout,
        )
        body = json.loads(reply.data)
        if "error" in body:
            exc = nats.js.errors.APIError.from_error(body["error"])
            if is_stream_not_found(exc):
                raise StreamNotFoundError(self.target.stream, "dead-letter stream") from exc
            raise exc
        return int(body.get("purged", 0))

    async def purge(
        self,
        *,
        seqs: Sequence[int] | None = None,
        flt: RecordFilter | None = None,
        dry_run: bool = False,
        on_progress: Callable[[int], None] | None = None,
    ) -> PurgeReport:
        """Delete records by sequence, or by filter (reason / error type / older than)."""
        if seqs:
            return await self._purge_seqs(seqs, dry_run, on_progress)
        if flt is None:
            raise CliError("select records: sequence numbers or a filter", exit_code=2)
        if flt.since is not None:
            raise CliError("purge selects by age with 'before', not 'since'", exit_code=2)
        subject = flt.subject(self.target.subject_prefix)
        if flt.before is None:
            if dry_run:
                info = await self._stream_info(subjects_filter=subject)
                return PurgeReport(sum((info.state.subjects or {}).values()), dry_run=True)
            return PurgeReport(await self._purge_request(subject), dry_run=False)
        if dry_run:
            count = 0
            async for _ in self.entries(flt):
                count += 1
                if on_progress is not None:
                    on_progress(count)
            return PurgeReport(count, dry_run=True)
        cutoff = await self.first_seq_at_or_after(subject, flt.before)
        first = await self._next(subject, 1)
        if first is None or first.seq >= cutoff:
            # Nothing older: never send seq<=first, the server reads a missing seq as "all".
            return PurgeReport(0, dry_run=False)
        return PurgeReport(await self._purge_request(subject, below_seq=cutoff), dry_run=False)

    async def _purge_seqs(
        self, seqs: Iterable[int], dry_run: bool, on_progress: Callable[[int], None] | None
    ) -> PurgeReport:
        report = PurgeReport(0, dry_run=dry_run)
        for done, seq in enumerate(seqs, start=1):
            if dry_run:
                exists = await self._next(self.target.all_subjects, seq)
                found = exists is not None and exists.seq == seq
            else:
                found = await self._delete(seq)
            if found:
                report.removed += 1
            else:
                report.not_found.append(seq)
            if on_progress is not None:
                on_progress(done)
        return report
