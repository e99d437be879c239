"""Building tasks and replay messages: pure functions over the protocol's shapes."""

from __future__ import annotations

import base64
import os
from datetime import UTC, datetime

import pytest

from jetpool_cli.dead_letters import (
    ReplayRefused,
    replay_message,
    replay_subject_problem,
    subject_matches,
)
from jetpool_cli.errors import CliError
from jetpool_cli.publishing import TaskOptions, build_task, task_ids
from jetpool_protocol import headers as h
from jetpool_protocol.dead_letter import DeadLetterReason, DeadLetterRecord
from jetpool_protocol.envelope import task_headers
from jetpool_protocol.keyring import Key, Keyring
from jetpool_protocol.security import sign, unseal

NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
SUBJECT = "tasks.ns.p.send"


def test_built_tasks_carry_the_envelope_headers_with_the_task_id_as_msg_id() -> None:
    task = build_task(
        "tasks.a.b.c",
        b"{}",
        "t-1",
        created_at=NOW,
        options=TaskOptions(ttl_seconds=30, extra_headers={"X-Tenant": "acme"}),
    )
    assert task.headers[h.MSG_ID] == task.headers[h.TASK_ID] == "t-1"
    assert task.headers[h.TASK_TTL] == "30"
    assert task.headers[h.TASK_CREATED] == "2025-01-02T03:04:05Z"
    assert task.headers["X-Tenant"] == "acme"


def test_sealed_tasks_unseal_with_the_same_keys() -> None:
    signing, enc = Keyring.single(os.urandom(32)), Keyring.single(os.urandom(32))
    task = build_task(
        "s",
        b'{"a": 1}',
        "t-2",
        created_at=NOW,
        options=TaskOptions(signing_keys=signing, encryption_keys=enc),
    )
    assert task.payload != b'{"a": 1}'
    assert task.headers[h.KEY_ID] == signing.current.id
    assert task.headers[h.ENCRYPTION_KEY_ID] == enc.current.id
    plain = unseal(
        task.payload,
        task.headers,
        subject="s",
        signing_keys=signing,
        encryption_keys=enc,
        require_signed=True,
    )
    assert plain == b'{"a": 1}'


def test_id_prefix_gives_numbered_ids_so_reruns_are_deduplicated() -> None:
    assert list(task_ids(3, id_prefix="batch")) == ["batch-1", "batch-2", "batch-3"]


def test_random_ids_are_distinct() -> None:
    ids = list(task_ids(50))
    assert len(set(ids)) == 50


def test_an_explicit_id_names_exactly_one_task() -> None:
    assert list(task_ids(1, task_id="x")) == ["x"]
    with pytest.raises(CliError, match="exactly one task"):
        list(task_ids(2, task_id="x"))


def _record(headers: dict[str, str], payload: bytes = b'{"n": 1}') -> DeadLetterRecord:
    return DeadLetterRecord(
        task_id="t-9",
        pool="p",
        namespace="ns",
        reason=DeadLetterReason.EXPIRED,
        error_type="ExpiredTask",
        error_message="deadline passed",
        attempts=1,
        original_subject="tasks.ns.p.send",
        original_stream="jetpool-ns-p",
        original_sequence=3,
        headers=headers,
        payload=payload,
        first_failure_at=NOW,
        last_failure_at=NOW,
        worker="w",
    )


def test_replay_keeps_original_payload_and_headers_but_gets_a_replay_msg_id() -> None:
    original = task_headers(task_id="t-9", created_at=NOW, ttl_seconds=60, extra={"X-A": "1"})
    original |= {h.DLQ_REASON: "expired", "Nats-Expected-Stream": "old", h.REPLAYED_BY: "old"}
    subject, payload, headers = replay_message(
        _record(original), dlq_stream="dlq", dlq_seq=42, by="ann@host", now=NOW
    )
    assert (subject, payload) == ("tasks.ns.p.send", b'{"n": 1}')
    assert headers[h.MSG_ID] == "t-9:replay:42"
    assert headers[h.TASK_ID] == "t-9"
    assert headers[h.TASK_CREATED] == original[h.TASK_CREATED]
    assert headers["X-A"] == "1"
    assert headers[h.REPLAYED_FROM] == "dlq:42"
    assert headers[h.REPLAYED_BY] == "ann@host"
    assert headers[h.REPLAYED_AT] == "2025-01-02T03:04:05Z"
    assert h.DLQ_REASON not in headers
    assert "Nats-Expected-Stream" not in headers


