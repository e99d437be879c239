"""`jetpool dlq replay`: original task back on its subject, audited, record deleted once acked."""

from __future__ import annotations

import base64
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NatsClient

from jetpool_protocol import headers as h
from jetpool_protocol.dead_letter import DeadLetterReason, DeadLetterRecord
from jetpool_protocol.envelope import parse_task
from jetpool_protocol.keyring import Key, Keyring
from jetpool_protocol.security import sign
from tests.cli.conftest import Pool

pytestmark = pytest.mark.nats


async def test_replay_publishes_the_original_task_with_audit_headers_and_deletes_the_record(
    pool: Pool,
) -> None:
    seq = await pool.dead_letter(pool.record("r1", extra_headers={"X-Tenant": "acme"}))
    result = await pool.cli("dlq", "replay", str(seq), "--by", "ops@test")
    assert result.code == 0, result.err
    assert "replayed 1, duplicates 0, failed 0, deleted 1" in result.out
    [msg] = await pool.task_messages()
    assert msg.subject == pool.task_subject
    assert msg.data == b'{"to": "a@example.com"}'
    assert msg.headers[h.TASK_ID] == "r1"
    assert msg.headers[h.MSG_ID] == f"r1:replay:{seq}"
    assert msg.headers["X-Tenant"] == "acme"
    assert msg.headers[h.REPLAYED_FROM] == f"{pool.names.dead_letter_stream}:{seq}"
    assert msg.headers[h.REPLAYED_BY] == "ops@test"
    assert datetime.fromisoformat(msg.headers[h.REPLAYED_AT]) > datetime.now(UTC) - timedelta(
        minutes=1
    )
    assert h.DLQ_REASON not in msg.headers
    assert await pool.dlq_seqs() == []


async def test_replaying_a_kept_record_twice_is_deduplicated(pool: Pool) -> None:
    seq = await pool.dead_letter(pool.record("r2"))
    first = await pool.cli("dlq", "replay", str(seq), "--keep", "-o", "json")
    second = await pool.cli("dlq", "replay", str(seq), "-o", "json")
    assert (first.json()["replayed"], first.json()["deleted"]) == (1, 0)
    assert (second.json()["duplicates"], second.json()["deleted"]) == (1, 1)
    assert len(await pool.task_messages()) == 1
    assert await pool.dlq_seqs() == []


async def test_replay_by_filter_takes_only_matching_records(pool: Pool) -> None:
    keep = await pool.dead_letter(pool.record("k", reason=DeadLetterReason.INVALID))
    await pool.dead_letter(pool.record("m1"))
    await pool.dead_letter(pool.record("m2", error_type="KeyError"))
    result = await pool.cli(
        "dlq", "replay", "--reason", "max_attempts", "--error-type", "ValueError"
    )
    assert result.code == 0, result.err
    assert [m.headers[h.TASK_ID] for m in await pool.task_messages()] == ["m1"]
    assert len(await pool.dlq_seqs()) == 2
    assert keep in await pool.dlq_seqs()


async def test_replay_all_with_a_limit_stops_after_n(pool: Pool) -> None:
    for i in range(5):
        await pool.dead_letter(pool.record(f"x{i}"))
    result = await pool.cli("dlq", "replay", "--all", "--limit", "3", "-o", "json")
    assert result.json()["replayed"] == 3
    assert len(await pool.dlq_seqs()) == 2


async def test_a_dry_run_replays_and_deletes_nothing(pool: Pool) -> None:
    seq = await pool.dead_letter(pool.record("dry"))
    result = await pool.cli("dlq", "replay", "--all", "--dry-run")
    assert result.code == 0, result.err
    assert "would replay 1 records" in result.out
    assert await pool.task_messages() == []
    assert await pool.dlq_seqs() == [seq]


