"""What a pool's template may ask for that the apiserver cannot judge: it depends on how the
operator is configured, not on the pool.

A projected ``serviceAccountToken`` and a ServiceAccount other than the pool's own both hand
the workers an API identity the pool's tenant chose; the cluster admin opts in per operator.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from jetpool_operator.api.v1alpha1 import WorkerPoolSpec
from jetpool_operator.core.children import PoolRef, deployment_name

ALLOW_FOREIGN_SERVICE_ACCOUNTS_ENV = "JETPOOL_ALLOW_FOREIGN_SERVICE_ACCOUNTS"
ALLOW_PROJECTED_TOKENS_ENV = "JETPOOL_ALLOW_PROJECTED_TOKENS"
_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no", ""}


@dataclass(frozen=True, slots=True)
class TemplateAllowances:
    """Operator settings; both off by default (the safe choice for a shared cluster)."""

    foreign_service_accounts: bool = False
    projected_tokens: bool = False


def _flag(env: Mapping[str, str], name: str) -> bool:
    value = env.get(name, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{name} must be true or false, got {env[name]!r}")


def allowances_from_env(env: Mapping[str, str]) -> TemplateAllowances:
    """Parse the settings; a value that is neither true nor false is an error, never a guess."""
    return TemplateAllowances(
        foreign_service_accounts=_flag(env, ALLOW_FOREIGN_SERVICE_ACCOUNTS_ENV),
        projected_tokens=_flag(env, ALLOW_PROJECTED_TOKENS_ENV),
    )


def template_refusal(
    pool: PoolRef, spec: WorkerPoolSpec, allowances: TemplateAllowances
) -> str | None:
    """Why the operator will not run this template (naming the field and the setting), or None."""
    account = spec.template.service_account_name
    if (
        account is not None
        and account != deployment_name(pool)
        and not allowances.foreign_service_accounts
    ):
        return (
            f"template.serviceAccountName {account!r} is not the pool's own ServiceAccount "
            f"({deployment_name(pool)}); the operator allows that only with "
            f"{ALLOW_FOREIGN_SERVICE_ACCOUNTS_ENV}=true"
        )
    if not allowances.projected_tokens:
        for volume in spec.template.volumes:
            sources = (volume.get("projected") or {}).get("sources") or []
            if any("serviceAccountToken" in s for s in sources):
                return (
                    f"template.volumes[{volume.get('name')!r}] projects a serviceAccountToken; "
                    f"the operator allows that only with {ALLOW_PROJECTED_TOKENS_ENV}=true"
                )
    return None
