"""The chart's ValidatingAdmissionPolicies, judged by the real apiserver at apply time: a pool's
subjects stay in its namespace (the CRD's own rules cannot see the namespace), and its template
names no ServiceAccount but its own and projects no token unless the chart's tenancy values
allow it (the CRD cannot know them)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from e2e.testbed.cluster import Cluster, KubectlError, eventually
from jetpool_operator.core.children import child_name
from tests.packaging.conftest import CRDS, Render, kinds

pytestmark = pytest.mark.kube


def pool(
    namespace: str,
    subjects: list[str] | None = None,
    *,
    name: str = "p",
    template: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A WorkerPool; without ``subjects``, the default ones (the namespace's own)."""
    spec: dict[str, Any] = {
        "image": "jetpool-worker:e2e",
        "handler": "x:y",
        "nats": {"url": "nats://nats:4222"},
    }
    if subjects is not None:
        spec["nats"]["subjects"] = subjects
    if template is not None:
        spec["template"] = template
    return {
        "apiVersion": "jetpool.dev/v1alpha1",
        "kind": "WorkerPool",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def dry_run(cluster: Cluster, manifest: dict[str, Any]) -> str:
    return cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=json.dumps(manifest))


def _policed(
    cluster: Cluster, render: Render, grant: str | None = None, *values: str
) -> Iterator[tuple[str, str]]:
    """Two fresh namespaces under the chart's policies, bound to them alone by a label; with
    ``grant``, the first namespace is granted that extra subject prefix; ``values`` are more
    helm arguments (``--set tenancy.allowProjectedTokens=true``)."""
    cluster.kubectl("apply", "--server-side", "-k", str(CRDS))
    label = uuid.uuid4().hex[:8]
    names = [f"vap-a-{label}", f"vap-b-{label}"]
    extra = (
        ()
        if grant is None
        else ("--set-json", f"tenancy.extraSubjectSpaces={json.dumps({names[0]: [grant]})}")
    )
    objects = [
        o
        for o in render(
            "--set-string",  # a hex label such as 1234e567 would otherwise be a number
            f"admissionPolicy.namespaceSelector.matchLabels.jetpool\\.dev/policy-test={label}",
            *extra,
            *values,
        )
        if o["kind"].startswith("ValidatingAdmissionPolicy")
    ]
    for name in names:
        cluster.kubectl("create", "namespace", name)
        cluster.kubectl("label", "namespace", name, f"jetpool.dev/policy-test={label}")
    for obj in objects:
        cluster.apply(obj)
    yield names[0], names[1]
    for obj in objects:
        cluster.kubectl("delete", obj["kind"], obj["metadata"]["name"], check=False)
    cluster.kubectl("delete", "namespace", *names, "--wait=false", check=False)


@pytest.fixture
def policed_namespaces(cluster: Cluster, render: Render) -> Iterator[tuple[str, str]]:
    yield from _policed(cluster, render)


GRANT = "invoices.billing."


@pytest.fixture
def granted_namespaces(cluster: Cluster, render: Render) -> Iterator[tuple[str, str]]:
    """Like policed_namespaces; the first one is granted GRANT by tenancy.extraSubjectSpaces."""
    yield from _policed(cluster, render, GRANT)


def test_the_chart_ships_the_policy_and_its_binding_unless_disabled(render: Render) -> None:
    wanted = {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}
    assert wanted <= kinds(render())
    assert not wanted & kinds(render("--set", "admissionPolicy.enabled=false"))


def test_a_pool_listing_another_namespace_s_subjects_is_refused_at_apply_time(
    cluster: Cluster, policed_namespaces: tuple[str, str]
) -> None:
    mine, other = policed_namespaces

    def refused() -> str | None:
        try:
            dry_run(cluster, pool(mine, [f"tasks.{other}.orders.>"]))
        except KubectlError as exc:
            return str(exc)
        return None  # the policy is not active yet

    message = eventually(refused, timeout=30, what="the policy refusing a foreign subject")
    assert f"must stay inside namespace {mine}'s subject space tasks.{mine}.>" in message
    assert f"tasks.{other}.orders.>" in message


def test_a_pool_inside_its_own_subject_space_is_admitted(
    cluster: Cluster, policed_namespaces: tuple[str, str]
) -> None:
    mine, other = policed_namespaces
    eventually(
        lambda: _refuses(cluster, pool(mine, [f"tasks.{other}.x"])), timeout=30, what="policy on"
    )
    assert "server dry run" in dry_run(cluster, pool(mine, [f"tasks.{mine}.orders.>"]))
    assert "server dry run" in dry_run(cluster, pool(mine))  # the default subjects are its own


