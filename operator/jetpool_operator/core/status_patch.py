"""What (if anything) to send as a WorkerPool status patch. Pure.

The control loop recomputes the whole status every tick; this decides whether the apiserver
needs to hear about it. Nothing is sent when nothing changed. Keys the old status has and the
new one lacks are sent as ``null``, because a JSON merge patch keeps whatever it does not
mention. Counters that move with every task (backlog, throughput, ...) are written at most
every ``volatile_interval`` seconds when they are the only change; anything else (a
condition, the breaker, replicas) goes out at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

VOLATILE_STATUS = frozenset(
    {
        "backlog",
        "inFlight",
        "backlogByLevel",
        "redelivered",
        "deadLetters",
        "throughput",
        "errorRate",
        "tasks",
    }
)


def without_nulls(value: Any) -> Any:
    """Drop None values recursively: the shape the apiserver stores and returns."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


def _with_removals(old: Any, new: Any) -> Any:
    """``new``, plus an explicit null for every map key ``old`` has and ``new`` lacks, at any
    depth (lists are replaced whole by a merge patch, so they need nothing)."""
    if not (isinstance(old, Mapping) and isinstance(new, Mapping)):
        return new
    out: dict[str, Any] = {k: None for k in old if k not in new}
    for key, value in new.items():
        out[key] = _with_removals(old.get(key), value)
    return out


def status_patch(
    old: Mapping[str, Any],
    new: Mapping[str, Any],
    *,
    seconds_since_last_patch: float,
    volatile_interval: float,
) -> dict[str, Any] | None:
    """The merge patch turning ``old`` into ``new``, or None when none should be sent now."""
    patch: dict[str, Any] = _with_removals(old, new)
    wanted, current = without_nulls(patch), without_nulls(dict(old))
    if wanted == current:
        return None

    def stable(status: Mapping[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in status.items() if k not in VOLATILE_STATUS}

    if stable(wanted) == stable(current) and seconds_since_last_patch < volatile_interval:
        return None
    return patch
