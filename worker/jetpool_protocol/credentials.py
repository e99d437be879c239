"""NATS user credentials (``.creds`` files), checked before any connection is attempted.

nats-py reads a credentials file inside ``connect()``, and some bad files never come back
from there: a file without a ``NATS USER JWT`` block makes its reader loop at end of file
forever, blocking the event loop. Others fail late with a bare "invalid seed" or an
"Authorization Violation" that says nothing about the file. :func:`parse_credentials` turns
every such case into one :class:`CredentialsError` whose message says exactly what is wrong,
so the operator can show it in a pool condition and a worker can exit with one clear line.

A ``.creds`` file (what ``nsc generate creds`` writes) holds two decorated blocks::

    -----BEGIN NATS USER JWT-----
    eyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ.eyJ...   (header.claims.signature)
    ------END NATS USER JWT------

    -----BEGIN USER NKEY SEED-----
    SUAIO3FHUX5PNV2LQIIP7TZ3N4L7TX3W53MQGEIVYFIGA635OZCKEYHFLM
    ------END USER NKEY SEED------

The JWT says who the user is (``sub``, a public user nkey) and which account signed it
(``iss``); the seed proves it by signing the server's nonce, so its public key must be the
JWT's subject. Messages never contain the seed itself.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nkeys
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

JWT_LABEL = "NATS USER JWT"
SEED_LABEL = "USER NKEY SEED"
JWT_ALGORITHMS = ("ed25519-nkey", "ed25519")
"""v2 JWTs use ed25519-nkey; v1 (ed25519) is still accepted by nats-server."""

_BEGIN = re.compile(r"^[ \t]*-{3,}[ \t]*BEGIN (?P<label>[A-Z ]+?)[ \t]*-{3,}[ \t]*$", re.M)
_END = re.compile(r"^[ \t]*-{3,}[ \t]*END (?P<label>[A-Z ]+?)[ \t]*-{3,}[ \t]*$")
_BASE32 = re.compile(r"^[A-Z2-7]+$")
_SEED_KINDS = {"SU": "a user", "SA": "an account", "SO": "an operator", "SN": "a server"}
_PREFIX_USER = 20 << 3
_PREFIX_ACCOUNT = 0


class CredentialsError(ValueError):
    """The credentials cannot authenticate anyone; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class UserCredentials:
    """A checked credentials file: a user JWT and the seed that matches it."""

    jwt: str
    seed: str = field(repr=False)
    user: str
    """Public user nkey (U...), the JWT's subject."""
    account: str
    """Public account nkey (A...) the user belongs to."""
    name: str
    expires_at: datetime | None

    def render(self) -> str:
        """The canonical ``.creds`` text, which every NATS client reads."""
        return format_creds(self.jwt, self.seed)


def format_creds(jwt: str, seed: str) -> str:
    """A user JWT and its seed in nsc's ``.creds`` layout."""
    return (
        f"-----BEGIN {JWT_LABEL}-----\n{jwt}\n------END {JWT_LABEL}------\n\n"
        "************************* IMPORTANT *************************\n"
        "NKEY Seed printed below can be used to sign and prove identity.\n"
        "NKEYs are sensitive and should be treated as secrets.\n\n"
        f"-----BEGIN {SEED_LABEL}-----\n{seed}\n------END {SEED_LABEL}------\n\n"
        "*************************************************************\n"
    )


def load_credentials_file(path: str | Path, *, now: datetime | None = None) -> UserCredentials:
    """Read and check a ``.creds`` file; a missing or unreadable file is a CredentialsError."""
    try:
        content = Path(path).read_bytes()
    except OSError as exc:
        raise CredentialsError(f"cannot read credentials file {path}: {exc.strerror}") from exc
    return parse_credentials(content, now=now)


