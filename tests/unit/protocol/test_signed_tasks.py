"""A signature covers what decides whether and how a task runs, not only its payload."""

from __future__ import annotations

import os
from datetime import UTC, datetime

import pytest

from jetpool_protocol import headers as h
from jetpool_protocol.envelope import InvalidTask, task_headers
from jetpool_protocol.security import seal, unseal

KEY = os.urandom(32)


def signed(ttl: float | None = 60) -> tuple[bytes, dict[str, str]]:
    headers = task_headers(task_id="t-1", created_at=datetime.now(UTC), ttl_seconds=ttl)
    return seal(b'{"n": 1}', headers, signing_key=KEY)


def test_an_untouched_signed_task_verifies() -> None:
    payload, headers = signed()
    assert unseal(payload, headers, signing_key=KEY, require_signed=True) == b'{"n": 1}'


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
    ],
)
def test_tampering_with_a_signed_header_breaks_the_signature(tamper: object) -> None:
    payload, headers = signed()
    tamper(headers)  # type: ignore[operator]
    with pytest.raises(InvalidTask, match="signature"):
        unseal(payload, headers, signing_key=KEY, require_signed=True)


def test_tampering_with_the_payload_breaks_the_signature() -> None:
    payload, headers = signed()
    with pytest.raises(InvalidTask, match="signature"):
        unseal(payload + b" ", headers, signing_key=KEY, require_signed=True)