async def test_a_missing_sequence_fails_that_item_and_the_exit_code(pool: Pool) -> None:
    seq = await pool.dead_letter(pool.record("ok"))
    result = await pool.cli("dlq", "replay", str(seq), "4242", "-o", "json")
    assert result.code == 1
    outcomes = {i["seq"]: i["outcome"] for i in result.json()["items"]}
    assert outcomes == {seq: "replayed", 4242: "failed"}


async def test_replay_with_reset_expiry_makes_an_expired_task_runnable_again(pool: Pool) -> None:
    record = pool.record("exp", reason=DeadLetterReason.EXPIRED, error_type="ExpiredTask")
    stale = dict(record.headers) | {h.TASK_CREATED: "2020-01-01T00:00:00Z", h.TASK_TTL: "60"}
    seq = await pool.dead_letter(record.model_copy(update={"headers": stale}))
    result = await pool.cli("dlq", "replay", str(seq), "--reset-expiry")
    assert result.code == 0, result.err
    [msg] = await pool.task_messages()
    task = parse_task(
        subject=msg.subject,
        payload=msg.data,
        headers=msg.headers,
        stream_sequence=msg.seq,
        attempt=1,
        published_at=msg.time,
        now=datetime.now(UTC),
        max_payload_bytes=1 << 20,
        default_ttl_seconds=None,
    )
    assert task.id == "exp"


async def test_replay_needs_a_selection(pool: Pool) -> None:
    result = await pool.cli("dlq", "replay")
    assert result.code == 2
    assert "choose records" in result.err
    mixed = await pool.cli("dlq", "replay", "1", "--all")
    assert mixed.code == 2
    assert "cannot be combined" in mixed.err


async def test_replaying_records_that_fail_again_stops_at_the_records_there_at_the_start(
    pool: Pool, nc: NatsClient
) -> None:
    for i in range(3):
        await pool.dead_letter(pool.record(f"again{i}"))

    async def fail_again(msg: Any) -> None:  # a worker that dead-letters every task at once
        await pool.dead_letter(pool.record(msg.headers[h.TASK_ID]))

    sub = await nc.subscribe(pool.task_subject, cb=fail_again)
    try:
        result = await pool.cli("dlq", "replay", "--all", "--limit", "50", "-o", "json")
    finally:
        await sub.unsubscribe()
    assert result.code == 0, result.err
    assert result.json()["replayed"] == 3


async def test_replaying_expired_records_without_reset_expiry_warns(pool: Pool) -> None:
    await pool.dead_letter(pool.record("old", reason=DeadLetterReason.EXPIRED))
    await pool.dead_letter(pool.record("fine"))
    result = await pool.cli("dlq", "replay", "--all")
    assert result.code == 0, result.err
    assert "warning: 1 record(s) were dead-lettered as 'expired'" in result.err
    assert "--reset-expiry" in result.err


async def test_replaying_expired_records_with_reset_expiry_does_not_warn(pool: Pool) -> None:
    await pool.dead_letter(pool.record("old", reason=DeadLetterReason.EXPIRED))
    result = await pool.cli("dlq", "replay", "--all", "--reset-expiry")
    assert result.code == 0, result.err
    assert "warning" not in result.err


async def test_a_record_whose_payload_was_cut_is_not_replayed(pool: Pool) -> None:
    cut = pool.record("big").model_copy(update={"payload_truncated": True})
    seq = await pool.dead_letter(cut)
    result = await pool.cli("dlq", "replay", str(seq), "-o", "json")
    assert result.code != 0
    [item] = result.json()["items"]
    assert item["outcome"] == "failed"
    assert "cut" in item["error"]
    assert await pool.task_messages() == []
    assert await pool.dlq_seqs() == [seq]


# ------------------------------------------------------------------ refusals: forged or foreign


def _keyring_file(tmp_path: Path, *lines: str) -> str:
    path = tmp_path / "signing.key"
    path.write_text("".join(f"{line}\n" for line in lines))
    return str(path)


