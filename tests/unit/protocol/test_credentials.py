"""Credentials files are checked before connecting, and every bad one says what is wrong."""

from __future__ import annotations

import base64
import contextlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from e2e.testbed.nats_auth import NkeyKind, encode_jwt, new_nkey
from jetpool_protocol.credentials import (
    CredentialsError,
    UserCredentials,
    format_creds,
    load_credentials_file,
    parse_credentials,
)

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
USER_CLAIMS = {"pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1, "type": "user"}


@dataclass(frozen=True)
class Identity:
    account_seed: str
    account: str
    user_seed: str
    user: str
    jwt: str

    @property
    def creds(self) -> str:
        return format_creds(self.jwt, self.user_seed)


def make_identity(**jwt_options: int) -> Identity:
    account, user = new_nkey(NkeyKind.ACCOUNT), new_nkey(NkeyKind.USER)
    jwt = encode_jwt(user.public_key, "workers", USER_CLAIMS, account.seed, **jwt_options)
    return Identity(account.seed, account.public_key, user.seed, user.public_key, jwt)


ALICE = make_identity()
BOB = make_identity()


def jwt_block(jwt: str) -> str:
    return f"-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n"


def seed_block(seed: str) -> str:
    return f"-----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"


def problem(content: str | bytes) -> str:
    with pytest.raises(CredentialsError) as caught:
        parse_credentials(content, now=NOW)
    return str(caught.value)


def b64(value: object) -> str:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def with_claims(jwt: str, **changes: object) -> str:
    """The same JWT with claims changed and the original signature kept (a forgery)."""
    head, claims, signature = jwt.split(".")
    decoded = json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))
    return f"{head}.{b64({**decoded, **changes})}.{signature}"


# --- good files ---------------------------------------------------------------------------------


def test_a_file_as_nsc_writes_it_gives_the_user_and_the_account() -> None:
    creds = parse_credentials(ALICE.creds, now=NOW)
    assert (creds.user, creds.account, creds.name) == (ALICE.user, ALICE.account, "workers")
    assert creds.jwt == ALICE.jwt
    assert creds.seed == ALICE.user_seed
    assert creds.expires_at is None


def test_the_seed_is_kept_out_of_the_repr() -> None:
    assert ALICE.user_seed not in repr(parse_credentials(ALICE.creds, now=NOW))


def test_rendering_gives_back_the_same_credentials() -> None:
    creds = parse_credentials(ALICE.creds, now=NOW)
    assert parse_credentials(creds.render(), now=NOW) == creds
    assert creds.render() == ALICE.creds


def test_windows_line_endings_and_surrounding_whitespace_are_accepted() -> None:
    text = "\r\n\r\n" + ALICE.creds.replace("\n", "\r\n") + "  \r\n"
    assert parse_credentials(text.encode(), now=NOW).user == ALICE.user


def test_bare_blocks_without_the_decoration_are_enough() -> None:
    assert parse_credentials(jwt_block(ALICE.jwt) + seed_block(ALICE.user_seed), now=NOW)


def test_a_jwt_valid_until_later_is_accepted_and_its_expiry_reported() -> None:
    later = NOW + timedelta(hours=1)
    identity = make_identity(expires_at=int(later.timestamp()))
    assert parse_credentials(identity.creds, now=NOW).expires_at == later


def test_a_user_jwt_signed_by_an_account_signing_key_names_the_account() -> None:
    account, signing = new_nkey(NkeyKind.ACCOUNT), new_nkey(NkeyKind.ACCOUNT)
    user = new_nkey(NkeyKind.USER)
    claims = {**USER_CLAIMS, "issuer_account": account.public_key}
    jwt = encode_jwt(user.public_key, "scoped", claims, signing.seed)
    creds = parse_credentials(format_creds(jwt, user.seed), now=NOW)
    assert creds.account == account.public_key


def test_a_file_on_disk_is_read_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "nats.creds"
    path.write_text(ALICE.creds)
    assert load_credentials_file(path, now=NOW).user == ALICE.user


# --- what is wrong, said exactly -----------------------------------------------------------------


@pytest.mark.parametrize("content", ["", "\n\n  \t\n", b""])
def test_an_empty_file_is_called_empty(content: str | bytes) -> None:
    assert problem(content) == "the credentials file is empty"


def test_a_file_that_is_not_a_creds_file_says_so() -> None:
    assert "not a NATS credentials (.creds) file" in problem("user: alice\npassword: s3cret\n")


def test_binary_content_is_not_text() -> None:
    assert "not text" in problem(b"\xff\xfe\x00garbage")


def test_a_seed_without_a_jwt_says_the_jwt_is_missing() -> None:
    message = problem(seed_block(ALICE.user_seed))
    assert "no '-----BEGIN NATS USER JWT-----' block" in message
    assert ALICE.user_seed not in message


def test_a_bare_seed_line_says_the_jwt_is_missing_too() -> None:
    assert "not a NATS credentials" in problem(ALICE.user_seed + "\n")


def test_a_jwt_without_a_seed_says_the_seed_is_missing() -> None:
    assert "no '-----BEGIN USER NKEY SEED-----' block" in problem(jwt_block(ALICE.jwt))


def test_a_jwt_and_a_seed_of_different_users_name_both_users() -> None:
    message = problem(format_creds(ALICE.jwt, BOB.user_seed))
    assert f"the seed belongs to user {BOB.user}" in message
    assert f"the JWT is for user {ALICE.user}" in message
    assert BOB.user_seed not in message


def test_an_expired_jwt_says_when_it_expired() -> None:
    identity = make_identity(expires_at=int((NOW - timedelta(days=1)).timestamp()))
    assert problem(identity.creds) == "the user JWT expired at 2026-05-31T12:00:00Z"


