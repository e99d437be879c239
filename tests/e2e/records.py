"""Reading the e2e handlers' record (a KV bucket, ``tests/e2e/handlers.py``).

Keys are listed from the bucket's stream (its per-subject counts), not through a KV watch or
``kv.keys()``: nats-py ends a watch's initial values by a consumer info that races the
deliveries, and under the full suite's load it ends early, with keys missing (a "nothing ran
twice" check would then pass for the wrong reason).
"""

from __future__ import annotations

import asyncio

from nats.js.kv import KeyValue


async def record_keys(kv: KeyValue, prefix: str) -> list[str]:
    """Every key of the bucket that starts with ``prefix``, without the prefix."""
    status = await kv.status()
    stream, subject_prefix = status.stream_info.config.name, f"$KV.{status.bucket}."
    js = kv._js  # nats-py keeps the bucket's JetStream context private
    info = await js.stream_info(stream, subjects_filter=f"{subject_prefix}{prefix}>")
    return [s.removeprefix(subject_prefix + prefix) for s in (info.state.subjects or {})]


async def recorded(kv: KeyValue, prefix: str) -> dict[str, float]:
    """``<prefix><id>`` -> the wall-clock seconds the handler recorded."""
    ids = await record_keys(kv, prefix)
    values: dict[str, float] = {}
    for start in range(0, len(ids), 200):
        chunk = ids[start : start + 200]
        entries = await asyncio.gather(*(kv.get(f"{prefix}{i}") for i in chunk))
        for task_id, entry in zip(chunk, entries, strict=True):
            values[task_id] = float(entry.value or b"0")
    return values
