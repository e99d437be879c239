"""`jetpool dlq list|show|stats`: reading the dead-letter stream without leaving consumers."""

from __future__ import annotations

import base64

import pytest

from jetpool_protocol.dead_letter import DeadLetterReason
from tests.cli.conftest import Pool

pytestmark = pytest.mark.nats

R = DeadLetterReason


async def _fill(pool: Pool) -> dict[str, int]:
    """Five records over three reasons and two error types; task id -> sequence."""
    spec = [
        ("a", R.MAX_ATTEMPTS, "ValueError"),
        ("b", R.INVALID, "InvalidTask"),
        ("c", R.MAX_ATTEMPTS, "ValueError"),
        ("d", R.MAX_ATTEMPTS, "pkg.mod.Timeout"),
        ("e", R.EXPIRED, "ExpiredTask"),
    ]
    return {
        task_id: await pool.dead_letter(pool.record(task_id, reason=reason, error_type=et))
        for task_id, reason, et in spec
    }


async def test_list_shows_every_record_oldest_first(pool: Pool) -> None:
    seqs = await _fill(pool)
    result = await pool.cli("dlq", "list", "-o", "json")
    assert result.code == 0, result.err
    rows = result.json()
    assert [r["task_id"] for r in rows] == list(seqs)
    assert [r["seq"] for r in rows] == list(seqs.values())
    assert rows[0]["original_subject"] == pool.task_subject
    assert rows[0]["attempts"] == 5


async def test_list_filters_by_reason_and_by_error_type(pool: Pool) -> None:
    await _fill(pool)
    by_reason = await pool.cli("dlq", "list", "--reason", "max_attempts", "-o", "json")
    by_type = await pool.cli("dlq", "list", "--error-type", "ValueError", "-o", "json")
    dotted = await pool.cli("dlq", "list", "--error-type", "pkg.mod.Timeout", "-o", "json")
    both = await pool.cli(
        "dlq", "list", "--reason", "invalid", "--error-type", "ValueError", "-o", "json"
    )
    assert [r["task_id"] for r in by_reason.json()] == ["a", "c", "d"]
    assert [r["task_id"] for r in by_type.json()] == ["a", "c"]
    assert [r["task_id"] for r in dotted.json()] == ["d"]
    assert both.json() == []


async def test_list_limit_and_since(pool: Pool) -> None:
    await _fill(pool)
    limited = await pool.cli("dlq", "list", "--limit", "2", "-o", "json")
    recent = await pool.cli("dlq", "list", "--since", "1h", "-o", "json")
    future = await pool.cli("dlq", "list", "--since", "0s", "-o", "json")
    assert [r["task_id"] for r in limited.json()] == ["a", "b"]
    assert len(recent.json()) == 5
    assert future.json() == []


async def test_list_table_has_one_row_per_record_and_truncates_messages(pool: Pool) -> None:
    await pool.dead_letter(pool.record("long", message="x" * 500))
    result = await pool.cli("dlq", "list")
    header, row = result.out.splitlines()
    assert header.split() == [
        "SEQ",
        "TIME",
        "TASK-ID",
        "REASON",
        "ERROR-TYPE",
        "ATTEMPTS",
        "SUBJECT",
        "MESSAGE",
    ]
    assert "long" in row
    assert row.endswith("…")
    assert len(row) < 250


async def test_an_empty_list_says_so_on_stderr(pool: Pool) -> None:
    result = await pool.cli("dlq", "list")
    assert (result.code, result.out) == (0, "")
    assert "no dead-letter records match" in result.err