def _refuses(cluster: Cluster, manifest: dict[str, Any]) -> bool:
    try:
        dry_run(cluster, manifest)
    except KubectlError:
        return True
    return False


def test_the_policy_carries_the_extra_subject_spaces_as_a_cel_map(render: Render) -> None:
    [policy] = [
        o
        for o in render("--set-json", 'tenancy.extraSubjectSpaces={"b": ["x.b."]}')
        if o["kind"] == "ValidatingAdmissionPolicy" and o["metadata"]["name"].endswith("-subjects")
    ]
    [extra] = [v for v in policy["spec"]["variables"] if v["name"] == "extra"]
    assert json.loads(extra["expression"]) == {"b": ["x.b."]}


def test_a_granted_prefix_is_admitted_in_its_namespace_and_refused_in_another(
    cluster: Cluster, granted_namespaces: tuple[str, str]
) -> None:
    mine, other = granted_namespaces
    eventually(lambda: _refuses(cluster, pool(other, [f"{GRANT}>"])), timeout=30, what="policy on")
    assert "server dry run" in dry_run(cluster, pool(mine, [f"{GRANT}>", f"tasks.{mine}.x"]))
    with pytest.raises(KubectlError) as refused:
        dry_run(cluster, pool(other, [f"{GRANT}paid.>"]))
    assert f"inside namespace {other}'s subject space tasks.{other}.> (refused: " in str(
        refused.value
    )
    with pytest.raises(KubectlError) as wider:
        dry_run(cluster, pool(mine, ["invoices.shop.>"]))
    assert f"subject space tasks.{mine}.> or {GRANT}> (refused: invoices.shop.>)" in str(
        wider.value
    )


def test_the_crd_still_refuses_what_no_grant_can_allow(
    cluster: Cluster, granted_namespaces: tuple[str, str]
) -> None:
    mine, _ = granted_namespaces
    for subject in (">", "invoices.>", "$JS.API.>", "_INBOX.x.>", "*.billing.x"):
        with pytest.raises(KubectlError, match=r"must each start with tasks\.<namespace>\."):
            dry_run(cluster, pool(mine, [subject]))


@pytest.fixture
def blue_shard_namespaces(cluster: Cluster, render: Render) -> Iterator[tuple[str, str]]:
    """Like policed_namespaces, with the policies of a release whose shard is the pools
    labelled jetpool.dev/shard=blue."""
    yield from _policed(
        cluster, render, None, "--set-string", "shard.selector.matchLabels.jetpool\\.dev/shard=blue"
    )


def labelled(manifest: dict[str, Any], shard: str) -> dict[str, Any]:
    manifest["metadata"]["labels"] = {"jetpool.dev/shard": shard}
    return manifest


def test_a_shard_s_policies_judge_only_the_pools_of_its_shard(
    cluster: Cluster, blue_shard_namespaces: tuple[str, str]
) -> None:
    """Another release (another shard, with tenancy values of its own) judges the rest."""
    mine, other = blue_shard_namespaces
    foreign = [f"tasks.{other}.orders.>"]
    eventually(
        lambda: _refuses(cluster, labelled(pool(mine, foreign), "blue")),
        timeout=30,
        what="the blue shard's policy on",
    )
    assert "server dry run" in dry_run(cluster, labelled(pool(mine, foreign), "green"))
    assert "server dry run" in dry_run(cluster, pool(mine, foreign))


# --- the pod template: ServiceAccounts and projected tokens ------------------------------------

TOKEN_VOLUME = {
    "name": "api-token",
    "projected": {"sources": [{"serviceAccountToken": {"path": "t"}}]},
}
FOREIGN = {"serviceAccountName": "default"}
TOKEN = {"volumes": [TOKEN_VOLUME]}
FOREIGN_RULE = "tenancy.allowForeignServiceAccounts=true"
TOKEN_RULE = "tenancy.allowProjectedTokens=true"


def _template_policy(objects: list[dict[str, Any]]) -> dict[str, Any] | None:
    found = [
        o
        for o in objects
        if o["kind"] == "ValidatingAdmissionPolicy" and o["metadata"]["name"].endswith("-template")
    ]
    return found[0] if found else None


