"""Measuring rates and overlaps from a handler's own record (flow-control tests)."""

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


def most_at_once(spans: list[tuple[float, float]]) -> int:
    """The most intervals [start, end) open at any one time."""
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    peak = running = 0
    for _, change in events:  # at equal times an end (-1) sorts before a start (+1)
        running += change
        peak = max(peak, running)
    return peak
