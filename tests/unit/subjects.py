"""NATS subject matching for tests that check permissions and filters over plain strings."""

from __future__ import annotations

import itertools


def matches(pattern: str, subject: str) -> bool:
    """``*`` is one token, a final ``>`` one or more."""
    want, have = pattern.split("."), subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(have) > i
        if i >= len(have) or (token != "*" and token != have[i]):
            return False
    return len(want) == len(have)


def overlap(a: str, b: str) -> bool:
    """Whether some subject matches both patterns."""
    for x, y in itertools.zip_longest(a.split("."), b.split(".")):
        if x is None or y is None:
            return False
        if ">" in (x, y):
            return True
        if "*" not in (x, y) and x != y:
            return False
    return True
