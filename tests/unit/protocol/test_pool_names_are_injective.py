"""Default NATS names never collide, for any valid (namespace, pool) pair."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from jetpool_protocol.naming import MAX_STREAM_NAME, PoolNames
from jetpool_protocol.worker_settings import WorkerSettings
from tests.unit.subjects import matches

_ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"


def _label(max_size: int) -> st.SearchStrategy[str]:
    """A DNS-1123 label: [a-z0-9-], alphanumeric at both ends."""
    inner = st.text(alphabet=_ALNUM + "-", max_size=max(0, max_size - 2))
    return st.one_of(
        st.sampled_from(_ALNUM),
        st.builds(
            lambda a, m, b: a + m + b, st.sampled_from(_ALNUM), inner, st.sampled_from(_ALNUM)
        ),
    )


# Small alphabets on purpose: collisions hide in dashes, dots and shared prefixes.
NAMESPACES = st.one_of(_label(63), st.sampled_from(["a", "a-b", "b", "b-c", "a-b-c", "x-dlq"]))
POOLS = st.one_of(
    st.lists(_label(63), min_size=1, max_size=5).map(".".join).filter(lambda s: len(s) <= 253),
    st.sampled_from(
        ["c", "b-c", "b.c", "c-dlq", "c-tasks", "c.tasks", "x", "x-dlq", "c-tasks-dlq"]
    ),
    # Long names take the hashed form.
    st.builds(
        lambda p, n: (p * 253)[: 200 + n], st.sampled_from(["a", "ab.c", "x-"]), st.integers(0, 53)
    ).map(lambda s: s.strip(".-")),
)
PAIRS = st.tuples(NAMESPACES, POOLS)
STREAM_NAME = re.compile(r"^[^.*>\s]+$")
SUBJECT_TOKEN = re.compile(r"^[A-Za-z0-9_-]+$")
"""A literal NATS subject token, narrower than the server asks: no ``.``, ``*``, ``>``, space."""


def _names(namespace: str, pool: str) -> dict[str, str]:
    names = PoolNames(namespace, pool)
    return {
        "stream": names.stream,
        "dead_letter_stream": names.dead_letter_stream,
        "subjects": names.default_subjects[0],
        "dead_letter_prefix": names.dead_letter_subject_prefix,
        "stats": names.stats_subject,
        "control": names.control_key,
        "inbox": names.inbox_prefix,
        "rate_limit_stream": names.rate_limit_stream,
        "rate_limit_prefix": names.rate_limit_subject_prefix,
    }


@settings(max_examples=3000)
@given(PAIRS, PAIRS)
def test_two_different_pools_share_no_default_name(
    one: tuple[str, str], other: tuple[str, str]
) -> None:
    if one == other:
        return
    a, b = _names(*one), _names(*other)
    streams_a = {a["stream"], a["dead_letter_stream"], a["rate_limit_stream"]}
    streams_b = {b["stream"], b["dead_letter_stream"], b["rate_limit_stream"]}
    assert not streams_a & streams_b
    for key in ("subjects", "dead_letter_prefix", "stats", "control", "inbox", "rate_limit_prefix"):
        assert a[key] != b[key], key


@given(PAIRS)
def test_a_pool_s_task_stream_is_never_its_own_or_anyone_s_dead_letter_stream(
    pair: tuple[str, str],
) -> None:
    names = PoolNames(*pair)
    assert names.stream.endswith("-tasks")
    assert names.dead_letter_stream.endswith("-tasks-dlq")


@given(PAIRS)
def test_default_stream_names_fit_jetstream(pair: tuple[str, str]) -> None:
    names = PoolNames(*pair)
    for name in (names.stream, names.dead_letter_stream, names.rate_limit_stream):
        assert len(name) <= MAX_STREAM_NAME
        assert STREAM_NAME.match(name), name


@given(PAIRS)
def test_default_subjects_lie_in_the_namespace_subject_space(pair: tuple[str, str]) -> None:
    names = PoolNames(*pair)
    subject = names.default_subjects[0]
    assert subject.startswith(names.subject_space)
    assert subject.count(".") == 3


def test_the_pairs_the_old_mapping_confused_now_differ() -> None:
    assert PoolNames("a-b", "c").legacy_stream == PoolNames("a", "b-c").legacy_stream
    assert PoolNames("a-b", "c").stream == "jetpool-a-b_c-tasks"
    assert PoolNames("a", "b-c").stream == "jetpool-a_b-c-tasks"
    assert PoolNames("n", "x").dead_letter_stream != PoolNames("n", "x-dlq").stream


@given(PAIRS)
def test_a_spelled_out_stream_name_decodes_back_to_its_namespace_and_pool(
    pair: tuple[str, str],
) -> None:
    """Decodable means injective; hashed names (``__``) rely on 128 bits of SHA-256."""
    stream = PoolNames(*pair).stream
    if "__" in stream:
        assert len(f"jetpool-{pair[0]}_{pair[1]}-tasks-dlq") > MAX_STREAM_NAME
        return
    namespace, _, pool = stream.removeprefix("jetpool-").removesuffix("-tasks").partition("_")
    assert (namespace, pool.replace("_", ".")) == pair


@given(PAIRS)
def test_an_inbox_prefix_is_one_literal_subject_token_outside_the_default_inboxes(
    pair: tuple[str, str],
) -> None:
    prefix = PoolNames(*pair).inbox_prefix
    assert SUBJECT_TOKEN.match(prefix), prefix
    assert prefix.startswith("_INBOX_")
    assert len(prefix) <= len("_INBOX_") + 63 + 1 + 253
    assert not matches("_INBOX.>", f"{prefix}.Rc2Zrub2Iyk9kJhN0wZXbV")


@settings(max_examples=3000)
@given(PAIRS, PAIRS)
def test_no_pool_s_inbox_permission_matches_another_pool_s_inboxes(
    one: tuple[str, str], other: tuple[str, str]
) -> None:
    if one == other:
        return
    mine, theirs = PoolNames(*one).inbox_prefix, PoolNames(*other).inbox_prefix
    inbox = f"{theirs}.Rc2Zrub2Iyk9kJhN0wZXbV.abcd"
    assert not matches(f"{mine}.>", inbox)
    assert matches(f"{theirs}.>", inbox)


@given(PAIRS)
def test_an_inbox_prefix_decodes_back_to_its_namespace_and_pool(pair: tuple[str, str]) -> None:
    """Decodable means injective: the namespace holds no ``_``, the pool only ``.`` for it."""
    prefix = PoolNames(*pair).inbox_prefix
    namespace, _, pool = prefix.removeprefix("_INBOX_").partition("_")
    assert (namespace, pool.replace("_", ".")) == pair


@given(PAIRS)
def test_a_worker_s_inbox_prefix_is_its_pool_s(pair: tuple[str, str]) -> None:
    """Derived from the identity the operator renders, never a setting of its own."""
    namespace, pool = pair
    settings = WorkerSettings(
        pool_name=pool,
        pool_namespace=namespace,
        handler="a:b",
        stream="s",
        consumer="c",
        dead_letter_stream="d",
        dead_letter_subject_prefix="p",
        control_key="k",
        stats_subject="t",
    )
    assert settings.inbox_prefix == PoolNames(namespace, pool).inbox_prefix
    assert WorkerSettings.from_env(settings.to_env()).inbox_prefix == settings.inbox_prefix