def parse_credentials(content: str | bytes, *, now: datetime | None = None) -> UserCredentials:
    """Check a ``.creds`` file's content; raises :class:`CredentialsError` saying why not."""
    text = _text(content)
    if not text.strip():
        raise CredentialsError("the credentials file is empty")
    blocks = _blocks(text)
    jwt, seed = blocks.get(JWT_LABEL), blocks.get(SEED_LABEL)
    if jwt is None and seed is None:
        raise CredentialsError(
            f"no '-----BEGIN {JWT_LABEL}-----' or '-----BEGIN {SEED_LABEL}-----' block: "
            "not a NATS credentials (.creds) file"
        )
    if jwt is None:
        raise CredentialsError(
            f"a user nkey seed but no '-----BEGIN {JWT_LABEL}-----' block: a .creds file "
            "needs the user JWT as well as the seed (nsc generate creds writes both)"
        )
    if seed is None:
        raise CredentialsError(
            f"a user JWT but no '-----BEGIN {SEED_LABEL}-----' block: the seed that proves "
            "the user's identity is missing"
        )
    claims = _decode_jwt(jwt)
    user = _string_claim(claims, "sub")
    if not _is_public_key(user, _PREFIX_USER):
        raise CredentialsError(f"the JWT subject {user!r} is not a public user nkey (U...)")
    issuer = _string_claim(claims, "iss")
    if not _is_public_key(issuer, _PREFIX_ACCOUNT):
        raise CredentialsError(f"the JWT issuer {issuer!r} is not a public account nkey (A...)")
    _verify_signature(jwt, issuer)
    seed_user = _seed_public_key(seed)
    if seed_user != user:
        raise CredentialsError(
            f"the seed belongs to user {seed_user} but the JWT is for user {user}: "
            "JWT and seed come from different credentials"
        )
    expires_at = _time_claim(claims, "exp")
    not_before = _time_claim(claims, "nbf")
    now = now or datetime.now(UTC)
    if expires_at is not None and expires_at <= now:
        raise CredentialsError(f"the user JWT expired at {_iso(expires_at)}")
    if not_before is not None and not_before > now:
        raise CredentialsError(f"the user JWT is not valid before {_iso(not_before)}")
    nats = claims.get("nats")
    account = str((nats.get("issuer_account") if isinstance(nats, dict) else None) or issuer)
    return UserCredentials(
        jwt=jwt,
        seed=seed,
        user=user,
        account=account,
        name=str(claims.get("name") or user),
        expires_at=expires_at,
    )


# --- pieces -----------------------------------------------------------------------------------


def _text(content: str | bytes) -> str:
    if isinstance(content, str):
        return content
    try:
        return content.decode()
    except UnicodeDecodeError as exc:
        raise CredentialsError("the credentials file is not text (not UTF-8)") from exc


def _blocks(text: str) -> dict[str, str]:
    """Label -> body of each decorated block (the first of each label, as NATS clients do)."""
    lines = text.splitlines()
    found: dict[str, str] = {}
    for i, line in enumerate(lines):
        begin = _BEGIN.match(line)
        if begin is None or begin["label"] in found:
            continue
        label = begin["label"]
        if label not in (JWT_LABEL, SEED_LABEL):
            continue
        what = "JWT" if label == JWT_LABEL else "seed"
        body = lines[i + 1].strip() if i + 1 < len(lines) else ""
        if not body or _BEGIN.match(body) or _END.match(body):
            raise CredentialsError(f"the '{label}' block is empty: the {what} line is missing")
        end = lines[i + 2] if i + 2 < len(lines) else ""
        closing = _END.match(end)
        if closing is None or closing["label"] != label:
            raise CredentialsError(
                f"the '{label}' block has no END line right after its {what}: "
                "the block must be exactly three lines"
            )
        found[label] = body
    return found


def _b64url(part: str) -> bytes:
    if not re.fullmatch(r"[A-Za-z0-9_-]*", part):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _json_object(part: str, what: str) -> dict[str, Any]:
    """One base64url JSON object of a JWT (``what``: header or claims), or why it is not."""
    verb = "are" if what == "claims" else "is"
    try:
        value = json.loads(_b64url(part))
    except (ValueError, RecursionError) as exc:
        raise CredentialsError(f"the user JWT {what} {verb} not base64url-encoded JSON") from exc
    if not isinstance(value, dict):
        raise CredentialsError(f"the user JWT {what} {verb} not a JSON object")
    return value


