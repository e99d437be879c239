"""Fixtures for the CLI tests: a pool's task + dead-letter streams on the real nats-server."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from nats.aio.client import Client as NatsClient
from nats.js.api import RetentionPolicy
from nats.js.client import JetStreamContext

from e2e.testbed.nats_server import NatsServer
from jetpool_cli.main import main_async
from jetpool_protocol import headers as h
from jetpool_protocol.dead_letter import DeadLetterReason, DeadLetterRecord
from jetpool_protocol.envelope import task_headers
from jetpool_protocol.naming import PoolNames, dead_letter_subject


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@dataclass
class Pool:
    """One pool's NATS resources, created fresh for a test, plus helpers to drive them."""

    names: PoolNames
    js: JetStreamContext
    url: str
    records: list[DeadLetterRecord] = field(default_factory=list)

    @property
    def task_subject(self) -> str:
        return f"tasks.{self.names.namespace}.{self.names.pool}.send"

    def record(
        self,
        task_id: str,
        *,
        reason: DeadLetterReason = DeadLetterReason.MAX_ATTEMPTS,
        error_type: str = "ValueError",
        payload: bytes = b'{"to": "a@example.com"}',
        message: str = "boom",
        extra_headers: dict[str, str] | None = None,
    ) -> DeadLetterRecord:
        now = datetime.now(UTC)
        headers = task_headers(task_id=task_id, created_at=now, extra=extra_headers)
        return DeadLetterRecord(
            task_id=task_id,
            pool=self.names.pool,
            namespace=self.names.namespace,
            reason=reason,
            error_type=error_type,
            error_message=message,
            traceback='Traceback (most recent call last):\n  File "h.py"\nValueError: boom',
            attempts=5,
            original_subject=self.task_subject,
            original_stream=self.names.stream,
            original_sequence=7,
            headers=headers,
            payload=payload,
            first_failure_at=now,
            last_failure_at=now,
            worker="worker-0",
        )

    async def dead_letter(self, record: DeadLetterRecord) -> int:
        """Publish a record the way the worker does; returns its dead-letter sequence."""
        subject = dead_letter_subject(
            self.names.dead_letter_subject_prefix, record.reason, record.error_type
        )
        ack = await self.js.publish(
            subject,
            record.model_dump_json().encode(),
            headers={
                h.DLQ_REASON: str(record.reason),
                h.DLQ_ERROR_TYPE: record.error_type,
                h.DLQ_POOL: f"{self.names.namespace}/{self.names.pool}",
            },
        )
        return int(ack.seq)

    async def dlq_seqs(self) -> list[int]:
        return await _seqs(self.js, self.names.dead_letter_stream, ">")

    async def task_messages(self) -> list[Any]:
        out = []
        for seq in await _seqs(self.js, self.names.stream, ">"):
            out.append(await self.js.get_msg(self.names.stream, seq=seq))
        return out

    async def cli(self, *argv: str, stdin: str = "", pool_flags: bool = True) -> Result:
        """Run ``jetpool ARGV`` in-process against this pool; returns code and output."""
        out, err = io.StringIO(), io.StringIO()
        flags = ["--nats-url", self.url]
        if pool_flags:
            flags += ["-n", self.names.namespace, "-p", self.names.pool]
        code = await main_async([*argv, *flags], stdin=io.StringIO(stdin), stdout=out, stderr=err)
        return Result(code, out.getvalue(), err.getvalue())


async def _seqs(js: JetStreamContext, stream: str, subject: str) -> list[int]:
    from nats.js.errors import NotFoundError

    seqs: list[int] = []
    seq = 1
    while True:
        try:
            msg = await js.get_msg(stream, seq=seq, subject=subject, next=True)
        except NotFoundError:
            return seqs
        seqs.append(int(msg.seq or 0))
        seq = seqs[-1] + 1


@pytest.fixture
async def pool(nats_server: NatsServer, nc: NatsClient) -> AsyncIterator[Pool]:
    names = PoolNames(f"ns{uuid.uuid4().hex[:8]}", "emails")
    js = nc.jetstream()
    await js.add_stream(
        name=names.stream,
        subjects=names.default_subjects,
        retention=RetentionPolicy.WORK_QUEUE,
        duplicate_window=120.0,
    )
    await js.add_stream(
        name=names.dead_letter_stream,
        subjects=[f"{names.dead_letter_subject_prefix}.>"],
        retention=RetentionPolicy.LIMITS,
    )
    yield Pool(names, js, nats_server.url)
    await js.delete_stream(names.stream)
    await js.delete_stream(names.dead_letter_stream)