async def test_show_prints_the_full_record_with_headers_payload_and_traceback(pool: Pool) -> None:
    seq = await pool.dead_letter(pool.record("s1", extra_headers={"X-Tenant": "acme"}))
    table = await pool.cli("dlq", "show", str(seq))
    detail = (await pool.cli("dlq", "show", str(seq), "-o", "json")).json()
    assert table.code == 0, table.err
    assert "X-Tenant: acme" in table.out
    assert "ValueError: boom" in table.out
    assert '{"to": "a@example.com"}' in table.out
    assert detail["headers"]["X-Tenant"] == "acme"
    assert detail["payload_encoding"] == "utf-8"
    assert detail["message_headers"]["Jetpool-Dlq-Reason"] == "max_attempts"
    assert detail["worker"] == "worker-0"


async def test_show_base64_encodes_binary_payloads(pool: Pool) -> None:
    seq = await pool.dead_letter(pool.record("bin", payload=b"\xff\x00\xfe"))
    detail = (await pool.cli("dlq", "show", str(seq), "-o", "json")).json()
    assert detail["payload_encoding"] == "base64"
    assert base64.b64decode(detail["payload"]) == b"\xff\x00\xfe"


async def test_show_of_a_missing_sequence_is_a_one_line_error(pool: Pool) -> None:
    result = await pool.cli("dlq", "show", "999")
    assert result.code == 1
    assert result.err.strip() == (
        f"jetpool: error: no record with sequence 999 in '{pool.names.dead_letter_stream}'"
    )


async def test_a_foreign_message_in_the_stream_is_listed_not_fatal(pool: Pool) -> None:
    await pool.js.publish(f"{pool.names.dead_letter_subject_prefix}.invalid.Junk", b"not json")
    rows = (await pool.cli("dlq", "list", "-o", "json")).json()
    assert rows[0]["task_id"] is None
    assert (rows[0]["reason"], rows[0]["error_type"]) == ("invalid", "Junk")
    assert "not a dead-letter record" in rows[0]["error_message"]


async def test_stats_count_by_reason_and_error_type_from_subject_totals(pool: Pool) -> None:
    await _fill(pool)
    result = await pool.cli("dlq", "stats", "-o", "json")
    stats = result.json()
    assert stats["total"] == 5
    assert stats["by_reason"] == {"max_attempts": 3, "expired": 1, "invalid": 1}
    assert stats["by_error_type"] == {
        "ValueError": 2,
        "ExpiredTask": 1,
        "InvalidTask": 1,
        "pkg_mod_Timeout": 1,
    }
    assert stats["by_subject"][0] == {
        "reason": "max_attempts",
        "error_type": "ValueError",
        "count": 2,
    }
    assert stats["oldest"] <= stats["newest"]
    table = await pool.cli("dlq", "stats")
    assert f"stream {pool.names.dead_letter_stream}: 5 records" in table.out
    _, by_reason, by_error_type, _ = table.out.split("\n\n")
    assert by_reason.splitlines() == [
        "REASON        COUNT",
        "max_attempts  3",
        "expired       1",
        "invalid       1",
    ]
    assert by_error_type.splitlines() == [
        "ERROR-TYPE       COUNT",
        "ValueError       2",
        "ExpiredTask      1",
        "InvalidTask      1",
        "pkg_mod_Timeout  1",
    ]


async def test_stats_of_an_empty_stream_are_zero(pool: Pool) -> None:
    stats = (await pool.cli("dlq", "stats", "-o", "json")).json()
    assert (stats["total"], stats["oldest"], stats["by_reason"]) == (0, None, {})


async def test_reading_leaves_no_consumer_behind(pool: Pool) -> None:
    await _fill(pool)
    await pool.cli("dlq", "list")
    await pool.cli("dlq", "stats")
    info = await pool.js.stream_info(pool.names.dead_letter_stream)
    assert info.state.consumer_count == 0


async def test_an_explicit_dlq_stream_reads_its_subject_prefix_from_the_stream(pool: Pool) -> None:
    await _fill(pool)
    result = await pool.cli(
        "dlq",
        "stats",
        "--dlq-stream",
        pool.names.dead_letter_stream,
        "-o",
        "json",
        pool_flags=False,
    )
    assert result.code == 0, result.err
    assert result.json()["by_reason"]["max_attempts"] == 3
