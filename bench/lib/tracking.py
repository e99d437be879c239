"""Task state tracking for the throughput benchmarks: a pool's task-state KV bucket as the
operator makes it, and the worker settings that turn tracking on.

The same workload runs with tracking off (``task_state_bucket`` unset, what the benchmarks
measured before tracking existed), on (every task's final step written to the bucket), on
with the bucket in memory (``tracking.storage: Memory``) and on with results kept (one more
write per task). The bucket is the stream of the operator's own
plan for a pool with ``spec.tracking`` on (``nats_resources.plan(...).task_state``, added as
``ensure_plan`` adds it), and the two settings come from the operator's
``children.worker_settings`` for that spec, so a tracked bench worker is configured exactly as
a tracked pod. Only this module imports the operator.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any, Literal, get_args

from jetpool_operator.adapters.nats import _to_nats_stream
from jetpool_operator.api.v1alpha1 import WorkerPoolSpec
from jetpool_operator.core.children import PoolRef, worker_settings
from jetpool_operator.core.nats_resources import plan
from jetpool_protocol.naming import KV_STREAM_PREFIX

Tracking = Literal["off", "on", "memory", "results"]
TRACKING: tuple[Tracking, ...] = get_args(Tracking)
TRACKING_LABEL: dict[Tracking, str] = {
    "off": "tracking off",
    "on": "tracking on",
    "memory": "tracking on, bucket in memory",
    "results": "tracking on, results kept",
}
WRITES_PER_TASK: dict[Tracking, int] = {"off": 0, "on": 1, "memory": 1, "results": 2}
"""Bucket entries a succeeded short task leaves: its final state, plus its result."""
NAMESPACE = "bench"


def variants(text: str) -> list[Tracking]:
    """``--tracking`` as a list: ``off`` always first (the baseline of every ratio), each
    variant once; unknown names are an error."""
    chosen: list[Tracking] = ["off"]
    for name in (v.strip() for v in text.split(",")):
        if not name:
            continue
        if name not in TRACKING:
            raise ValueError(f"unknown tracking variant {name!r}; known: {', '.join(TRACKING)}")
        variant: Tracking = name
        if variant not in chosen:
            chosen.append(variant)
    return chosen


def rotated(items: Sequence[Tracking], by: int) -> list[Tracking]:
    """``items`` started at ``by`` (mod len): rounds rotate the variants so that none is
    always measured first (or right after a fill)."""
    if not items:
        return []
    k = by % len(items)
    return [*items[k:], *items[:k]]


def pool_spec(tracking: Tracking) -> WorkerPoolSpec:
    """The smallest pool spec with tracking as asked (the rest is defaults)."""
    return WorkerPoolSpec.model_validate(
        {
            "image": "unused",
            "handler": "bench.lib.handlers:work",
            "nats": {"url": "nats://unused:4222"},
            "tracking": {
                "enabled": tracking != "off",
                "storage": "Memory" if tracking == "memory" else "File",
                "results": {"enabled": tracking == "results"},
            },
        }
    )


def settings_for(pool: str, tracking: Tracking) -> dict[str, Any]:
    """The ``WorkerSettings`` fields the operator sets for a pool with this tracking."""
    made = worker_settings(PoolRef(pool, NAMESPACE, uid=""), pool_spec(tracking))
    if tracking == "off":
        return {"task_state_bucket": None, "task_results_max_bytes": None}
    return {
        "task_state_bucket": made.task_state_bucket,
        "task_results_max_bytes": made.task_results_max_bytes,
    }


@contextlib.asynccontextmanager
async def task_state(js: Any, stream: str, tracking: Tracking) -> AsyncIterator[dict[str, Any]]:
    """The pool of ``stream`` with this tracking: its task-state bucket made as the operator
    makes it (nothing for ``off``) and deleted after; yields the worker settings to add."""
    pool = stream.lower()
    settings = settings_for(pool, tracking)
    if tracking == "off":
        yield settings
        return
    desired = plan(NAMESPACE, pool, pool_spec(tracking)).task_state
    assert desired is not None
    assert desired.name == KV_STREAM_PREFIX + settings["task_state_bucket"]
    await js.add_stream(_to_nats_stream(desired))
    try:
        yield settings
    finally:
        with contextlib.suppress(Exception):
            await js.delete_stream(desired.name)


async def entries(js: Any, settings: dict[str, Any]) -> int:
    """Entries in the bucket of these settings (0 without tracking)."""
    bucket = settings.get("task_state_bucket")
    if bucket is None:
        return 0
    return int((await js.stream_info(KV_STREAM_PREFIX + bucket)).state.messages)
