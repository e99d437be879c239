"""`jetpool publish` against a real nats-server: headers, idempotency, sealing, bulk."""

from __future__ import annotations

import base64
import os
import re
from pathlib import Path

import pytest

from jetpool_protocol import headers as h
from jetpool_protocol.keyring import Key, Keyring
from jetpool_protocol.security import unseal
from tests.cli.conftest import Pool

pytestmark = pytest.mark.nats


async def test_publish_sets_task_headers_and_the_payload(pool: Pool) -> None:
    result = await pool.cli(
        "publish",
        pool.task_subject,
        "--data",
        '{"to": "x"}',
        "--id",
        "job-1",
        "--ttl",
        "30",
        "--header",
        "X-Tenant=acme",
    )
    assert result.code == 0, result.err
    assert "published 1, duplicates 0, failed 0" in result.out
    [msg] = await pool.task_messages()
    assert msg.data == b'{"to": "x"}'
    assert msg.headers[h.MSG_ID] == msg.headers[h.TASK_ID] == "job-1"
    assert msg.headers[h.TASK_TTL] == "30"
    assert msg.headers["X-Tenant"] == "acme"
    assert msg.headers[h.CONTENT_TYPE] == "application/json"


async def test_publishing_the_same_id_twice_stores_one_message_and_reports_a_duplicate(
    pool: Pool,
) -> None:
    first = await pool.cli(
        "publish", pool.task_subject, "--data", "{}", "--id", "same", "-o", "json"
    )
    second = await pool.cli(
        "publish", pool.task_subject, "--data", "{}", "--id", "same", "-o", "json"
    )
    assert (first.json()["published"], first.json()["duplicates"]) == (1, 0)
    assert (second.json()["published"], second.json()["duplicates"]) == (0, 1)
    assert len(await pool.task_messages()) == 1


async def test_bulk_publish_with_an_id_prefix_is_idempotent_when_rerun(pool: Pool) -> None:
    argv = (
        "publish",
        pool.task_subject,
        "--data",
        "{}",
        "--count",
        "200",
        "--id-prefix",
        "b",
        "--concurrency",
        "16",
        "-o",
        "json",
        "--progress",
    )
    first = await pool.cli(*argv)
    again = await pool.cli(*argv)
    assert first.json()["published"] == 200
    assert again.json() | {"elapsed_seconds": 0} == {
        "published": 0,
        "duplicates": 200,
        "failed": 0,
        "errors": [],
        "aborted": None,
        "elapsed_seconds": 0,
    }
    # stderr is no terminal here: no redraws, one final line with the count and the rate
    assert re.fullmatch(r"published 200/200 \(\d+/s\) 0:00:\d\d\n", first.err)
    ids = {m.headers[h.TASK_ID] for m in await pool.task_messages()}
    assert ids == {f"b-{i}" for i in range(1, 201)}


async def test_stdin_lines_become_one_task_each(pool: Pool) -> None:
    result = await pool.cli(
        "publish",
        pool.task_subject,
        "--stdin-lines",
        "--id-prefix",
        "l",
        stdin='{"n": 1}\n\n{"n": 2}\n',
    )
    assert result.code == 0, result.err
    assert [m.data for m in await pool.task_messages()] == [b'{"n": 1}', b'{"n": 2}']


async def test_a_payload_file_is_published_as_is(pool: Pool, tmp_path: Path) -> None:
    payload = tmp_path / "task.json"
    payload.write_text('{"big": [1, 2, 3]}')
    result = await pool.cli("publish", pool.task_subject, "--file", str(payload))
    assert result.code == 0, result.err
    assert [m.data for m in await pool.task_messages()] == [b'{"big": [1, 2, 3]}']


