"""Ownership of JetStream resources and the namespace subject space, as pure decisions."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from jetpool_operator.core.tenancy import (
    OWNER_NAME,
    OWNER_NAMESPACE,
    OWNER_UID,
    Owner,
    Refusal,
    judge_claim,
    judge_delete,
    owner_metadata,
    stream_names_verdict,
    subject_problems,
    subjects_verdict,
)
from jetpool_protocol.naming import PoolNames

ME = Owner("team-a", "thumbs", "uid-1")
NAMES = st.text(alphabet="abc-.", min_size=1, max_size=6)
OWNERS = st.builds(Owner, NAMES, NAMES, st.sampled_from(["", "uid-1", "uid-2"]))
NAMESPACES = st.text(alphabet="abc-", min_size=1, max_size=5).filter(
    lambda s: s[0] != "-" and s[-1] != "-"
)
SUBJECTS = st.lists(
    st.sampled_from(["tasks", "a", "b", "a-b", "*", ">", "$JS", "x", ""]), min_size=1, max_size=5
).map(".".join)


def _stamped(owner: Owner) -> dict[str, str]:
    return {**dict(owner.metadata()), "_nats.ver": "2.15.1"}


class TestClaims:
    def test_a_resource_stamped_with_this_pool_is_ours(self) -> None:
        assert judge_claim("stream", "s", ME, _stamped(ME), adopt_existing=False).allowed

    def test_the_same_pool_recreated_with_a_new_uid_takes_its_retained_stream_back(self) -> None:
        old = Owner("team-a", "thumbs", "uid-0")
        assert judge_claim("stream", "s", ME, _stamped(old), adopt_existing=False).allowed

    def test_another_pool_s_stream_is_refused_with_a_message_naming_the_owner(self) -> None:
        other = Owner("team-b", "thumbs", "uid-9")
        verdict = judge_claim("stream", "s", ME, _stamped(other), adopt_existing=True)
        assert not verdict.allowed
        assert verdict.reason == Refusal.OWNED_BY_ANOTHER_POOL
        assert "team-b/thumbs" in verdict.message

    def test_an_unowned_stream_needs_the_opt_in_and_the_message_says_how(self) -> None:
        verdict = judge_claim("stream", "s", ME, {"_nats.ver": "2.15.1"}, adopt_existing=False)
        assert not verdict.allowed
        assert verdict.reason == Refusal.ADOPTION_REQUIRED
        assert "spec.nats.adoptExisting: true" in verdict.message

    def test_an_unowned_stream_is_adopted_with_the_opt_in(self) -> None:
        assert judge_claim("stream", "s", ME, None, adopt_existing=True).allowed

    def test_an_unowned_stream_with_subjects_of_the_namespace_is_adoptable(self) -> None:
        subjects = ["tasks.team-a.thumbs.>", "jetpool.dlq.team-a.thumbs.>"]
        verdict = judge_claim(
            "stream", "s", ME, None, adopt_existing=True, observed_subjects=subjects
        )
        assert verdict.allowed

    def test_an_unowned_stream_of_another_namespace_is_never_adopted(self) -> None:
        verdict = judge_claim(
            "stream",
            "s",
            ME,
            None,
            adopt_existing=True,
            observed_subjects=["tasks.team-b.x.>", "tasks.team-a.y.>"],
        )
        assert verdict.reason == Refusal.ADOPTION_REFUSED
        assert "tasks.team-b.x.>" in verdict.message
        assert "tasks.team-a.y.>" not in verdict.message

    def test_an_unowned_stream_with_no_subjects_is_not_adopted(self) -> None:
        verdict = judge_claim("stream", "s", ME, None, adopt_existing=True, observed_subjects=[])
        assert verdict.reason == Refusal.ADOPTION_REFUSED

    def test_a_partial_owner_record_is_nobody_s_and_never_adopted(self) -> None:
        verdict = judge_claim("stream", "s", ME, {OWNER_UID: "uid-1"}, adopt_existing=True)
        assert verdict.reason == Refusal.OWNED_BY_ANOTHER_POOL

    @given(OWNERS, st.booleans())
    def test_a_pool_claims_a_stamped_resource_exactly_when_namespace_and_name_match(
        self, owner: Owner, adopt: bool
    ) -> None:
        verdict = judge_claim("stream", "s", ME, _stamped(owner), adopt_existing=adopt)
        assert verdict.allowed == ((owner.namespace, owner.name) == (ME.namespace, ME.name))


class TestDeletion:
    def test_a_pool_deletes_what_carries_its_namespace_name_and_uid(self) -> None:
        assert judge_delete("stream", "s", ME, _stamped(ME)).allowed

    def test_a_stream_left_by_a_deleted_namesake_is_kept(self) -> None:
        verdict = judge_delete("stream", "s", ME, _stamped(Owner("team-a", "thumbs", "uid-0")))
        assert not verdict.allowed
        assert "team-a/thumbs (uid uid-0)" in verdict.message

    def test_an_unowned_stream_is_never_deleted(self) -> None:
        assert not judge_delete("stream", "s", ME, {"_nats.ver": "2"}).allowed

    def test_a_pool_without_a_known_uid_deletes_nothing(self) -> None:
        anonymous = Owner("team-a", "thumbs", "")
        assert not judge_delete("stream", "s", anonymous, _stamped(anonymous)).allowed

    @given(OWNERS, OWNERS)
    def test_deletion_needs_the_exact_owner(self, me: Owner, owner: Owner) -> None:
        verdict = judge_delete("stream", "s", me, _stamped(owner))
        assert verdict.allowed == (me == owner and bool(me.uid))


def test_only_owner_keys_are_compared_so_server_keys_never_look_like_drift() -> None:
    observed = {OWNER_NAMESPACE: "n", OWNER_NAME: "p", "_nats.level": "1", "x": "y"}
    assert owner_metadata(observed) == ((OWNER_NAME, "p"), (OWNER_NAMESPACE, "n"))
    assert owner_metadata(None) == ()


class TestSubjects:
    def test_subjects_under_the_namespace_space_are_accepted(self) -> None:
        assert subject_problems("team-a", ["tasks.team-a.thumbs.>", "tasks.team-a.*.x"]) == []

    def test_a_bare_wildcard_is_refused(self) -> None:
        [problem] = subject_problems("team-a", [">"])
        assert "outside namespace team-a's subject space tasks.team-a.>" in problem

    def test_another_namespace_s_subjects_are_refused_with_a_clear_message(self) -> None:
        verdict = subjects_verdict("team-b", ["tasks.team-a.thumbs.>"])
        assert verdict.reason == Refusal.SUBJECTS_OUTSIDE_NAMESPACE
        assert "'tasks.team-a.thumbs.>'" in verdict.message
        assert "may only use subjects under tasks.team-b.>" in verdict.message

    def test_a_namespace_that_is_a_prefix_of_another_does_not_reach_it(self) -> None:
        assert subject_problems("team", ["tasks.team-a.x"])
        assert subject_problems("team", ["tasks.team.x"]) == []

    def test_wildcards_in_the_namespace_token_and_malformed_subjects_are_refused(self) -> None:
        for subject in ("tasks.*.x", "tasks.>", "tasks.team-a", "tasks.team-a.", "tasks.team-a.a>"):
            assert subject_problems("team-a", [subject]), subject

    @given(NAMESPACES, NAMESPACES, SUBJECTS)
    def test_an_accepted_subject_never_matches_another_namespace_s_subjects(
        self, mine: str, other: str, subject: str
    ) -> None:
        """Whatever it spells, an accepted subject's first two tokens are literally
        tasks.<mine>, so it cannot capture a subject of another namespace's space."""
        if subject_problems(mine, [subject]) or mine == other:
            return
        tokens = subject.split(".")
        assert tokens[:2] == ["tasks", mine]
        assert tokens[1] != other


