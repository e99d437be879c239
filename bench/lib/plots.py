"""PNG plots of benchmark results (matplotlib, from the ``bench`` extra).

matplotlib is imported at run time: without it (a plain ``.[dev]`` venv) a benchmark still
measures and reports, it only logs that it drew nothing. The lint venv has no matplotlib
either, so it is typed as ``Any`` here.
"""

from __future__ import annotations

import importlib
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("bench")
COLORS = {"bare nats-py": "#8c8c8c", "jetpool worker": "#1f77b4"}


@dataclass
class Panel:
    """One axes: a line per series over ``x`` (or grouped bars over categories)."""

    title: str
    x: Sequence[float | str]
    series: Mapping[str, Sequence[float]]
    ylabel: str = ""
    xlabel: str = ""
    log_x: bool = False
    log_y: bool = False
    reference: float | None = None
    """A dashed horizontal line (e.g. ratio 1.0, or an ideal rate)."""
    reference_label: str = ""


@dataclass
class Span:
    start: float
    end: float
    label: str
    color: str = "#d62728"


@dataclass
class Timeline:
    """Event counts per ``bin_seconds`` over time, one line per series."""

    title: str
    series: Mapping[str, Sequence[float]]
    """Event times in seconds from the start of the run."""
    bin_seconds: float
    ylabel: str = "events/s"
    spans: Sequence[Span] = ()
    marks: Sequence[tuple[float, str]] = ()
    end: float | None = None
    extra_lines: Mapping[str, Sequence[tuple[float, float]]] = field(default_factory=dict)
    """Step lines (time, value) on a second y axis, e.g. the breaker's state."""
    extra_ticks: Sequence[str] = ()
    """Names of the second axis' values 0, 1, 2..."""


def _pyplot() -> Any | None:
    try:
        matplotlib = importlib.import_module("matplotlib")
    except ImportError:
        log.warning("matplotlib is not installed (pip install -e '.[bench]'): no plots")
        return None
    matplotlib.use("Agg")
    return importlib.import_module("matplotlib.pyplot")


def _color(name: str, index: int) -> str | None:
    return COLORS.get(name) or f"C{index + 2}"


def _draw_panel(ax: Any, panel: Panel, bars: bool) -> None:
    if bars:
        width = 0.8 / max(1, len(panel.series))
        for i, (name, values) in enumerate(panel.series.items()):
            xs = [j + (i - (len(panel.series) - 1) / 2) * width for j in range(len(panel.x))]
            shown = [0.0 if math.isnan(v) else v for v in values]
            ax.bar(xs, shown, width, label=name, color=_color(name, i))
        ax.set_xticks(range(len(panel.x)), [str(x) for x in panel.x])
    else:
        for i, (name, values) in enumerate(panel.series.items()):
            ax.plot(panel.x, values, marker="o", label=name, color=_color(name, i))
        if panel.log_x:
            ax.set_xscale("log", base=2)
            ax.set_xticks(list(panel.x), [str(x) for x in panel.x])
    if panel.log_y:
        ax.set_yscale("log")
    if bars:  # headroom for the legend above the bars
        bottom, top = ax.get_ylim()
        ax.set_ylim(bottom, top * (4 if panel.log_y else 1.3))
    if panel.reference is not None:
        ax.axhline(
            panel.reference, color="black", linestyle="--", linewidth=1, label=panel.reference_label
        )
    ax.set_title(panel.title, fontsize=10)
    ax.set_xlabel(panel.xlabel)
    ax.set_ylabel(panel.ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)


def save_panels(
    path: Path, title: str, panels: Sequence[Panel], *, bars: bool = False
) -> str | None:
    """Panels side by side in one PNG; returns its file name, or None without matplotlib."""
    plt = _pyplot()
    if plt is None:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.8), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        _draw_panel(ax, panel, bars)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def binned(
    times: Sequence[float], bin_seconds: float, end: float
) -> tuple[list[float], list[float]]:
    """Event rate per bin: bin start times and events per second in each bin (pure)."""
    count = max(1, math.ceil(end / bin_seconds))
    bins = [0] * count
    for t in times:
        if 0 <= t < count * bin_seconds:
            bins[min(count - 1, int(t / bin_seconds))] += 1
    return [i * bin_seconds for i in range(count)], [b / bin_seconds for b in bins]


def save_timelines(path: Path, title: str, timelines: Sequence[Timeline]) -> str | None:
    """Timelines stacked vertically in one PNG; returns its file name, or None."""
    plt = _pyplot()
    if plt is None:
        return None
    fig, axes = plt.subplots(
        len(timelines), 1, figsize=(10, 2.8 * len(timelines)), squeeze=False, sharex=True
    )
    for ax, tl in zip(axes[:, 0], timelines, strict=True):
        end = tl.end or max((max(ts, default=0.0) for ts in tl.series.values()), default=1.0)
        for i, (name, times) in enumerate(tl.series.items()):
            xs, ys = binned(times, tl.bin_seconds, end)
            ax.step(xs, ys, where="post", label=name, color=f"C{i}")
        for span in tl.spans:
            ax.axvspan(span.start, span.end, color=span.color, alpha=0.12, label=span.label)
        for at, label in tl.marks:
            ax.axvline(at, color="black", linestyle=":", linewidth=1)
            ax.annotate(
                label,
                (at, 1),
                xycoords=("data", "axes fraction"),
                fontsize=7,
                rotation=90,
                va="top",
                ha="right",
            )
        if tl.extra_lines:
            twin = ax.twinx()
            for i, (name, points) in enumerate(tl.extra_lines.items()):
                twin.step(
                    [p[0] for p in points],
                    [p[1] for p in points],
                    where="post",
                    color=f"C{i + 5}",
                    linestyle="--",
                    label=name,
                )
            if tl.extra_ticks:
                twin.set_yticks(range(len(tl.extra_ticks)), list(tl.extra_ticks), fontsize=7)
            twin.legend(loc="upper right", fontsize=7)
        ax.set_title(tl.title, fontsize=10)
        ax.set_ylabel(tl.ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper left", fontsize=7)
    axes[-1, 0].set_xlabel("seconds from the start of the run")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name