async def test_signed_and_encrypted_tasks_round_trip_through_unseal(
    pool: Pool, tmp_path: Path
) -> None:
    sign, enc = os.urandom(32), os.urandom(32)
    (tmp_path / "sign").write_text(base64.b64encode(sign).decode())
    (tmp_path / "enc").write_text(base64.b64encode(enc).decode())
    result = await pool.cli(
        "publish",
        pool.task_subject,
        "--data",
        '{"secret": 1}',
        "--sign-key-file",
        str(tmp_path / "sign"),
        "--encrypt-key-file",
        str(tmp_path / "enc"),
    )
    assert result.code == 0, result.err
    [msg] = await pool.task_messages()
    assert b"secret" not in msg.data
    plain = unseal(
        msg.data,
        msg.headers,
        subject=pool.task_subject,
        signing_keys=Keyring.single(sign),
        encryption_keys=Keyring.single(enc),
        require_signed=True,
    )
    assert plain == b'{"secret": 1}'


async def test_invalid_json_is_refused_before_anything_is_published(pool: Pool) -> None:
    result = await pool.cli("publish", pool.task_subject, "--data", "{nope")
    assert result.code == 2
    assert "--data is not valid JSON" in result.err
    assert await pool.task_messages() == []


async def test_a_subject_no_stream_captures_fails_with_one_line(pool: Pool) -> None:
    result = await pool.cli("publish", "nowhere.at.all", "--data", "{}", pool_flags=False)
    assert result.code == 1
    assert "no JetStream stream captures subject 'nowhere.at.all'" in result.err
    assert "Traceback" not in result.err


async def test_a_subject_outside_the_named_pool_is_refused(pool: Pool) -> None:
    other = "tasks.elsewhere.pool.x"
    await pool.js.add_stream(name="cli-other", subjects=[other])
    try:
        result = await pool.cli("publish", other, "--data", "{}")
    finally:
        await pool.js.delete_stream("cli-other")
    assert result.code == 1
    assert f"is not in stream '{pool.names.stream}'" in result.err


async def test_a_bad_key_file_is_a_usage_error(pool: Pool, tmp_path: Path) -> None:
    (tmp_path / "short").write_text(base64.b64encode(b"too short").decode())
    result = await pool.cli(
        "publish", pool.task_subject, "--data", "{}", "--sign-key-file", str(tmp_path / "short")
    )
    assert result.code == 2
    assert "expected 32" in result.err


async def test_one_explicit_id_for_many_tasks_is_a_usage_error(pool: Pool) -> None:
    result = await pool.cli(
        "publish", pool.task_subject, "--data", "{}", "--id", "x", "--count", "2"
    )
    assert result.code == 2
    assert "use --id-prefix" in result.err
    assert await pool.task_messages() == []


async def test_publish_signs_and_encrypts_with_the_keyrings_first_key_and_names_it(
    pool: Pool, tmp_path: Path
) -> None:
    new, old = os.urandom(32), os.urandom(32)
    ring = f"2026-11:{base64.b64encode(new).decode()}\n2026-10:{base64.b64encode(old).decode()}\n"
    (tmp_path / "ring").write_text(ring)
    result = await pool.cli(
        "publish",
        pool.task_subject,
        "--data",
        '{"n": 1}',
        "--sign-key-file",
        str(tmp_path / "ring"),
        "--encrypt-key-file",
        str(tmp_path / "ring"),
    )
    assert result.code == 0, result.err
    [msg] = await pool.task_messages()
    assert msg.headers[h.KEY_ID] == "2026-11"
    assert msg.headers[h.ENCRYPTION_KEY_ID] == "2026-11"
    only_new = Keyring((Key("2026-11", new),))
    plain = unseal(
        msg.data,
        msg.headers,
        subject=pool.task_subject,
        signing_keys=only_new,
        encryption_keys=only_new,
        require_signed=True,
    )
    assert plain == b'{"n": 1}'


async def test_a_keyring_with_a_bad_line_is_a_usage_error_that_names_the_line(
    pool: Pool, tmp_path: Path
) -> None:
    secret = base64.b64encode(os.urandom(32)).decode()
    (tmp_path / "ring").write_text(f"a:{secret}\nb c:{secret}\n")
    result = await pool.cli(
        "publish", pool.task_subject, "--data", "{}", "--sign-key-file", str(tmp_path / "ring")
    )
    assert result.code == 2
    assert "line 2: key id must be" in result.err
    assert secret not in result.err
    assert await pool.task_messages() == []
