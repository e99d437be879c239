"""Measuring rates from a handler's own record of start times (flow-control tests)."""

from __future__ import annotations


def sliding_counts(times: list[float], width: float, step: float) -> list[int]:
    """How many of ``times`` fall in each window [t, t + width), t stepping from the first
    time for as long as a whole window fits before the last."""
    ordered = sorted(times)
    counts: list[int] = []
    t = ordered[0]
    while t + width <= ordered[-1]:
        counts.append(sum(1 for s in ordered if t <= s < t + width))
        t += step
    return counts