@pytest.mark.parametrize(
    ("values", "rules"),
    [
        ((), {FOREIGN_RULE, TOKEN_RULE}),
        (("--set", "tenancy.allowForeignServiceAccounts=true"), {TOKEN_RULE}),
        (("--set", "tenancy.allowProjectedTokens=true"), {FOREIGN_RULE}),
        (("--set", "admissionPolicy.enabled=false"), set()),
    ],
    ids=["defaults", "foreign-accounts-allowed", "tokens-allowed", "policy-disabled"],
)
def test_the_template_policy_judges_exactly_what_the_tenancy_values_do_not_allow(
    render: Render, values: tuple[str, ...], rules: set[str]
) -> None:
    objects = render(*values)
    policy = _template_policy(objects)
    if not rules:
        assert policy is None
        return
    assert policy is not None
    messages = [v["messageExpression"] for v in policy["spec"]["validations"]]
    assert {r for r in (FOREIGN_RULE, TOKEN_RULE) if any(r in m for m in messages)} == rules
    bindings = [o for o in objects if o["kind"] == "ValidatingAdmissionPolicyBinding"]
    assert policy["metadata"]["name"] in {b["spec"]["policyName"] for b in bindings}


def test_no_template_policy_when_both_values_allow(render: Render) -> None:
    objects = render(
        "--set", "tenancy.allowForeignServiceAccounts=true",
        "--set", "tenancy.allowProjectedTokens=true",
    )  # fmt: skip
    assert _template_policy(objects) is None
    names = {o["metadata"]["name"] for o in objects if o["kind"].startswith("ValidatingAdmission")}
    assert names == {"jetpool-operator-subjects"}  # the subjects policy stays


def _refusal(cluster: Cluster, manifest: dict[str, Any]) -> str | None:
    try:
        dry_run(cluster, manifest)
    except KubectlError as exc:
        return str(exc)
    return None


def _admitted(cluster: Cluster, manifest: dict[str, Any]) -> bool:
    return "server dry run" in dry_run(cluster, manifest)


def _wait_for(cluster: Cluster, manifest: dict[str, Any], what: str) -> str:
    """The policy's refusal of ``manifest``, once the binding is active."""
    return eventually(lambda: _refusal(cluster, manifest), timeout=30, what=what)  # type: ignore[no-any-return]


def test_a_foreign_service_account_is_refused_at_apply_time_naming_the_field_and_the_value(
    cluster: Cluster, policed_namespaces: tuple[str, str]
) -> None:
    mine, _ = policed_namespaces
    message = _wait_for(cluster, pool(mine, template=FOREIGN), "a foreign ServiceAccount refused")
    assert (
        "spec.template.serviceAccountName 'default' is not the pool's own ServiceAccount "
        "p-worker; allowed only with the Helm value tenancy.allowForeignServiceAccounts=true"
    ) in message


def test_a_projected_token_is_refused_at_apply_time_naming_the_volume_and_the_value(
    cluster: Cluster, policed_namespaces: tuple[str, str]
) -> None:
    mine, _ = policed_namespaces
    second = {"name": "more", "projected": {"sources": [{"secret": {"name": "s"}}]}}
    manifest = pool(mine, template={"volumes": [second, TOKEN_VOLUME]})
    message = _wait_for(cluster, manifest, "a projected token refused")
    assert (
        "spec.template.volumes['api-token'] projects a serviceAccountToken; allowed only with "
        "the Helm value tenancy.allowProjectedTokens=true"
    ) in message
    assert "'more'" not in message
    two = pool(mine, template={"volumes": [TOKEN_VOLUME, {**TOKEN_VOLUME, "name": "again"}]})
    assert (
        "spec.template.volumes['api-token'], spec.template.volumes['again'] project a "
        "serviceAccountToken"
    ) in str(_refusal(cluster, two))


def test_the_pool_s_own_service_account_unset_or_named_and_other_volumes_are_admitted(
    cluster: Cluster, policed_namespaces: tuple[str, str]
) -> None:
    mine, _ = policed_namespaces
    _wait_for(cluster, pool(mine, template=FOREIGN), "policy on")
    secret_volume = {"name": "s", "projected": {"sources": [{"secret": {"name": "s"}}]}}
    for template in (
        None,
        {},
        {"serviceAccountName": None},
        {"serviceAccountName": "p-worker"},
        {"volumes": [secret_volume, {"name": "e", "emptyDir": {}}]},
    ):
        assert _admitted(cluster, pool(mine, template=template)), template


@pytest.fixture
def policed(cluster: Cluster, render: Render) -> Iterator[Any]:
    """``policed(*helm values)`` -> two namespaces under the policies rendered with them."""
    made: list[Iterator[tuple[str, str]]] = []

    def make(*values: str) -> tuple[str, str]:
        made.append(_policed(cluster, render, None, *values))
        return next(made[-1])

    yield make
    for generator in made:
        next(generator, None)


