"""Benchmark results as data (JSON in ``bench/out``) and their Markdown rendering (pure).

Each benchmark writes one :class:`Result`; ``bench/run_all.py`` renders every result of a run
into ``bench/out/report.md``. A benchmark that writes no result (``scaling.py``) appears with
its printed output instead.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

Cell = str | int | float | None


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[Cell]] = field(default_factory=list)
    note: str = ""


@dataclass
class Result:
    name: str
    """File stem: ``<name>.json`` in the out directory."""
    title: str
    about: str
    """What is measured against what, in a few sentences of Markdown."""
    command: str
    tables: list[Table] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)
    """PNG file names in the out directory."""
    seconds: float = 0.0
    """Wall time of the benchmark."""

    def save(self, out_dir: Path) -> Path:
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"{self.name}.json"
        path.write_text(json.dumps(asdict(self), indent=1, allow_nan=True) + "\n")
        return path

    @classmethod
    def load(cls, path: Path) -> Result:
        data = json.loads(path.read_text())
        data["tables"] = [Table(**t) for t in data.get("tables", [])]
        return cls(**data)


def format_cell(value: Cell) -> str:
    """Numbers with as many digits as they deserve; nothing known shows as ``-``."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return "-"
        size = abs(value)
        if size >= 1000:
            return f"{value:,.0f}"
        if size >= 100:
            return f"{value:.0f}"
        if size >= 10:
            return f"{value:.1f}"
        if 0 < size < 0.01:
            return f"{value:.1g}"
        return f"{value:.2f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def render_table(table: Table) -> str:
    lines = [f"**{table.title}**", ""] if table.title else []
    lines.append("| " + " | ".join(format_cell(c) for c in table.columns) + " |")
    lines.append("|" + "---|" * len(table.columns))
    for row in table.rows:
        if len(row) != len(table.columns):
            raise ValueError(f"row {row!r} does not match columns {table.columns!r}")
        lines.append("| " + " | ".join(format_cell(c) for c in row) + " |")
    if table.note:
        lines += ["", table.note]
    return "\n".join(lines)


def render_result(result: Result, heading: str = "##") -> str:
    parts = [
        f"{heading} {result.title}",
        result.about,
        f"`{result.command}` ({result.seconds:.0f} s)",
    ]
    parts += [render_table(t) for t in result.tables]
    parts += [f"![{name}]({name})" for name in result.figures]
    return "\n\n".join(p for p in parts if p)


def render_report(
    results: Sequence[Result],
    logs: Mapping[str, str] | None = None,
    context: Mapping[str, str] | None = None,
    failures: Mapping[str, str] | None = None,
) -> str:
    """The whole report: run context, each result, then the printed output of benchmarks that
    write no result and the benchmarks that failed."""
    parts = [
        "# jetpool benchmark report",
        "Every figure is a ratio or a percentile measured in this run against a baseline of "
        "the same run (see bench/README.md).",
    ]
    if context:
        parts.append("\n".join(f"- {key}: {value}" for key, value in context.items()))
    parts += [render_result(r) for r in results]
    for name, text in (logs or {}).items():
        parts.append(f"## {name} (printed output)\n\n```text\n{text.rstrip()}\n```")
    if failures:
        parts.append(
            "## Failed\n\n" + "\n".join(f"- {name}: {why}" for name, why in failures.items())
        )
    return "\n\n".join(parts) + "\n"
