"""Keyrings: the keys a pool signs/encrypts with and the ones it still accepts.

A key file (a Secret key mounted into workers, or ``--sign-key-file`` of the CLI) holds either
one bare base64 key (the pre-keyring format, still valid) or one key per line::

    # comments and blank lines are ignored
    2026-11:q3Jv...base64 of 32 bytes...=     <- current: signs / encrypts new tasks
    2026-10:Zx8k...base64 of 32 bytes...=     <- previous: still verifies / decrypts

The first key is the current one; every key verifies and decrypts, so tasks published with the
previous key before a rotation still run after it. A bare line gets the id ``derive_key_id``
(first 8 hex digits of its SHA-256), so a single-key file needs no change. Error messages name
line numbers and key ids, never key material.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

KEY_BYTES = 32
KEY_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
"""Ids are header-safe tokens: no separator a log line or the ``id:key`` syntax could split."""


class KeyringError(ValueError):
    """A key file that cannot be used; the message never contains key material."""


def derive_key_id(secret: bytes) -> str:
    """Id of a key given without one: stable, and reveals nothing usable about the key."""
    return hashlib.sha256(secret).hexdigest()[:8]


@dataclass(frozen=True, slots=True)
class Key:
    id: str
    secret: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class Keyring:
    """Keys in order of preference; ``keys[0]`` signs and encrypts, all of them verify."""

    keys: tuple[Key, ...]

    def __post_init__(self) -> None:
        if not self.keys:
            raise KeyringError("a keyring needs at least one key")
        ids = [k.id for k in self.keys]
        if len(set(ids)) != len(ids):
            raise KeyringError(f"duplicate key ids in {ids}")

    @classmethod
    def single(cls, secret: bytes) -> Keyring:
        """One key under its derived id (what a bare key file gives)."""
        return cls((Key(derive_key_id(secret), _checked(secret, "key")),))

    @property
    def current(self) -> Key:
        return self.keys[0]

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(k.id for k in self.keys)

    def get(self, key_id: str) -> Key | None:
        return next((k for k in self.keys if k.id == key_id), None)


def _checked(secret: bytes, where: str) -> bytes:
    if len(secret) != KEY_BYTES:
        raise KeyringError(f"{where}: key is {len(secret)} bytes, expected {KEY_BYTES}")
    return secret


def _decode(text: str, where: str) -> bytes:
    if not text.isascii():
        raise KeyringError(f"{where}: not base64 (non-ASCII characters)")
    try:
        return _checked(base64.b64decode(text, validate=True), where)
    except binascii.Error as exc:
        raise KeyringError(f"{where}: not base64 ({exc})") from exc


def parse_keyring(text: str, *, source: str = "key file") -> Keyring:
    """Parse a key file's text; raises :class:`KeyringError` naming the line at fault."""
    keys: list[Key] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{source} line {number}"
        key_id, sep, encoded = line.partition(":")
        if not sep:
            secret = _decode(line, where)
            key_id = derive_key_id(secret)
        else:
            key_id, encoded = key_id.strip(), encoded.strip()
            if not KEY_ID_PATTERN.fullmatch(key_id):
                raise KeyringError(
                    f"{where}: key id must be 1-64 of [A-Za-z0-9._-], starting with a letter "
                    "or digit"
                )
            secret = _decode(encoded, where)
        if any(k.id == key_id for k in keys):
            raise KeyringError(f"{where}: key id {key_id!r} appears twice")
        keys.append(Key(key_id, secret))
    if not keys:
        raise KeyringError(f"{source}: no key (expected base64 or KEY_ID:BASE64 lines)")
    return Keyring(tuple(keys))


def load_keyring(path: str | Path) -> Keyring:
    """Read a key file as mounted from a Secret (``OSError`` when it cannot be read)."""
    return parse_keyring(Path(path).read_text(), source=str(path))
