"""Extra subject spaces the operator grants a namespace: parsing, and that a grant to one
namespace never lets another in."""

from __future__ import annotations

import json

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from jetpool_operator.core.tenancy import (
    EXTRA_SUBJECT_SPACES_ENV,
    Owner,
    Refusal,
    SubjectGrants,
    judge_claim,
    subject_problems,
    subjects_verdict,
)

BILLING = SubjectGrants.parse('{"billing": ["invoices.billing."]}')


class TestGrantedSpaces:
    def test_a_granted_prefix_is_accepted_in_its_namespace(self) -> None:
        assert (
            subject_problems("billing", ["invoices.billing.>", "invoices.billing.*.paid"], BILLING)
            == []
        )
        assert subject_problems("billing", ["tasks.billing.x.>"], BILLING) == []

    def test_the_same_prefix_is_refused_in_another_namespace(self) -> None:
        verdict = subjects_verdict("shop", ["invoices.billing.>"], BILLING)
        assert verdict.reason == Refusal.SUBJECTS_OUTSIDE_NAMESPACE
        assert "may only use subjects under tasks.shop.>" in verdict.message
        assert "invoices.billing" not in verdict.message.split("; a pool in")[1]

    def test_the_refusal_names_every_space_of_the_namespace(self) -> None:
        verdict = subjects_verdict("billing", ["orders.x.>"], BILLING)
        assert "under tasks.billing.> or invoices.billing.>" in verdict.message

    def test_a_granted_prefix_is_literal_so_a_wildcard_cannot_widen_it(self) -> None:
        for subject in ("invoices.*.x", "invoices.>", "invoices.billing.", "invoices.billingx.y"):
            assert subject_problems("billing", [subject], BILLING), subject

    def test_an_unowned_stream_under_a_granted_prefix_can_be_adopted_by_that_namespace_only(
        self,
    ) -> None:
        def claim(namespace: str) -> bool:
            return judge_claim(
                "stream",
                "legacy",
                Owner(namespace, "p", "u"),
                None,
                adopt_existing=True,
                observed_subjects=["invoices.billing.>"],
                extra_spaces=BILLING.extra(namespace),
            ).allowed

        assert claim("billing")
        assert not claim("shop")


class TestParsing:
    def test_unset_or_empty_grants_nothing(self) -> None:
        assert SubjectGrants.from_env({}) == SubjectGrants()
        assert SubjectGrants.parse("  ") == SubjectGrants.parse("{}") == SubjectGrants()

    def test_the_environment_variable_is_read(self) -> None:
        env = {EXTRA_SUBJECT_SPACES_ENV: '{"b": ["x.b.", "x.b."], "a": ["y.a."]}'}
        grants = SubjectGrants.from_env(env)
        assert grants.extra("b") == ("x.b.",)
        assert grants.extra("a") == ("y.a.",)
        assert grants.extra("c") == ()

    @pytest.mark.parametrize(
        ("raw", "problem"),
        [
            ("not json", "expected a JSON object"),
            ('["x.y."]', "expected a JSON object"),
            ('{"a": "x.y."}', "expected a JSON object"),
            ('{"a": [1]}', "expected a JSON object"),
            ('{"A_b": ["x.y."]}', "is not a namespace name"),
            ('{"a": ["x.y"]}', "end with '.'"),
            ('{"a": ["x."]}', "at least two literal tokens"),
            ('{"a": ["x.*."]}', "must be literal tokens"),
            ('{"a": ["x..y."]}', "must be literal tokens"),
            ('{"a": ["x.>."]}', "must be literal tokens"),
            ('{"a": ["tasks.b."]}', "may not start with 'tasks'"),
            ('{"a": ["$JS.API."]}', "may not start with '$JS'"),
            ('{"a": ["_INBOX.a."]}', "may not start with '_INBOX'"),
            ('{"a": ["_INBOX_b_pool.x."]}', "may not start with '_INBOX_b_pool'"),
            ('{"a": ["jetpool.dlq."]}', "may not start with 'jetpool'"),
            ('{"a": ["x.y."], "b": ["x.y.z."]}', "overlaps"),
            ('{"a": ["x.y.z."], "b": ["x.y."]}', "overlaps"),
        ],
    )
    def test_a_bad_value_is_refused_with_a_clear_message(self, raw: str, problem: str) -> None:
        with pytest.raises(ValueError, match=EXTRA_SUBJECT_SPACES_ENV) as caught:
            SubjectGrants.parse(raw)
        assert problem in str(caught.value)

    def test_one_namespace_may_hold_nested_prefixes_of_its_own(self) -> None:
        grants = SubjectGrants.parse('{"a": ["x.y.", "x.y.z."]}')
        assert grants.extra("a") == ("x.y.", "x.y.z.")


NAMESPACES = st.sampled_from(["a", "b", "a-b", "ab"])
TOKENS = st.sampled_from(["tasks", "x", "y", "a", "b", "*", ">", "$JS", ""])
PREFIXES = st.lists(st.sampled_from(["x", "y", "a", "b"]), min_size=2, max_size=3).map(
    lambda tokens: ".".join(tokens) + "."
)
GRANTS = st.dictionaries(NAMESPACES, st.lists(PREFIXES, max_size=3), max_size=3)
SUBJECTS = st.lists(TOKENS, min_size=1, max_size=5).map(".".join)


@given(GRANTS, NAMESPACES, SUBJECTS)
def test_a_subject_accepted_in_one_namespace_lies_in_no_other_namespace_s_space(
    grants: dict[str, list[str]], mine: str, subject: str
) -> None:
    """Whatever the grants and the subject spell, an accepted subject starts with a literal
    space of ``mine``, which no other namespace's space contains or is contained in."""
    try:
        parsed = SubjectGrants.parse(json.dumps(grants))
    except ValueError:
        assume(False)
        return
    if subject_problems(mine, [subject], parsed):
        return
    mine_spaces = (f"tasks.{mine}.", *parsed.extra(mine))
    assert any(subject.startswith(space) for space in mine_spaces)
    for other in {"a", "b", "a-b", "ab"} - {mine}:
        for space in (f"tasks.{other}.", *parsed.extra(other)):
            assert not subject.startswith(space), (subject, other, space)
            assert subject_problems(other, [subject], parsed), (subject, other)
