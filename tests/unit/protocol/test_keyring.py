"""Key files: one bare key (as before) or a keyring of ``KEY_ID:BASE64`` lines, current first."""

from __future__ import annotations

import base64
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jetpool_protocol.keyring import (
    KEY_ID_PATTERN,
    Key,
    Keyring,
    KeyringError,
    derive_key_id,
    parse_keyring,
)


def b64(secret: bytes) -> str:
    return base64.b64encode(secret).decode()


def test_a_single_bare_key_keeps_working_under_a_derived_id() -> None:
    secret = os.urandom(32)
    ring = parse_keyring(b64(secret) + "\n")
    assert ring.current == Key(derive_key_id(secret), secret)
    assert len(ring.current.id) == 8


def test_the_first_line_is_the_current_key_and_later_lines_are_still_accepted() -> None:
    new, old = os.urandom(32), os.urandom(32)
    ring = parse_keyring(f"# rotated 2026-11\n2026-11:{b64(new)}\n\n2026-10:{b64(old)}\n")
    assert ring.current.id == "2026-11"
    assert ring.ids == ("2026-11", "2026-10")
    assert ring.get("2026-10") == Key("2026-10", old)
    assert ring.get("2026-09") is None


def test_a_bare_line_may_sit_in_a_keyring_as_the_previous_key() -> None:
    new, old = os.urandom(32), os.urandom(32)
    ring = parse_keyring(f"b:{b64(new)}\n{b64(old)}\n")
    assert ring.ids == ("b", derive_key_id(old))


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "no key"),
        ("# only a comment\n", "no key"),
        ("a:!!!notbase64\n", "line 1: not base64"),
        (f"a:{b64(b'short')}\n", "line 1: key is 5 bytes, expected 32"),
        (f"bad id:{b64(bytes(32))}\n", "line 1: key id must be"),
        (f":{b64(bytes(32))}\n", "line 1: key id must be"),
        (f"a:{b64(bytes(32))}\na:{b64(bytes(range(32)))}\n", "line 2: key id 'a' appears twice"),
    ],
)
def test_a_bad_key_file_names_the_line_and_the_problem(text: str, problem: str) -> None:
    with pytest.raises(KeyringError, match=problem):
        parse_keyring(text, source="signing.key")


def test_errors_never_contain_key_material() -> None:
    secret = os.urandom(32)
    text = f"ok:{b64(secret)}\nbroken id:{b64(secret)}\n"
    with pytest.raises(KeyringError) as caught:
        parse_keyring(text)
    assert b64(secret) not in str(caught.value)
    assert repr(parse_keyring(f"ok:{b64(secret)}")).count(b64(secret)) == 0


def test_keys_are_not_shown_by_repr() -> None:
    secret = os.urandom(32)
    assert secret.hex() not in repr(Keyring.single(secret))
    assert repr(secret) not in repr(Keyring.single(secret))


# ----------------------------------------------------------------------------- properties

key_ids = st.from_regex(KEY_ID_PATTERN, fullmatch=True)
secrets = st.binary(min_size=32, max_size=32)


@given(st.lists(st.tuples(key_ids, secrets), min_size=1, max_size=6, unique_by=lambda p: p[0]))
def test_a_written_keyring_parses_back_to_the_same_keys_in_order(
    pairs: list[tuple[str, bytes]],
) -> None:
    text = "".join(f"{kid}:{b64(secret)}\n" for kid, secret in pairs)
    assert parse_keyring(text) == Keyring(tuple(Key(k, s) for k, s in pairs))


@given(
    st.lists(st.tuples(key_ids, secrets), min_size=1, max_size=4, unique_by=lambda p: p[0]),
    st.lists(st.sampled_from(["", "   ", "# note", "  # indented note"]), max_size=4),
)
def test_blank_lines_comments_and_surrounding_spaces_change_nothing(
    pairs: list[tuple[str, bytes]], noise: list[str]
) -> None:
    lines = [f"  {kid} : {b64(secret)}  " for kid, secret in pairs]
    for i, extra in enumerate(noise):
        lines.insert(i * 2 % (len(lines) + 1), extra)
    assert parse_keyring("\r\n".join(lines)).ids == tuple(k for k, _ in pairs)


@given(st.text(max_size=200))
def test_any_text_either_parses_or_fails_with_a_keyring_error(text: str) -> None:
    try:
        ring = parse_keyring(text)
    except KeyringError:
        return
    assert all(len(k.secret) == 32 for k in ring.keys)
    assert len(set(ring.ids)) == len(ring.ids)


@given(secrets)
def test_a_derived_id_is_a_valid_key_id_and_stable(secret: bytes) -> None:
    assert KEY_ID_PATTERN.fullmatch(derive_key_id(secret))
    assert parse_keyring(b64(secret)).current.id == derive_key_id(secret)
