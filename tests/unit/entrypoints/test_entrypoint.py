"""The operator's entry point works where containers run it: a numeric uid, no passwd entry."""

from __future__ import annotations

import getpass

import pytest

from jetpool_operator.core.pod_template_policy import TemplateAllowances
from jetpool_operator.core.tenancy import SubjectGrants
from jetpool_operator.main import parse_args, peer_identity


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


def test_the_template_allowances_are_off_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JETPOOL_ALLOW_FOREIGN_SERVICE_ACCOUNTS", raising=False)
    monkeypatch.delenv("JETPOOL_ALLOW_PROJECTED_TOKENS", raising=False)
    assert parse_args([]).allowances == TemplateAllowances()


def test_the_template_allowances_come_from_the_environment_or_the_flags(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("JETPOOL_ALLOW_FOREIGN_SERVICE_ACCOUNTS", "true")
    monkeypatch.delenv("JETPOOL_ALLOW_PROJECTED_TOKENS", raising=False)
    parsed = parse_args(["--allow-projected-tokens"])
    assert parsed.allowances == TemplateAllowances(
        foreign_service_accounts=True, projected_tokens=True
    )


def test_a_template_allowance_that_is_not_a_boolean_stops_the_operator(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("JETPOOL_ALLOW_PROJECTED_TOKENS", "maybe")
    with pytest.raises(SystemExit):
        parse_args([])


def test_extra_subject_spaces_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JETPOOL_EXTRA_SUBJECT_SPACES", '{"billing": ["invoices.billing."]}')
    grants = parse_args([]).extra_subject_spaces
    assert grants.extra("billing") == ("invoices.billing.",)
    monkeypatch.delenv("JETPOOL_EXTRA_SUBJECT_SPACES")
    assert parse_args([]).extra_subject_spaces == SubjectGrants()


def test_a_bad_extra_subject_spaces_value_stops_the_operator_with_its_reason(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("JETPOOL_EXTRA_SUBJECT_SPACES", '{"billing": ["tasks.shop."]}')
    with pytest.raises(SystemExit):
        parse_args([])
    assert "JETPOOL_EXTRA_SUBJECT_SPACES: prefix 'tasks.shop.'" in capsys.readouterr().err


def test_a_tracing_setting_the_image_cannot_honour_stops_the_operator_at_start(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    with pytest.raises(SystemExit):
        parse_args([])
    assert "OTLP protocol 'grpc' is not available" in capsys.readouterr().err