class TestReservedStreamNames:
    def test_another_namespace_s_default_name_cannot_be_taken_by_a_custom_name(self) -> None:
        victim = PoolNames("team-a", "thumbs").stream
        verdict = stream_names_verdict("team-b", "squat", [("nats.stream", victim)])
        assert not verdict.allowed
        assert verdict.reason == Refusal.RESERVED_STREAM_NAME
        assert f"nats.stream {victim!r}" in verdict.message
        assert "jetpool-team-b_squat-tasks" in verdict.message

    def test_the_control_bucket_s_stream_cannot_be_taken(self) -> None:
        verdict = stream_names_verdict("team-b", "x", [("deadLetter.stream", "KV_jetpool-control")])
        assert verdict.reason == Refusal.RESERVED_STREAM_NAME

    def test_a_pool_may_spell_out_its_own_defaults_and_its_legacy_name(self) -> None:
        own = PoolNames("team-a", "thumbs")
        for name in (own.stream, own.dead_letter_stream, own.legacy_stream):
            assert stream_names_verdict("team-a", "thumbs", [("nats.stream", name)]).allowed

    def test_unset_and_unreserved_names_are_allowed(self) -> None:
        custom = [("nats.stream", None), ("deadLetter.stream", "orders-dlq")]
        assert stream_names_verdict("team-a", "thumbs", custom).allowed

    @given(NAMESPACES, NAMES, NAMESPACES, NAMES)
    def test_no_pool_may_name_a_stream_after_another_pool_s_default(
        self, namespace: str, pool: str, other_namespace: str, other_pool: str
    ) -> None:
        other = PoolNames(other_namespace, other_pool)
        verdict = stream_names_verdict(namespace, pool, [("nats.stream", other.stream)])
        assert verdict.allowed == ((namespace, pool) == (other_namespace, other_pool))
