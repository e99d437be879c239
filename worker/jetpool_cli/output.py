"""Rendering: aligned plain-text tables (rich) for people, JSON for machines."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from jetpool_protocol.envelope import format_time

TABLE_WIDTH = 100_000
"""Wider than any table: rich shrinks or wraps columns that do not fit the console."""


def truncate(text: str, width: int) -> str:
    """One line, at most ``width`` characters, with an ellipsis when cut."""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: max(width - 1, 0)].rstrip() + "…"


def render_table(
    headers: Sequence[str], rows: Sequence[Sequence[object]], *, color: bool = False
) -> str:
    """Columns two spaces apart, left-aligned, one row per line, ``None`` as blank.

    Scripts and tests read these tables, so cells are never wrapped, truncated or read as rich
    markup, and nothing but a bold header (only with ``color``, for a terminal) is styled.
    """
    table = Table(
        box=None,
        padding=(0, 1),
        pad_edge=False,
        show_edge=False,
        header_style="bold" if color else None,
    )
    for header in headers:
        table.add_column(_cell(header), no_wrap=True, overflow="ignore")
    for row in rows:
        table.add_row(*(_cell(c) for c in row))
    buffer = io.StringIO()
    console = Console(
        file=buffer,
        width=TABLE_WIDTH,
        force_terminal=color,
        color_system="auto" if color else None,
        highlight=False,
        markup=False,
        emoji=False,
    )
    console.print(table)
    return "\n".join(line.rstrip() for line in buffer.getvalue().splitlines())


def _cell(value: object) -> Text:
    """A literal, one-line cell: ``[x]`` stays text, a newline cannot split a row."""
    return Text(" ".join(("" if value is None else str(value)).splitlines()))


def _default(value: object) -> Any:
    if isinstance(value, datetime):
        return format_time(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def to_json(value: object) -> str:
    return json.dumps(value, indent=2, default=_default, ensure_ascii=False)


def when(value: datetime | None) -> str:
    return format_time(value) if value is not None else "-"