@pytest.mark.parametrize(
    ("value", "allowed", "still_refused", "rule"),
    [
        ("tenancy.allowForeignServiceAccounts", FOREIGN, TOKEN, TOKEN_RULE),
        ("tenancy.allowProjectedTokens", TOKEN, FOREIGN, FOREIGN_RULE),
    ],
    ids=["foreign-accounts", "projected-tokens"],
)
def test_each_value_admits_what_it_allows_and_only_that(
    cluster: Cluster,
    policed: Any,
    value: str,
    allowed: dict[str, Any],
    still_refused: dict[str, Any],
    rule: str,
) -> None:
    mine, _ = policed("--set", f"{value}=true")
    assert rule in _wait_for(cluster, pool(mine, template=still_refused), "policy on")
    assert _admitted(cluster, pool(mine, template=allowed))


def test_both_values_true_admit_both(cluster: Cluster, policed: Any) -> None:
    mine, other = policed(
        "--set", "tenancy.allowForeignServiceAccounts=true",
        "--set", "tenancy.allowProjectedTokens=true",
    )  # fmt: skip
    _wait_for(cluster, pool(mine, [f"tasks.{other}.x"]), "the subjects policy on")
    assert _admitted(cluster, pool(mine, template={**FOREIGN, **TOKEN}))


# The own ServiceAccount's name: the policy's CEL must agree with child_name on every pool name.
# Both are judged here on the real apiserver, never on a transcription of the CEL.

LABEL = r"[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?"


@st.composite
def pool_names(draw: st.DrawFn) -> str:
    """DNS-1123 subdomains (what the apiserver accepts as a WorkerPool's name), often near the
    56-character limit of the plain form, with dots and leading digits."""
    labels = draw(st.lists(st.from_regex(rf"\A{LABEL}\Z"), min_size=1, max_size=3))
    name = ".".join(labels)
    target = draw(st.one_of(st.just(0), st.integers(50, 62)))
    return name + "a" * max(0, target - len(name))


def _own_name_verdicts(cluster: Cluster, namespace: str, name: str) -> tuple[bool, bool]:
    """(admitted with <name>-worker, admitted with child_name(name, "worker"))."""
    plain = pool(namespace, name=name, template={"serviceAccountName": f"{name}-worker"})
    hashed = pool(namespace, name=name, template={"serviceAccountName": child_name(name, "worker")})
    return _refusal(cluster, plain) is None, _refusal(cluster, hashed) is None


@pytest.mark.parametrize(
    "name",
    [
        "p",
        "orders",
        "a" * 56,  # the longest plain form: 63 characters
        "a" * 57,
        "a" * 100,
        "x1-2",
        "1orders",  # leading digit
        "9",
        "web.v2",  # dotted
        "a.b.c",
        "0.a",
    ],
)
def test_the_own_service_account_rule_matches_child_name_on_the_real_apiserver(
    cluster: Cluster, policed_namespaces: tuple[str, str], name: str
) -> None:
    """<pool>-worker is admitted exactly when child_name gives that plain form; a hashed own
    name cannot be computed in CEL, so only an unset serviceAccountName passes for such a
    pool (the operator would accept the hashed name; docs say: leave it unset)."""
    mine, _ = policed_namespaces
    _wait_for(cluster, pool(mine, template=FOREIGN), "policy on")
    own = child_name(name, "worker")
    plain_ok, own_ok = _own_name_verdicts(cluster, mine, name)
    assert plain_ok == (own == f"{name}-worker")
    assert own_ok == (own == f"{name}-worker")
    assert _admitted(cluster, pool(mine, name=name, template={}))
    if own != f"{name}-worker":
        message = _refusal(cluster, pool(mine, name=name, template={"serviceAccountName": own}))
        assert message is not None
        assert "leave it unset: this pool's own ServiceAccount has a hashed name" in message


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(name=pool_names())
def test_the_own_service_account_rule_matches_child_name_for_any_pool_name(
    cluster: Cluster, policed_namespaces: tuple[str, str], name: str
) -> None:
    mine, _ = policed_namespaces
    _wait_for(cluster, pool(mine, template=FOREIGN), "policy on")
    plain = pool(mine, name=name, template={"serviceAccountName": f"{name}-worker"})
    assert (_refusal(cluster, plain) is None) == (child_name(name, "worker") == f"{name}-worker")
