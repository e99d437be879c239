"""Template features the operator's settings gate: foreign ServiceAccounts, projected tokens."""

from __future__ import annotations

from typing import Any

import pytest

from jetpool_operator.api.v1alpha1 import WorkerPoolSpec
from jetpool_operator.core.children import PoolRef
from jetpool_operator.core.pod_template_policy import (
    ALLOW_FOREIGN_SERVICE_ACCOUNTS_ENV,
    ALLOW_PROJECTED_TOKENS_ENV,
    TemplateAllowances,
    allowances_from_env,
    template_refusal,
)

POOL = PoolRef(name="resize-images", namespace="media", uid="7c1e-uid")
STRICT = TemplateAllowances()
TOKEN_VOLUME = {
    "name": "api-token",
    "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]},
}


def spec(**overrides: Any) -> WorkerPoolSpec:
    body = {"image": "w:1", "handler": "app:run", "nats": {"url": "nats://n:4222"}, **overrides}
    return WorkerPoolSpec.model_validate(body)


def test_both_settings_are_off_by_default() -> None:
    assert allowances_from_env({}) == STRICT


@pytest.mark.parametrize(("value", "expected"), [("true", True), ("True", True), ("1", True)])
def test_a_setting_is_on_only_when_it_says_true(value: str, expected: bool) -> None:
    env = {ALLOW_FOREIGN_SERVICE_ACCOUNTS_ENV: value, ALLOW_PROJECTED_TOKENS_ENV: "false"}
    assert allowances_from_env(env) == TemplateAllowances(foreign_service_accounts=expected)


def test_a_setting_that_is_neither_true_nor_false_is_an_error() -> None:
    with pytest.raises(ValueError, match=ALLOW_PROJECTED_TOKENS_ENV):
        allowances_from_env({ALLOW_PROJECTED_TOKENS_ENV: "ture"})


def test_a_plain_template_is_never_refused() -> None:
    assert template_refusal(POOL, spec(), STRICT) is None


def test_a_foreign_service_account_is_refused_naming_the_field_and_the_setting() -> None:
    message = template_refusal(POOL, spec(template={"serviceAccountName": "admin"}), STRICT)
    assert message is not None
    assert "template.serviceAccountName 'admin'" in message
    assert f"{ALLOW_FOREIGN_SERVICE_ACCOUNTS_ENV}=true" in message


def test_a_foreign_service_account_is_accepted_when_the_operator_allows_it() -> None:
    allowed = TemplateAllowances(foreign_service_accounts=True)
    assert template_refusal(POOL, spec(template={"serviceAccountName": "admin"}), allowed) is None


def test_naming_the_pools_own_service_account_is_not_foreign() -> None:
    own = spec(template={"serviceAccountName": "resize-images-worker"})
    assert template_refusal(POOL, own, STRICT) is None


def test_a_projected_token_is_refused_naming_the_volume_and_the_setting() -> None:
    message = template_refusal(POOL, spec(template={"volumes": [TOKEN_VOLUME]}), STRICT)
    assert message is not None
    assert "template.volumes['api-token'] projects a serviceAccountToken" in message
    assert f"{ALLOW_PROJECTED_TOKENS_ENV}=true" in message


def test_a_projected_token_is_accepted_when_the_operator_allows_it() -> None:
    allowed = TemplateAllowances(projected_tokens=True)
    assert template_refusal(POOL, spec(template={"volumes": [TOKEN_VOLUME]}), allowed) is None


def test_a_projected_volume_of_secrets_only_needs_no_setting() -> None:
    volume = {"name": "s", "projected": {"sources": [{"secret": {"name": "x"}}]}}
    assert template_refusal(POOL, spec(template={"volumes": [volume]}), STRICT) is None
