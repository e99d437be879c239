"""What priority levels cost a worker: one in-process worker drains no-op tasks from a plain
pool and from a laned pool (levels high 9 / low 1, half the tasks each), both made by the
operator's own plan with task tracking on (laned pools need it), alternating in the same run;
the ratio laned / plain says what the stride-shared sweeps over two consumers cost. Runs in
about a minute:

    .venv/bin/python bench/lanes.py [--tasks 10000] [--rounds 5]
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "worker"), str(ROOT / "operator")]

from bench.lib import common  # noqa: E402
from bench.lib.report import Table  # noqa: E402
from jetpool_operator.adapters.nats import ensure_plan  # noqa: E402
from jetpool_operator.api.v1alpha1 import WorkerPoolSpec  # noqa: E402
from jetpool_operator.core.children import PoolRef, worker_settings  # noqa: E402
from jetpool_operator.core.nats_resources import plan  # noqa: E402
from jetpool_protocol.envelope import Task, task_headers  # noqa: E402
from jetpool_protocol.lanes import level_subject  # noqa: E402
from jetpool_protocol.naming import PoolNames  # noqa: E402
from jetpool_worker.consumer_loop import Worker  # noqa: E402
from jetpool_worker.handlers import Handler  # noqa: E402

NAMESPACE = "bench"
LEVELS = {"levels": [{"name": "high", "weight": 9}, {"name": "low", "weight": 1}], "default": "low"}


async def noop(task: Task) -> None:
    return None


async def drain(env: common.Nats, laned: bool, tasks: int) -> float:
    """A fresh pool (plain or laned) filled with ``tasks`` no-op tasks, drained by one worker;
    tasks per second from the moment it may fetch until all have succeeded."""
    pool = f"p{uuid.uuid4().hex[:8]}"
    body: dict[str, Any] = {"image": "unused", "handler": "unused:f", "nats": {"url": env.url}}
    body["concurrency"] = 128
    if laned:
        body["priorities"] = LEVELS
    spec = WorkerPoolSpec.model_validate(body)
    await ensure_plan(env.nc, plan(NAMESPACE, pool, spec))
    base = PoolNames(NAMESPACE, pool).task_base
    subjects = (
        [level_subject(base, "high", "work"), level_subject(base, "low", "work")]
        if laned
        else [f"{base}.work"]
    )
    now = datetime.now(UTC)
    for start in range(0, tasks, 500):
        await asyncio.gather(
            *(
                env.js.publish(
                    subjects[i % len(subjects)],
                    b"{}",
                    headers=task_headers(task_id=f"t{i}", created_at=now),
                )
                for i in range(start, min(tasks, start + 500))
            )
        )
    settings = worker_settings(PoolRef(pool, NAMESPACE, uid=""), spec).model_copy(
        update={"nats_url": env.url, "metrics_port": 0, "worker_id": f"w-{pool}", "fetch_batch": 64}
    )
    worker = Worker(settings, handler=Handler.wrap(noop))
    stop = asyncio.Event()
    run = asyncio.create_task(worker.run(stop))
    await common.until(lambda: worker.consuming and worker.gate.known, interval=0.002)
    started = time.perf_counter()
    await common.until(lambda: worker.counters.succeeded >= tasks, within=300, interval=0.002)
    elapsed = time.perf_counter() - started
    stop.set()
    await run
    return tasks / elapsed


def _each(values: list[float], fmt: str) -> str:
    return " ".join(fmt.format(v) for v in values)


async def main() -> None:
    parser = common.parser(__doc__)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    run = common.begin("lanes", parser)
    args = run.args
    logging.getLogger("jetpool_worker").setLevel(logging.WARNING)
    plain_runs: list[float] = []
    laned_runs: list[float] = []
    async with common.nats_env() as env:
        for round_ in range(args.rounds):  # alternating, so drift on a shared box hits both
            order = [False, True] if round_ % 2 == 0 else [True, False]
            for is_laned in order:
                runs = laned_runs if is_laned else plain_runs
                runs.append(await drain(env, is_laned, args.tasks))
            common.log.info(
                "round %d/%d: plain %.0f/s, laned %.0f/s",
                round_ + 1,
                args.rounds,
                plain_runs[-1],
                laned_runs[-1],
            )
    plain_rate, laned_rate = statistics.median(plain_runs), statistics.median(laned_runs)
    ratios = [lane / flat for flat, lane in zip(plain_runs, laned_runs, strict=True)]
    table = Table(
        f"throughput, {args.rounds} alternating rounds of {args.tasks} no-op tasks (one "
        "in-process worker, concurrency 128, fetch batch 64, tracking on)",
        ["pool", "median tasks/s", "runs"],
        [
            ["plain (one consumer)", plain_rate, " ".join(f"{v:.0f}" for v in plain_runs)],
            [
                "laned (high 9 / low 1, half each)",
                laned_rate,
                " ".join(f"{v:.0f}" for v in laned_runs),
            ],
            ["ratio laned / plain", laned_rate / plain_rate, " ".join(f"{r:.2f}" for r in ratios)],
        ],
    )
    run.finish(
        "Priority levels: what the sweeps over several consumers cost one worker",
        "One in-process jetpool Worker drains a pre-filled plain pool and a pre-filled laned pool "
        "(two levels, half the tasks each), both made by the operator's plan, alternating.",
        [table],
    )


if __name__ == "__main__":
    asyncio.run(main())
