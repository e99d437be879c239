"""Signed and encrypted tasks.

* Signature: HMAC-SHA256 over the payload and the headers in :data:`SIGNED_HEADERS`, hex in
  ``Jetpool-Signature``. Workers with ``require_signed`` dead-letter unsigned or forged tasks as
  ``invalid``; the shared key comes from a Kubernetes Secret.
* Encryption: AES-256-GCM of the payload (12-byte random nonce prepended), marked by
  ``Jetpool-Encryption: aes256gcm``. The task id is bound as associated data, so a ciphertext
  cannot be replayed under another id.

Keys are 32 random bytes, stored base64-encoded (``openssl rand -base64 32``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Mapping
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from jetpool_protocol import headers as h
from jetpool_protocol.envelope import InvalidTask

ENCRYPTION_SCHEME = "aes256gcm"
KEY_BYTES = 32


def load_key(path: str | Path) -> bytes:
    """Read a base64 key file (as mounted from a Secret) and check its length."""
    key = base64.b64decode(Path(path).read_text().strip())
    if len(key) != KEY_BYTES:
        raise ValueError(f"key in {path} is {len(key)} bytes, expected {KEY_BYTES}")
    return key


SIGNED_HEADERS = (
    h.TASK_ID,
    h.TASK_CREATED,
    h.TASK_TTL,
    h.TASK_DEADLINE,
    h.CONTENT_TYPE,
    h.TASK_SCHEMA,
    h.ENCRYPTION,
)
"""Headers the signature covers: identity, expiry and how to read the payload. Stripping a
TTL to revive an expired task, or relabelling the payload, breaks the signature."""


def _signed_bytes(payload: bytes, headers: Mapping[str, str]) -> bytes:
    # Length-prefixed fields: no value can be shifted into its neighbour.
    parts = [headers.get(name, "").encode() for name in SIGNED_HEADERS] + [payload]
    return b"jetpool-sig-v2" + b"".join(len(p).to_bytes(8, "big") + p for p in parts)


def signature(key: bytes, payload: bytes, headers: Mapping[str, str]) -> str:
    return hmac.new(key, _signed_bytes(payload, headers), hashlib.sha256).hexdigest()


def seal(
    payload: bytes,
    headers: Mapping[str, str],
    *,
    signing_key: bytes | None = None,
    encryption_key: bytes | None = None,
) -> tuple[bytes, dict[str, str]]:
    """Encrypt then sign a task's payload; returns the payload and headers to publish."""
    out = dict(headers)
    if encryption_key is not None:
        nonce = os.urandom(12)
        aad = out.get(h.TASK_ID, "").encode()
        payload = nonce + AESGCM(encryption_key).encrypt(nonce, payload, aad)
        out[h.ENCRYPTION] = ENCRYPTION_SCHEME
    if signing_key is not None:
        out[h.SIGNATURE] = signature(signing_key, payload, out)
    return payload, out


def unseal(
    payload: bytes,
    headers: Mapping[str, str],
    *,
    signing_key: bytes | None = None,
    encryption_key: bytes | None = None,
    require_signed: bool = False,
) -> bytes:
    """Verify and decrypt a received payload; raises :class:`InvalidTask` on any mismatch."""
    given = headers.get(h.SIGNATURE)
    if given is None:
        if require_signed:
            raise InvalidTask("task is not signed and this pool requires signed tasks")
    elif signing_key is None:
        if require_signed:
            raise InvalidTask("pool requires signed tasks but has no signing key")
    elif not hmac.compare_digest(
        # As bytes: a str with non-ASCII characters makes compare_digest raise TypeError.
        given.encode("utf-8", "replace"),
        signature(signing_key, payload, headers).encode(),
    ):
        raise InvalidTask("task signature does not match")
    scheme = headers.get(h.ENCRYPTION)
    if scheme is None:
        return payload
    if scheme != ENCRYPTION_SCHEME:
        raise InvalidTask(f"unknown encryption scheme {scheme!r}")
    if encryption_key is None:
        raise InvalidTask("task is encrypted but this pool has no encryption key")
    if len(payload) < 13:
        raise InvalidTask("encrypted payload is too short")
    try:
        return AESGCM(encryption_key).decrypt(
            payload[:12], payload[12:], headers.get(h.TASK_ID, "").encode()
        )
    except InvalidTag as exc:
        raise InvalidTask("task payload failed to decrypt (wrong key or tampered)") from exc