def test_reset_expiry_restarts_the_ttl_clock_and_re_signs_with_the_current_key() -> None:
    old = Keyring.single(os.urandom(32))
    ring = Keyring((Key("new", os.urandom(32)), *old.keys))
    created = datetime(2020, 1, 1, tzinfo=UTC)
    original = task_headers(task_id="t-9", created_at=created, ttl_seconds=60)
    original[h.TASK_DEADLINE] = "2020-01-01T00:01:00Z"
    original = sign(b'{"n": 1}', original, subject=SUBJECT, keys=old)
    _, payload, headers = replay_message(
        _record(original),
        dlq_stream="d",
        dlq_seq=1,
        by="b",
        now=NOW,
        reset_expiry=True,
        signing_keys=ring,
    )
    assert headers[h.TASK_CREATED] == "2025-01-02T03:04:05Z"
    assert h.TASK_DEADLINE not in headers
    assert headers[h.KEY_ID] == "new"
    plain = unseal(payload, headers, subject=SUBJECT, signing_keys=ring, require_signed=True)
    assert plain == b'{"n": 1}'


@pytest.mark.parametrize("reset_expiry", [False, True], ids=["as is", "reset expiry"])
def test_a_record_whose_original_signature_does_not_verify_is_refused(
    reset_expiry: bool,
) -> None:
    keys = Keyring.single(os.urandom(32))
    original = sign(
        b'{"n": 1}', task_headers(task_id="t-9", created_at=NOW), subject=SUBJECT, keys=keys
    )
    forged = _record(original, payload=b'{"n": 2}')
    with pytest.raises(ReplayRefused, match="original signature does not verify"):
        replay_message(
            forged,
            dlq_stream="d",
            dlq_seq=1,
            by="b",
            now=NOW,
            reset_expiry=reset_expiry,
            signing_keys=keys,
        )


def test_a_signed_record_moved_to_another_subject_is_refused() -> None:
    keys = Keyring.single(os.urandom(32))
    headers = sign(
        b'{"n": 1}', task_headers(task_id="t-9", created_at=NOW), subject="tasks.x.y.z", keys=keys
    )
    with pytest.raises(ReplayRefused, match="signature does not match"):
        replay_message(
            _record(headers), dlq_stream="d", dlq_seq=1, by="b", now=NOW, signing_keys=keys
        )


def test_a_record_signed_with_a_key_the_keyring_lacks_is_refused_naming_the_key_id() -> None:
    other = Keyring((Key("gone-2024", os.urandom(32)),))
    headers = sign(
        b'{"n": 1}', task_headers(task_id="t-9", created_at=NOW), subject=SUBJECT, keys=other
    )
    with pytest.raises(ReplayRefused, match="unknown key id 'gone-2024'"):
        replay_message(
            _record(headers),
            dlq_stream="d",
            dlq_seq=1,
            by="b",
            now=NOW,
            signing_keys=Keyring.single(os.urandom(32)),
        )


@pytest.mark.parametrize(
    ("subject", "problem"),
    [
        ("$JS.API.STREAM.DELETE.jetpool-ns-p", "system or reply subject"),
        ("$SYS.REQ.SERVER.PING", "system or reply subject"),
        ("_INBOX.abc", "system or reply subject"),
        ("tasks.other.pool.send", "not a subject of the pool's task stream"),
        ("tasks.ns.p.*", "not a publishable subject"),
        ("tasks.ns.p.>", "not a publishable subject"),
        ("tasks..p", "not a publishable subject"),
        ("tasks.ns.p.a b", "not a publishable subject"),
        ("tasks.ns.p", "not a subject of the pool's task stream"),
    ],
)
def test_replay_refuses_subjects_outside_the_pools_task_stream(subject: str, problem: str) -> None:
    # Even a stream that (wrongly) captured "$JS.>" never makes an API subject a task subject.
    found = replay_subject_problem(subject, "jetpool-ns-p", ["tasks.ns.p.>", "$JS.>"])
    assert found is not None
    assert problem in found


@pytest.mark.parametrize(
    ("pattern", "subject", "matches"),
    [
        ("tasks.ns.p.>", "tasks.ns.p.send", True),
        ("tasks.ns.p.>", "tasks.ns.p.a.b", True),
        ("tasks.ns.p.>", "tasks.ns.p", False),
        ("tasks.*.p", "tasks.ns.p", True),
        ("tasks.*.p", "tasks.ns.q", False),
        ("tasks.ns.p", "tasks.ns.p", True),
        ("tasks.ns.p", "tasks.ns.p.x", False),
        (">", "anything.at.all", True),
    ],
)
def test_subjects_match_the_way_nats_matches_them(
    pattern: str, subject: str, matches: bool
) -> None:
    assert subject_matches(pattern, subject) is matches


def test_reset_expiry_of_a_signed_task_without_the_key_is_refused() -> None:
    original = task_headers(task_id="t-9", created_at=NOW)
    original[h.SIGNATURE] = base64.b16encode(b"x").decode()
    with pytest.raises(CliError, match="sign-key-file"):
        replay_message(
            _record(original), dlq_stream="d", dlq_seq=1, by="b", now=NOW, reset_expiry=True
        )


def test_a_hostile_subject_is_shown_cut_short() -> None:
    found = replay_subject_problem("x" * 100_000, "jetpool-ns-p", ["tasks.ns.p.>"])
    assert found is not None
    assert len(found) < 400
