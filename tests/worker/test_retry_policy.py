"""The pure retry policy: classification, exponential backoff, jitter."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jetpool_protocol.dead_letter import DeadLetterReason
from jetpool_protocol.worker_settings import Jitter
from jetpool_worker import Reject, Retry
from jetpool_worker.retry import (
    Action,
    RetryPolicy,
    apply_jitter,
    backoff_seconds,
    decide,
    is_retryable,
    retry_delay,
)


class BaseDomainError(Exception):
    pass


class PaymentDeclined(BaseDomainError):
    pass


unit = st.floats(min_value=0.0, max_value=0.999999)
attempts = st.integers(min_value=1, max_value=10_000)
initials = st.floats(min_value=0.0, max_value=100.0)
multipliers = st.floats(min_value=1.0, max_value=10.0)
caps = st.floats(min_value=100.0, max_value=10_000.0)


def test_reject_is_never_retried_even_if_listed_nowhere():
    assert not is_retryable(Reject("no"), ())


def test_retry_is_always_retried_even_if_its_name_is_listed():
    assert is_retryable(Retry(), ("Retry",))


def test_timeouts_are_retryable_by_default():
    assert is_retryable(TimeoutError("slow"), ())


@pytest.mark.parametrize(
    "name",
    ["PaymentDeclined", "BaseDomainError", f"{__name__}.BaseDomainError", "Exception"],
)
def test_non_retryable_names_match_short_or_qualified_names_anywhere_in_the_mro(name: str):
    assert not is_retryable(PaymentDeclined(), (name,))


def test_an_unlisted_type_stays_retryable():
    assert is_retryable(PaymentDeclined(), ("ValueError", "other.module.PaymentDeclined"))


def test_backoff_grows_exponentially_until_the_cap():
    assert [backoff_seconds(n, 1.0, 2.0, 10.0) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]


@given(attempts, initials, multipliers, caps)
def test_retry_delay_never_exceeds_the_cap(attempt, initial, multiplier, cap):
    assert 0.0 <= backoff_seconds(attempt, initial, multiplier, cap) <= cap


@given(st.integers(min_value=1, max_value=200), initials, multipliers, caps)
def test_backoff_never_shrinks_from_one_attempt_to_the_next(attempt, initial, multiplier, cap):
    now = backoff_seconds(attempt, initial, multiplier, cap)
    assert backoff_seconds(attempt + 1, initial, multiplier, cap) >= now - 1e-9 * max(now, 1)


@given(st.floats(min_value=0.0, max_value=1e6), unit)
def test_full_jitter_stays_between_zero_and_the_backoff(delay, r):
    assert 0.0 <= apply_jitter(delay, Jitter.FULL, lambda: r) <= delay


@given(st.floats(min_value=0.0, max_value=1e6), unit)
def test_equal_jitter_keeps_at_least_half_the_backoff(delay, r):
    assert delay / 2 <= apply_jitter(delay, Jitter.EQUAL, lambda: r) <= delay


@given(st.floats(min_value=0.0, max_value=1e6), unit)
def test_no_jitter_is_the_backoff_itself(delay, r):
    assert apply_jitter(delay, Jitter.NONE, lambda: r) == delay


def test_jitter_uses_the_injected_random_source():
    policy = RetryPolicy(initial_seconds=4.0, max_seconds=100.0, jitter=Jitter.FULL)
    assert retry_delay(1, policy, lambda: 0.25) == 1.0
    assert retry_delay(2, policy, lambda: 0.5) == 4.0


@given(st.integers(min_value=1, max_value=20), st.integers(min_value=1, max_value=20), unit)
def test_a_retryable_failure_is_dead_lettered_exactly_from_the_last_attempt(attempt, limit, r):
    decision = decide(RuntimeError("x"), attempt, RetryPolicy(max_attempts=limit), lambda: r)
    if attempt >= limit:
        assert decision.action is Action.DEAD_LETTER
        assert decision.reason is DeadLetterReason.MAX_ATTEMPTS
    else:
        assert decision.action is Action.RETRY


def test_a_non_retryable_failure_is_dead_lettered_on_the_first_attempt():
    decision = decide(ValueError("x"), 1, RetryPolicy(non_retryable=("ValueError",)), lambda: 0.5)
    assert decision.action is Action.DEAD_LETTER
    assert decision.reason is DeadLetterReason.NON_RETRYABLE


def test_a_retry_with_an_explicit_delay_overrides_the_backoff():
    decision = decide(Retry(delay=42.0), 1, RetryPolicy(), lambda: 0.5)
    assert decision == decide(Retry(delay=42.0), 2, RetryPolicy(), lambda: 0.1)
    assert decision.delay_seconds == 42.0


def test_a_retry_request_still_counts_toward_max_attempts():
    decision = decide(Retry(delay=1), 5, RetryPolicy(max_attempts=5), lambda: 0.5)
    assert decision.reason is DeadLetterReason.MAX_ATTEMPTS
