"""Hostile or absurd input is dead-lettered as ``invalid``: never a crash, never unsettled."""

from __future__ import annotations

import base64
import os
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from nats.aio.client import Client as NATS

from e2e.testbed.nats_server import NatsServer
from jetpool_protocol import headers as h
from jetpool_protocol.dead_letter import DeadLetterReason
from jetpool_protocol.envelope import InvalidTask, parse_task
from jetpool_protocol.keyring import Keyring
from jetpool_protocol.security import seal, unseal
from jetpool_worker import consumer_loop
from tests.worker import handlers
from tests.worker.helpers import dead_letters, eventually, make_pool, running_worker

NOW = datetime(2030, 1, 1, tzinfo=UTC)
DEEP_JSON = b"[" * 50_000 + b"]" * 50_000
HOSTILE: dict[str, tuple[dict[str, str], bytes]] = {
    "ttl-nan": ({h.TASK_TTL: "nan"}, b"{}"),
    "ttl-inf": ({h.TASK_TTL: "inf"}, b"{}"),
    "ttl-1e12": ({h.TASK_TTL: "1e12"}, b"{}"),
    "created-far-future": ({h.TASK_CREATED: "9999-12-31T23:59:59Z", h.TASK_TTL: "60"}, b"{}"),
    "deeply-nested-json": ({h.CONTENT_TYPE: "application/json"}, DEEP_JSON),
}


def tid() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


def parse(headers: dict[str, str], payload: bytes) -> Any:
    return parse_task(
        subject="tasks.x",
        payload=payload,
        headers=headers,
        stream_sequence=1,
        attempt=1,
        published_at=NOW,
        now=NOW,
        max_payload_bytes=1_048_576,
        default_ttl_seconds=None,
    )


@pytest.mark.parametrize("case", list(HOSTILE))
def test_parse_task_turns_hostile_input_into_invalid_task(case: str):
    headers, payload = HOSTILE[case]
    with pytest.raises(InvalidTask):
        parse(headers, payload)


def test_a_non_ascii_signature_is_a_mismatch_not_a_type_error():
    keys = Keyring.single(os.urandom(32))
    payload, hdrs = seal(b"{}", {h.TASK_ID: "t"}, subject="s", signing_keys=keys)
    hdrs[h.SIGNATURE] = "é" * 64
    with pytest.raises(InvalidTask, match="signature does not match"):
        unseal(payload, hdrs, subject="s", signing_keys=keys, require_signed=True)


@pytest.mark.nats
@pytest.mark.parametrize("case", [*HOSTILE, "signature-non-ascii"])
async def test_the_worker_dead_letters_hostile_input_as_invalid_and_goes_on(
    nc: NATS, nats_server: NatsServer, tmp_path, case: str
):
    key = os.urandom(32)
    key_file = tmp_path / "signing.key"
    key_file.write_text(base64.b64encode(key).decode())
    js = nc.jetstream()
    pool = await make_pool(js, nats_server.url, signing_key_file=str(key_file))
    bad, good = tid(), tid()
    if case == "signature-non-ascii":
        payload, hdrs = b"{}", {h.TASK_ID: bad, h.SIGNATURE: "é" * 64}
    else:
        extra, payload = HOSTILE[case]
        hdrs = {h.TASK_ID: bad, **extra}
    async with running_worker(pool.settings):
        await js.publish(pool.subject(), payload, headers=hdrs)
        await js.publish(pool.subject(), b"{}", headers={h.TASK_ID: good})
        await eventually(lambda: handlers.DONE[good] == 1, what="good task done")
        await eventually(lambda: _has_dead_letter(js, pool), what="dead letter")
    [(_, record)] = await dead_letters(js, pool)
    assert record.task_id == bad
    assert record.reason is DeadLetterReason.INVALID
    assert record.payload == payload
    assert bad not in handlers.ATTEMPT_TIMES


@pytest.mark.nats
async def test_any_unexpected_validation_error_dead_letters_the_task_as_invalid(
    nc: NATS, nats_server: NatsServer, monkeypatch: pytest.MonkeyPatch
):
    def explode(**kwargs: Any) -> Any:
        raise ZeroDivisionError("a parser bug")

    monkeypatch.setattr(consumer_loop, "parse_task", explode)
    js = nc.jetstream()
    pool = await make_pool(js, nats_server.url)
    bad = tid()
    async with running_worker(pool.settings):
        await js.publish(pool.subject(), b"{}", headers={h.TASK_ID: bad})
        await eventually(lambda: _has_dead_letter(js, pool), what="dead letter")
    [(_, record)] = await dead_letters(js, pool)
    assert record.reason is DeadLetterReason.INVALID
    assert "ZeroDivisionError: a parser bug" in record.error_message
    assert record.traceback is not None
    assert "explode" in record.traceback


async def _has_dead_letter(js: Any, pool: Any) -> bool:
    return len(await dead_letters(js, pool)) >= 1
