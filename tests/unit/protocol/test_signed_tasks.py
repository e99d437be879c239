"""A signature covers what a forger would change, and names the key that made it."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jetpool_protocol import headers as h
from jetpool_protocol.envelope import InvalidTask, task_headers
from jetpool_protocol.keyring import Key, Keyring
from jetpool_protocol.security import SIGNED_HEADERS, seal, unseal, verify

KEYS = Keyring.single(os.urandom(32))
SUBJECT = "tasks.shop.orders.new"


def signed(ttl: float | None = 60) -> tuple[bytes, dict[str, str]]:
    headers = task_headers(task_id="t-1", created_at=datetime.now(UTC), ttl_seconds=ttl)
    return seal(b'{"n": 1}', headers, subject=SUBJECT, signing_keys=KEYS)


def test_an_untouched_signed_task_verifies() -> None:
    payload, headers = signed()
    plain = unseal(payload, headers, subject=SUBJECT, signing_keys=KEYS, require_signed=True)
    assert plain == b'{"n": 1}'


def test_a_signed_task_carries_the_id_of_the_key_that_signed_it() -> None:
    _, headers = signed()
    assert headers[h.KEY_ID] == KEYS.current.id


Tamper = Callable[[dict[str, str]], object]


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda hd: hd.pop(h.TASK_TTL), id="ttl stripped to revive an expired task"),
        pytest.param(lambda hd: hd.__setitem__(h.TASK_TTL, "99999"), id="ttl extended"),
        pytest.param(
            lambda hd: hd.__setitem__(h.TASK_DEADLINE, "2999-01-01T00:00:00Z"), id="deadline added"
        ),
        pytest.param(lambda hd: hd.__setitem__(h.TASK_ID, "t-2"), id="id changed"),
        pytest.param(lambda hd: hd.__setitem__(h.CONTENT_TYPE, "text/plain"), id="relabelled"),
        pytest.param(lambda hd: hd.__setitem__(h.TASK_SCHEMA, ""), id="empty schema added"),
    ],
)
def test_tampering_with_a_signed_header_breaks_the_signature(tamper: Tamper) -> None:
    payload, headers = signed()
    tamper(headers)
    with pytest.raises(InvalidTask, match="signature"):
        unseal(payload, headers, subject=SUBJECT, signing_keys=KEYS, require_signed=True)


def test_tampering_with_the_payload_breaks_the_signature() -> None:
    payload, headers = signed()
    with pytest.raises(InvalidTask, match="signature"):
        unseal(payload + b" ", headers, subject=SUBJECT, signing_keys=KEYS, require_signed=True)


def test_a_signed_task_replayed_onto_another_pools_subject_does_not_verify() -> None:
    payload, headers = signed()
    with pytest.raises(InvalidTask, match="signature does not match"):
        unseal(
            payload,
            headers,
            subject="tasks.other.orders.new",
            signing_keys=KEYS,
            require_signed=True,
        )


def test_relabelling_the_key_id_breaks_the_signature() -> None:
    twin = Key("twin", KEYS.current.secret)
    ring = Keyring((*KEYS.keys, twin))
    payload, headers = signed()
    headers[h.KEY_ID] = "twin"
    with pytest.raises(InvalidTask, match="signature does not match"):
        unseal(payload, headers, subject=SUBJECT, signing_keys=ring, require_signed=True)


def test_a_task_signed_with_an_unknown_key_id_is_invalid_naming_the_id_not_the_key() -> None:
    other = Keyring((Key("2024-retired", os.urandom(32)),))
    payload, headers = seal(b"{}", {h.TASK_ID: "t"}, subject=SUBJECT, signing_keys=other)
    with pytest.raises(InvalidTask, match="unknown key id '2024-retired'") as caught:
        unseal(payload, headers, subject=SUBJECT, signing_keys=KEYS, require_signed=True)
    assert other.current.secret.hex() not in str(caught.value)
    assert KEYS.current.id in str(caught.value)


def test_a_signed_task_without_a_key_id_is_invalid() -> None:
    payload, headers = signed()
    del headers[h.KEY_ID]
    with pytest.raises(InvalidTask, match="no Jetpool-Key-Id"):
        unseal(payload, headers, subject=SUBJECT, signing_keys=KEYS, require_signed=True)


def test_a_task_signed_with_the_previous_key_still_verifies_after_rotation() -> None:
    previous = Keyring((Key("a", os.urandom(32)),))
    rotated = Keyring((Key("b", os.urandom(32)), *previous.keys))
    payload, headers = seal(b"{}", {h.TASK_ID: "t"}, subject=SUBJECT, signing_keys=previous)
    assert unseal(payload, headers, subject=SUBJECT, signing_keys=rotated) == b"{}"


def test_an_encrypted_task_names_its_key_and_decrypts_with_any_key_of_the_ring() -> None:
    previous = Keyring((Key("a", os.urandom(32)),))
    rotated = Keyring((Key("b", os.urandom(32)), *previous.keys))
    payload, headers = seal(b"secret", {h.TASK_ID: "t"}, subject=SUBJECT, encryption_keys=previous)
    assert headers[h.ENCRYPTION_KEY_ID] == "a"
    assert b"secret" not in payload
    assert unseal(payload, headers, subject=SUBJECT, encryption_keys=rotated) == b"secret"


def test_an_encrypted_task_with_an_unknown_key_id_is_invalid_naming_the_id() -> None:
    stranger = Keyring((Key("stranger", os.urandom(32)),))
    payload, headers = seal(b"x", {h.TASK_ID: "t"}, subject=SUBJECT, encryption_keys=stranger)
    with pytest.raises(InvalidTask, match="encrypted with unknown key id 'stranger'"):
        unseal(payload, headers, subject=SUBJECT, encryption_keys=KEYS)


def test_the_encryption_key_id_is_bound_as_associated_data() -> None:
    # Two ids for the same key: relabelling the ciphertext's key id must still fail.
    ring = Keyring((Key("one", KEYS.current.secret), Key("two", KEYS.current.secret)))
    payload, headers = seal(b"x", {h.TASK_ID: "t"}, subject=SUBJECT, encryption_keys=ring)
    headers[h.ENCRYPTION_KEY_ID] = "two"
    with pytest.raises(InvalidTask, match="failed to decrypt"):
        unseal(payload, headers, subject=SUBJECT, encryption_keys=ring)


def test_an_unknown_key_id_from_the_wire_is_shown_cut_short() -> None:
    payload, headers = signed()
    headers[h.KEY_ID] = "k" * 5000
    with pytest.raises(InvalidTask) as caught:
        unseal(payload, headers, subject=SUBJECT, signing_keys=KEYS)
    assert len(str(caught.value)) < 300


# --------------------------------------------------------------- any single change breaks it

text = st.text(min_size=0, max_size=40)
FIELDS = ("subject", "payload", *SIGNED_HEADERS)


@st.composite
def tasks(draw: st.DrawFn) -> tuple[str, bytes, dict[str, str]]:
    subject = draw(st.text(min_size=1, max_size=40))
    payload = draw(st.binary(max_size=64))
    present = [n for n in SIGNED_HEADERS if n != h.KEY_ID and draw(st.booleans())]
    headers = {name: draw(text) for name in present}
    headers["X-Unsigned"] = draw(text)
    return subject, payload, headers


@given(task=tasks(), field=st.sampled_from(FIELDS), new=text, drop=st.booleans())
def test_any_single_field_change_breaks_the_signature(
    task: tuple[str, bytes, dict[str, str]], field: str, new: str, drop: bool
) -> None:
    subject, payload, headers = task
    payload, sent = seal(payload, headers, subject=subject, signing_keys=KEYS)
    received = dict(sent)
    if field == "subject":
        changed = new != subject
        subject = new
    elif field == "payload":
        changed = new.encode() != payload
        payload = new.encode()
    elif drop and field in received:
        changed = True
        del received[field]
    else:
        changed = received.get(field) != new
        received[field] = new
    if changed:
        with pytest.raises(InvalidTask):
            verify(payload, received, subject=subject, keys=KEYS)
    else:
        verify(payload, received, subject=subject, keys=KEYS)


@given(task=tasks(), new=text)
def test_headers_outside_the_signed_set_do_not_affect_the_signature(
    task: tuple[str, bytes, dict[str, str]], new: str
) -> None:
    subject, payload, headers = task
    payload, sent = seal(payload, headers, subject=subject, signing_keys=KEYS)
    sent["X-Unsigned"] = new
    verify(payload, sent, subject=subject, keys=KEYS)
