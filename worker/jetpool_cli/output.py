"""Rendering: aligned plain-text tables for people, JSON for machines."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from jetpool_protocol.envelope import format_time


def truncate(text: str, width: int) -> str:
    """One line, at most ``width`` characters, with an ellipsis when cut."""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: max(width - 1, 0)].rstrip() + "…"


def render_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers], *[["" if c is None else str(c) for c in r] for r in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    )


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
