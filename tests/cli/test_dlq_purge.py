"""`jetpool dlq purge`: delete by filter, age or sequence; never without --yes."""

from __future__ import annotations

import pytest
from nats.aio.client import Client as NatsClient

from jetpool_cli.dead_letters import DeadLetterAdmin, RecordFilter
from jetpool_protocol.dead_letter import DeadLetterReason
from tests.cli.conftest import Pool

pytestmark = pytest.mark.nats


async def _fill(pool: Pool) -> list[int]:
    return [
        await pool.dead_letter(pool.record("a")),
        await pool.dead_letter(pool.record("b", reason=DeadLetterReason.INVALID)),
        await pool.dead_letter(pool.record("c", error_type="KeyError")),
        await pool.dead_letter(pool.record("d")),
    ]


async def test_purge_by_reason_removes_only_that_reason(pool: Pool) -> None:
    _a, b, _c, _d = await _fill(pool)
    result = await pool.cli("dlq", "purge", "--reason", "max_attempts", "--yes")
    assert result.code == 0, result.err
    assert f"removed 3 records from {pool.names.dead_letter_stream}" in result.out
    assert await pool.dlq_seqs() == [b]


async def test_purge_by_error_type_removes_only_that_type(pool: Pool) -> None:
    a, b, _c, d = await _fill(pool)
    result = await pool.cli("dlq", "purge", "--error-type", "KeyError", "--yes", "-o", "json")
    assert result.json()["removed"] == 1
    assert await pool.dlq_seqs() == [a, b, d]


async def test_purge_by_sequence_reports_missing_ones(pool: Pool) -> None:
    a, b, c, d = await _fill(pool)
    result = await pool.cli("dlq", "purge", str(a), str(c), "999", "--yes")
    assert result.code == 1
    assert "removed 2 records" in result.out
    assert "not found: 999" in result.err
    assert await pool.dlq_seqs() == [b, d]


async def test_purge_older_than_cuts_by_store_time(pool: Pool) -> None:
    await _fill(pool)
    nothing = await pool.cli("dlq", "purge", "--older-than", "1h", "--yes", "-o", "json")
    everything = await pool.cli("dlq", "purge", "--older-than", "0s", "--yes", "-o", "json")
    assert nothing.json()["removed"] == 0
    assert everything.json()["removed"] == 4
    assert await pool.dlq_seqs() == []


async def test_purge_before_an_instant_keeps_records_stored_from_then_on(
    pool: Pool, nc: NatsClient
) -> None:
    old = [await pool.dead_letter(pool.record(f"old{i}")) for i in range(3)]
    new = [await pool.dead_letter(pool.record(f"new{i}")) for i in range(3)]
    boundary = (await pool.js.get_msg(pool.names.dead_letter_stream, seq=new[0])).time
    last_old = (await pool.js.get_msg(pool.names.dead_letter_stream, seq=old[-1])).time
    assert last_old is not None
    assert boundary is not None
    assert last_old < boundary
    admin = await DeadLetterAdmin.open(
        nc, pool.names.dead_letter_stream, pool.names.dead_letter_subject_prefix
    )
    dry = await admin.purge(flt=RecordFilter(before=boundary), dry_run=True)
    done = await admin.purge(flt=RecordFilter(before=boundary))
    assert (dry.removed, done.removed) == (3, 3)
    assert await pool.dlq_seqs() == new


async def test_purge_older_than_with_a_reason_keeps_other_reasons(pool: Pool) -> None:
    a, _b, c, d = await _fill(pool)
    result = await pool.cli(
        "dlq", "purge", "--older-than", "0s", "--reason", "invalid", "--yes", "-o", "json"
    )
    assert result.json()["removed"] == 1
    assert await pool.dlq_seqs() == [a, c, d]


async def test_purge_without_yes_refuses_and_deletes_nothing(pool: Pool) -> None:
    seqs = await _fill(pool)
    result = await pool.cli("dlq", "purge", "--all")
    assert result.code == 2
    assert "refusing to purge 4 records" in result.err
    assert await pool.dlq_seqs() == seqs


async def test_a_dry_run_counts_without_deleting(pool: Pool) -> None:
    seqs = await _fill(pool)
    by_reason = await pool.cli("dlq", "purge", "--reason", "max_attempts", "--dry-run")
    by_age = await pool.cli("dlq", "purge", "--older-than", "0s", "--dry-run", "-o", "json")
    by_seq = await pool.cli("dlq", "purge", str(seqs[0]), "77", "--dry-run", "-o", "json")
    assert by_reason.code == 0
    assert "would remove 3 records" in by_reason.out
    assert by_age.json()["removed"] == 4
    assert (by_seq.json()["removed"], by_seq.json()["not_found"]) == (1, [77])
    assert await pool.dlq_seqs() == seqs


async def test_purge_all_empties_the_stream(pool: Pool) -> None:
    await _fill(pool)
    result = await pool.cli("dlq", "purge", "--all", "--yes")
    assert "removed 4 records" in result.out
    assert await pool.dlq_seqs() == []