def _signed_record(pool: Pool, task_id: str, keys: Keyring, **update: Any) -> DeadLetterRecord:
    record = pool.record(task_id)
    headers = sign(record.payload, record.headers, subject=record.original_subject, keys=keys)
    return record.model_copy(update={"headers": headers, **update})


async def test_a_record_whose_signature_does_not_verify_is_refused_and_not_published(
    pool: Pool, tmp_path: Path
) -> None:
    secret = os.urandom(32)
    keys = Keyring((Key("k1", secret),))
    forged = _signed_record(pool, "forged", keys, payload=b'{"to": "mallory@example.com"}')
    good = _signed_record(pool, "good", keys)
    forged_seq, good_seq = await pool.dead_letter(forged), await pool.dead_letter(good)
    key_file = _keyring_file(tmp_path, f"k1:{base64.b64encode(secret).decode()}")
    result = await pool.cli(
        "dlq", "replay", "--all", "--reset-expiry", "--sign-key-file", key_file, "-o", "json"
    )
    assert result.code == 1
    items = {i["task_id"]: i for i in result.json()["items"]}
    assert items["forged"]["outcome"] == "refused"
    assert "original signature does not verify" in items["forged"]["error"]
    assert items["good"]["outcome"] == "replayed"
    assert f"refused dlq seq {forged_seq}: task forged" in result.err
    [msg] = await pool.task_messages()
    assert msg.headers[h.TASK_ID] == "good"
    assert await pool.dlq_seqs() == [forged_seq]
    assert good_seq not in await pool.dlq_seqs()


async def test_a_record_signed_with_an_unknown_key_is_refused_naming_the_key_id(
    pool: Pool, tmp_path: Path
) -> None:
    stranger = Keyring((Key("stranger", os.urandom(32)),))
    seq = await pool.dead_letter(_signed_record(pool, "s1", stranger))
    key_file = _keyring_file(tmp_path, base64.b64encode(os.urandom(32)).decode())
    result = await pool.cli("dlq", "replay", str(seq), "--sign-key-file", key_file, "-o", "json")
    assert result.code == 1
    [item] = result.json()["items"]
    assert item["outcome"] == "refused"
    assert "unknown key id 'stranger'" in item["error"]
    assert await pool.task_messages() == []


@pytest.mark.parametrize(
    "subject",
    [
        "$JS.API.STREAM.DELETE.{stream}",
        "$SYS.REQ.SERVER.PING",
        "_INBOX.stolen",
        "tasks.victim.pool.send",
    ],
)
async def test_a_record_aimed_outside_the_pools_task_stream_is_refused_and_reported(
    pool: Pool, nc: NatsClient, subject: str
) -> None:
    aimed = subject.format(stream=pool.names.stream)
    await pool.js.add_stream(name="victim-tasks", subjects=["tasks.victim.pool.>"])
    try:
        seq = await pool.dead_letter(
            pool.record("hostile").model_copy(update={"original_subject": aimed})
        )
        result = await pool.cli("dlq", "replay", "--all", "-o", "json")
        victim = await pool.js.stream_info("victim-tasks")
    finally:
        await pool.js.delete_stream("victim-tasks")
    assert result.code == 1
    [item] = result.json()["items"]
    assert item["outcome"] == "refused"
    assert repr(aimed) in item["error"]
    assert result.json()["refused"] == 1
    assert "refused dlq seq" in result.err
    assert victim.state.messages == 0
    assert (await pool.js.stream_info(pool.names.stream)).config.name == pool.names.stream
    assert await pool.dlq_seqs() == [seq]


async def test_replay_without_the_pool_or_its_task_stream_is_a_usage_error(pool: Pool) -> None:
    await pool.dead_letter(pool.record("r"))
    result = await pool.cli(
        "dlq",
        "replay",
        "--all",
        "--dlq-stream",
        pool.names.dead_letter_stream,
        pool_flags=False,
    )
    assert result.code == 2
    assert "name the pool" in result.err
