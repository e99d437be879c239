"""Human durations on the command line (``90s``, ``15m``, ``2h``, ``7d``, ``1h30m``)."""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def parse_duration(text: str) -> timedelta:
    """Parse ``1h30m``-style durations; a bare number means seconds. Raises ``ValueError``."""
    value = text.strip().lower()
    if not value:
        raise ValueError("empty duration")
    try:
        seconds = float(value)
    except ValueError:
        pos = 0
        seconds = 0.0
        for match in _PART.finditer(value):
            if match.start() != pos:
                break
            seconds += float(match.group(1)) * _UNITS[match.group(2)]
            pos = match.end()
        if pos != len(value):
            raise ValueError(f"bad duration {text!r} (examples: 90s, 15m, 2h, 7d, 1h30m)") from None
    if seconds < 0:
        raise ValueError(f"duration must not be negative: {text!r}")
    return timedelta(seconds=seconds)


def format_duration(delta: timedelta) -> str:
    """Compact rendering, largest two units: ``3d4h``, ``12m5s``, ``0s``."""
    total = int(delta.total_seconds())
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, total = divmod(total, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts[:2]) or "0s"