def test_a_jwt_not_yet_valid_says_from_when() -> None:
    identity = make_identity(not_before=int((NOW + timedelta(minutes=5)).timestamp()))
    assert problem(identity.creds) == "the user JWT is not valid before 2026-06-01T12:05:00Z"


def test_an_account_seed_in_place_of_the_user_seed_is_named_as_such() -> None:
    message = problem(format_creds(ALICE.jwt, ALICE.account_seed))
    assert "an account seed (SA...), not a user seed (SU...)" in message
    assert ALICE.account_seed not in message


def test_a_damaged_seed_fails_its_checksum() -> None:
    seed = ALICE.user_seed
    damaged = seed[:10] + ("A" if seed[10] != "A" else "B") + seed[11:]
    assert "damaged" in problem(format_creds(ALICE.jwt, damaged))


def test_a_seed_that_is_not_an_nkey_says_so() -> None:
    assert "not an nkey seed" in problem(format_creds(ALICE.jwt, "hunter2"))


def test_a_jwt_with_two_parts_is_not_a_jwt() -> None:
    head, claims, _ = ALICE.jwt.split(".")
    message = problem(format_creds(f"{head}.{claims}", ALICE.user_seed))
    assert "expected 3 base64url parts separated by '.', found 2" in message


def test_a_jwt_whose_header_is_not_json_says_so() -> None:
    _, claims, signature = ALICE.jwt.split(".")
    jwt = f"{b64(b'not json')}.{claims}.{signature}"
    assert "header is not base64url-encoded JSON" in problem(format_creds(jwt, ALICE.user_seed))


def test_a_jwt_with_another_algorithm_names_it() -> None:
    _, claims, signature = ALICE.jwt.split(".")
    jwt = f"{b64({'typ': 'JWT', 'alg': 'HS256'})}.{claims}.{signature}"
    assert "alg 'HS256'" in problem(format_creds(jwt, ALICE.user_seed))


def test_an_account_jwt_in_place_of_the_user_jwt_names_its_type() -> None:
    account = new_nkey(NkeyKind.ACCOUNT)
    operator = new_nkey(NkeyKind.OPERATOR)
    jwt = encode_jwt(account.public_key, "acc", {"type": "account"}, operator.seed)
    assert "of type 'account', not 'user'" in problem(format_creds(jwt, ALICE.user_seed))


def test_a_jwt_with_altered_claims_fails_its_signature() -> None:
    forged = with_claims(ALICE.jwt, name="admin")
    assert "signature does not verify" in problem(format_creds(forged, ALICE.user_seed))


def test_a_jwt_whose_subject_is_not_a_user_key_says_so() -> None:
    forged = with_claims(ALICE.jwt, sub=ALICE.account)
    assert "is not a public user nkey" in problem(format_creds(forged, ALICE.user_seed))


def test_a_jwt_block_without_its_jwt_line_is_empty() -> None:
    text = "-----BEGIN NATS USER JWT-----\n------END NATS USER JWT------\n"
    assert "block is empty" in problem(text + seed_block(ALICE.user_seed))


def test_a_block_cut_before_its_end_line_says_so() -> None:
    text = f"-----BEGIN NATS USER JWT-----\n{ALICE.jwt}\n"
    assert "has no END line" in problem(text + seed_block(ALICE.user_seed))


def test_an_unreadable_file_is_a_credentials_error(tmp_path: Path) -> None:
    with pytest.raises(CredentialsError, match="cannot read credentials file"):
        load_credentials_file(tmp_path / "missing.creds")


# --- properties ----------------------------------------------------------------------------------

FRAGMENTS = st.sampled_from(
    [
        "-----BEGIN NATS USER JWT-----",
        "------END NATS USER JWT------",
        "-----BEGIN USER NKEY SEED-----",
        "------END USER NKEY SEED------",
        ALICE.jwt,
        BOB.jwt,
        ALICE.user_seed,
        BOB.user_seed,
        ALICE.account_seed,
        ALICE.jwt[: len(ALICE.jwt) // 2],
        ALICE.user_seed[:-3],
        "",
        "*** IMPORTANT ***",
        "eyJ.eyJ.sig",
    ]
)
LINES = st.lists(st.one_of(FRAGMENTS, st.text(max_size=40)), max_size=12)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=400))
def test_any_text_is_either_credentials_or_a_credentials_error(text: str) -> None:
    with contextlib.suppress(CredentialsError):
        parse_credentials(text, now=NOW)


@settings(max_examples=300)
@given(st.binary(max_size=400))
def test_any_bytes_are_either_credentials_or_a_credentials_error(content: bytes) -> None:
    with contextlib.suppress(CredentialsError):
        parse_credentials(content, now=NOW)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(LINES, st.sampled_from(["\n", "\r\n"]))
def test_shuffled_pieces_of_creds_files_never_break_the_parser_or_leak_a_seed(
    lines: list[str], newline: str
) -> None:
    outcome: UserCredentials | CredentialsError
    try:
        outcome = parse_credentials(newline.join(lines), now=NOW)
    except CredentialsError as exc:
        outcome = exc
    if isinstance(outcome, CredentialsError):
        for seed in (ALICE.user_seed, BOB.user_seed, ALICE.account_seed):
            assert seed not in str(outcome)
    else:  # only a matching pair can pass
        pairs = {(ALICE.jwt, ALICE.user_seed), (BOB.jwt, BOB.user_seed)}
        assert (outcome.jwt, outcome.seed) in pairs


def test_deeply_nested_json_claims_are_a_credentials_error_not_a_crash() -> None:
    head, _, signature = ALICE.jwt.split(".")
    jwt = f"{head}.{b64(b'[' * 100_000)}.{signature}"
    assert "claims are not" in problem(format_creds(jwt, ALICE.user_seed))
