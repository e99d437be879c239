"""PURE retry policy: which failures are retried, and after how long.

No I/O, no clock, no global random: the random source is passed in, so the policy is fully
determined by its inputs (unit and property tests live in ``tests/worker/test_retry.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum

from jetpool_protocol.dead_letter import DeadLetterReason
from jetpool_protocol.worker_settings import Jitter, WorkerSettings
from jetpool_worker.errors import Reject, Retry

RandomSource = Callable[[], float]
"""Returns a float in [0, 1), like :func:`random.random`."""


class Action(StrEnum):
    RETRY = "retry"
    DEAD_LETTER = "dead_letter"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 5
    initial_seconds: float = 1.0
    max_seconds: float = 300.0
    multiplier: float = 2.0
    jitter: Jitter = Jitter.FULL
    non_retryable: tuple[str, ...] = ()

    @classmethod
    def from_settings(cls, settings: WorkerSettings) -> RetryPolicy:
        return cls(
            max_attempts=settings.retry_max_attempts,
            initial_seconds=settings.retry_initial_seconds,
            max_seconds=settings.retry_max_seconds,
            multiplier=settings.retry_multiplier,
            jitter=settings.retry_jitter,
            non_retryable=settings.non_retryable,
        )


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    delay_seconds: float = 0.0
    reason: DeadLetterReason | None = None


def error_type_name(exc: BaseException) -> str:
    """The short class name used in dead-letter subjects and metric labels."""
    return type(exc).__name__


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def matches_type_names(exc: BaseException, names: Iterable[str]) -> bool:
    """True when any class in the exception's MRO is named (short or qualified) in ``names``."""
    wanted = set(names)
    if not wanted:
        return False
    return any(
        cls.__name__ in wanted or cls.__qualname__ in wanted or _qualified(cls) in wanted
        for cls in type(exc).__mro__
    )


def is_retryable(exc: BaseException, non_retryable: Iterable[str]) -> bool:
    """``Reject`` never retries, ``Retry`` always does; otherwise the configured type names decide.

    Timeouts are retryable unless ``TimeoutError`` itself is listed.
    """
    if isinstance(exc, Reject):
        return False
    if isinstance(exc, Retry):
        return True
    return not matches_type_names(exc, non_retryable)


def backoff_seconds(attempt: int, initial: float, multiplier: float, maximum: float) -> float:
    """``initial * multiplier ** (attempt - 1)`` capped at ``maximum`` (overflow-safe)."""
    if attempt < 1:
        raise ValueError("attempt numbers start at 1")
    if initial <= 0:
        return 0.0
    exponent = attempt - 1
    if multiplier <= 1:
        return min(initial, maximum)
    # Compare in log space so huge attempt numbers never overflow a float.
    growth = exponent * math.log(multiplier)
    if math.log(initial) + growth >= math.log(max(maximum, 1e-300)):
        return maximum
    if growth < 700:  # multiplier ** exponent is a finite float
        return min(initial * multiplier**exponent, maximum)
    # a tiny initial times a factor beyond a float's range (still below the cap)
    return min(math.exp(math.log(initial) + growth), maximum)


def apply_jitter(delay: float, jitter: Jitter, rand: RandomSource) -> float:
    """Full: uniform in [0, delay]; equal: uniform in [delay/2, delay]; none: delay."""
    if jitter is Jitter.FULL:
        return delay * rand()
    if jitter is Jitter.EQUAL:
        return delay / 2 + (delay / 2) * rand()
    return delay


def retry_delay(attempt: int, policy: RetryPolicy, rand: RandomSource) -> float:
    base = backoff_seconds(attempt, policy.initial_seconds, policy.multiplier, policy.max_seconds)
    return apply_jitter(base, policy.jitter, rand)


def decide(exc: BaseException, attempt: int, policy: RetryPolicy, rand: RandomSource) -> Decision:
    """What to do with a task whose ``attempt``-th run raised ``exc``."""
    if not is_retryable(exc, policy.non_retryable):
        return Decision(Action.DEAD_LETTER, reason=DeadLetterReason.NON_RETRYABLE)
    if attempt >= policy.max_attempts:
        return Decision(Action.DEAD_LETTER, reason=DeadLetterReason.MAX_ATTEMPTS)
    if isinstance(exc, Retry) and exc.delay is not None:
        return Decision(Action.RETRY, delay_seconds=exc.delay)
    return Decision(Action.RETRY, delay_seconds=retry_delay(attempt, policy, rand))
