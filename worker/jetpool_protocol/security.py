"""Signed and encrypted tasks.

* Signature: HMAC-SHA256, hex in ``Jetpool-Signature``, over the subject the task is published
  to, the payload and the headers in :data:`SIGNED_HEADERS` (id, times, how to read the payload,
  and the key ids). The key that signed it is named by ``Jetpool-Key-Id``. Workers with
  ``require_signed`` dead-letter unsigned or forged tasks as ``invalid``.
* Encryption: AES-256-GCM of the payload (12-byte random nonce prepended), marked by
  ``Jetpool-Encryption: aes256gcm`` and ``Jetpool-Encryption-Key-Id``. Task id and key id are
  associated data, so a ciphertext cannot be replayed under another id or key label.

Keys come from keyrings (:mod:`jetpool_protocol.keyring`): the current key seals, every key of
the ring opens, so keys rotate without dead-lettering tasks already in flight.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from jetpool_protocol import headers as h
from jetpool_protocol.envelope import InvalidTask
from jetpool_protocol.keyring import Key, Keyring

ENCRYPTION_SCHEME = "aes256gcm"
SIGNATURE_VERSION = b"jetpool-sig-v3"
"""Tag in front of the signed bytes; v3 added the subject, the key ids and header presence."""
AAD_VERSION = b"jetpool-aad-v2"

SIGNED_HEADERS = (
    h.TASK_ID,
    h.TASK_CREATED,
    h.TASK_TTL,
    h.TASK_DEADLINE,
    h.CONTENT_TYPE,
    h.TASK_SCHEMA,
    h.ENCRYPTION,
    h.ENCRYPTION_KEY_ID,
    h.KEY_ID,
)
"""Headers the signature covers (with the subject and payload): identity, expiry, how to read
the payload and which keys were used. Stripping a TTL to revive an expired task, relabelling
the payload or re-publishing the task on another subject (another pool) breaks the signature."""

_SHOWN_ID_CHARS = 64


def _field(value: str | bytes | None) -> bytes:
    # Presence byte + length prefix: an absent header differs from an empty one, and no value
    # can be shifted into its neighbour.
    if value is None:
        return b"\x00"
    data = value.encode("utf-8", "surrogatepass") if isinstance(value, str) else value
    return b"\x01" + len(data).to_bytes(8, "big") + data


def signed_bytes(subject: str, payload: bytes, headers: Mapping[str, str]) -> bytes:
    """Exactly what the HMAC covers."""
    parts = [subject, *(headers.get(name) for name in SIGNED_HEADERS), payload]
    return SIGNATURE_VERSION + b"".join(_field(p) for p in parts)


def signature(key: bytes, subject: str, payload: bytes, headers: Mapping[str, str]) -> str:
    return hmac.new(key, signed_bytes(subject, payload, headers), hashlib.sha256).hexdigest()


def _associated_data(task_id: str | None, key_id: str | None) -> bytes:
    return AAD_VERSION + _field(task_id) + _field(key_id)


def show_key_id(key_id: str) -> str:
    """A key id from the wire, quoted and cut short for logs and dead-letter reasons."""
    return repr(key_id[:_SHOWN_ID_CHARS] + ("..." if len(key_id) > _SHOWN_ID_CHARS else ""))


def sign(
    payload: bytes, headers: Mapping[str, str], *, subject: str, keys: Keyring
) -> dict[str, str]:
    """``headers`` plus the current key's id and the signature over them."""
    out = dict(headers)
    out[h.KEY_ID] = keys.current.id
    out[h.SIGNATURE] = signature(keys.current.secret, subject, payload, out)
    return out


def seal(
    payload: bytes,
    headers: Mapping[str, str],
    *,
    subject: str,
    signing_keys: Keyring | None = None,
    encryption_keys: Keyring | None = None,
) -> tuple[bytes, dict[str, str]]:
    """Encrypt then sign a task's payload for ``subject``; returns the payload and headers."""
    out = dict(headers)
    if encryption_keys is not None:
        key = encryption_keys.current
        nonce = os.urandom(12)
        out[h.ENCRYPTION] = ENCRYPTION_SCHEME
        out[h.ENCRYPTION_KEY_ID] = key.id
        aad = _associated_data(out.get(h.TASK_ID), key.id)
        payload = nonce + AESGCM(key.secret).encrypt(nonce, payload, aad)
    if signing_keys is not None:
        out = sign(payload, out, subject=subject, keys=signing_keys)
    return payload, out


def _key(keys: Keyring, key_id: str | None, header: str, what: str) -> Key:
    if key_id is None:
        raise InvalidTask(f"{what} task has no {header} header")
    key = keys.get(key_id)
    if key is None:
        raise InvalidTask(
            f"task {what} with unknown key id {show_key_id(key_id)} (this pool accepts "
            f"{', '.join(keys.ids)})"
        )
    return key


def verify(payload: bytes, headers: Mapping[str, str], *, subject: str, keys: Keyring) -> None:
    """Check a signed task's signature; :class:`InvalidTask` says what is wrong."""
    given = headers.get(h.SIGNATURE)
    if given is None:
        raise InvalidTask("task is not signed")
    key = _key(keys, headers.get(h.KEY_ID), h.KEY_ID, "signed")
    if not hmac.compare_digest(
        # As bytes: a str with non-ASCII characters makes compare_digest raise TypeError.
        given.encode("utf-8", "replace"),
        signature(key.secret, subject, payload, headers).encode(),
    ):
        raise InvalidTask("task signature does not match")


def unseal(
    payload: bytes,
    headers: Mapping[str, str],
    *,
    subject: str,
    signing_keys: Keyring | None = None,
    encryption_keys: Keyring | None = None,
    require_signed: bool = False,
) -> bytes:
    """Verify and decrypt a payload received on ``subject``; :class:`InvalidTask` on mismatch."""
    if h.SIGNATURE not in headers:
        if require_signed:
            raise InvalidTask("task is not signed and this pool requires signed tasks")
    elif signing_keys is None:
        if require_signed:
            raise InvalidTask("pool requires signed tasks but has no signing key")
    else:
        verify(payload, headers, subject=subject, keys=signing_keys)
    scheme = headers.get(h.ENCRYPTION)
    if scheme is None:
        return payload
    if scheme != ENCRYPTION_SCHEME:
        raise InvalidTask(f"unknown encryption scheme {scheme!r}")
    if encryption_keys is None:
        raise InvalidTask("task is encrypted but this pool has no encryption key")
    key_id = headers.get(h.ENCRYPTION_KEY_ID)
    key = _key(encryption_keys, key_id, h.ENCRYPTION_KEY_ID, "encrypted")
    if len(payload) < 13:
        raise InvalidTask("encrypted payload is too short")
    try:
        return AESGCM(key.secret).decrypt(
            payload[:12], payload[12:], _associated_data(headers.get(h.TASK_ID), key_id)
        )
    except InvalidTag as exc:
        raise InvalidTask("task payload failed to decrypt (wrong key or tampered)") from exc