def _decode_jwt(jwt: str) -> dict[str, Any]:
    parts = jwt.split(".")
    if len(parts) != 3 or not all(parts):
        raise CredentialsError(
            f"the user JWT is not a JWT: expected 3 base64url parts separated by '.', "
            f"found {len([p for p in parts if p])}"
        )
    header = _json_object(parts[0], "header")
    alg = str(header.get("alg", "")).lower()
    if alg not in JWT_ALGORITHMS:
        raise CredentialsError(
            f"the user JWT is signed with alg {header.get('alg')!r}; NATS JWTs use ed25519-nkey"
        )
    claims = _json_object(parts[1], "claims")
    nats = claims.get("nats")
    # v2 keeps the type under "nats"; v1 had it at the top level.
    kind = nats.get("type") if isinstance(nats, dict) and "type" in nats else claims.get("type")
    if kind != "user":
        raise CredentialsError(
            f"the JWT is of type {kind!r}, not 'user': a .creds file needs a user JWT"
        )
    return claims


def _string_claim(claims: dict[str, Any], name: str) -> str:
    value = claims.get(name)
    if not isinstance(value, str) or not value:
        raise CredentialsError(f"the user JWT has no {name!r} claim")
    return value


def _time_claim(claims: dict[str, Any], name: str) -> datetime | None:
    value = claims.get(name)
    if value in (None, 0):
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CredentialsError(f"the user JWT's {name!r} claim is not a Unix time: {value!r}")
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise CredentialsError(f"the user JWT's {name!r} claim is out of range") from exc


def _iso(when: datetime) -> str:
    return when.replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _nkey_bytes(encoded: str) -> bytes | None:
    """Base32-decoded nkey with its CRC16 checked, or None."""
    if not _BASE32.match(encoded):
        return None
    try:
        raw = base64.b32decode(encoded + "=" * (-len(encoded) % 8))
    except (binascii.Error, ValueError):
        return None
    if len(raw) < 3:
        return None
    body, checksum = raw[:-2], raw[-2:]
    if nkeys.crc16(body) != int.from_bytes(checksum, "little"):
        return None
    return body


def _is_public_key(key: str, prefix: int) -> bool:
    body = _nkey_bytes(key)
    return body is not None and len(body) == 33 and body[0] == prefix


def _verify_signature(jwt: str, issuer: str) -> None:
    body = _nkey_bytes(issuer)
    assert body is not None  # checked by the caller
    head, claims, signature = jwt.split(".")
    try:
        Ed25519PublicKey.from_public_bytes(body[1:]).verify(
            _b64url(signature), f"{head}.{claims}".encode()
        )
    except (InvalidSignature, ValueError) as exc:
        raise CredentialsError(
            f"the user JWT's signature does not verify against its issuer {issuer}: "
            "the JWT was altered or truncated"
        ) from exc


def _seed_public_key(seed: str) -> str:
    kind = _SEED_KINDS.get(seed[:2])
    if kind is None:
        raise CredentialsError(
            "the nkey seed does not start with 'S' and a key type: it is not an nkey seed"
        )
    if seed[:2] != "SU":
        raise CredentialsError(
            f"the nkey seed is {kind} seed ({seed[:2]}...), not a user seed (SU...)"
        )
    body = _nkey_bytes(seed)
    if body is None:
        raise CredentialsError(
            "the user nkey seed is damaged: it is not base32 or fails its checksum"
        )
    try:
        pair = nkeys.from_seed(bytearray(seed.encode()))
        return str(pair.public_key.decode())
    except (nkeys.NkeysError, ValueError, TypeError) as exc:
        raise CredentialsError(f"nkeys cannot load the user seed: {exc}") from exc
