"""The operator's entry point works where containers run it: a numeric uid, no passwd entry."""

from __future__ import annotations

import getpass

import pytest

from jetpool_operator.main import peer_identity


def test_the_peer_identity_needs_no_passwd_entry_for_the_uid(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_passwd_entry() -> str:
        raise KeyError("getpwuid(): uid not found: 65532")

    monkeypatch.setattr(getpass, "getuser", no_passwd_entry)
    identity = peer_identity()
    assert identity.startswith("jetpool-operator@")


def test_two_replicas_on_one_host_get_different_identities() -> None:
    assert len({peer_identity() for _ in range(20)}) > 1
