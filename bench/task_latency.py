"""Publish -> done latency of a real jetpool-worker process at fixed rates and under a backlog,
against a bare nats-py process at the same rates.

"Done" is the moment the server receives the task's ack: the benchmark subscribes to
``$JS.ACK.<stream>.>`` (core NATS hands it a copy of every ack, whose subject carries the
stream sequence) and matches it to the publish time. For each rate (``--rates``) a fresh
stream and one consumer process (``--concurrency``, no-op handler), baseline then worker.
Backlog: ``--backlog`` tasks are already in the stream when the consumer is let go, and new
tasks are published at ``--backlog-rate`` from that moment; both the backlog's wait (start ->
done) and the new tasks' publish -> done are reported.

    .venv/bin/python bench/task_latency.py [--rates 100,500,2000] [--seconds 3]
        [--backlog 20000] [--backlog-rate 500] [--concurrency 32] [--rounds 1]
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "worker")]

from bench.lib import common, plots  # noqa: E402
from bench.lib.common import SIDE_LABEL, SIDES, Side, log  # noqa: E402
from bench.lib.report import Cell, Table  # noqa: E402
from bench.lib.stats import latency_ms, ratio  # noqa: E402

PERCENTILES = ("p50", "p95", "p99")


async def latencies(
    env: common.Nats,
    side: Side,
    rate: float,
    seconds: float,
    concurrency: int,
    logs: Path,
    backlog: int = 0,
) -> tuple[list[float], list[float]]:
    """(the backlog's start -> ack, publish -> ack of the tasks published at ``rate``), in s.

    Without a backlog the consumer idles (pull requests out) before publishing starts; with
    one, publishing starts as the consumer is let go.
    """
    async with (
        common.fresh_stream(env.js, "R") as stream,
        common.Fleet(env, stream, side, logs, concurrency=concurrency) as fleet,
        common.AckWatch(env.nc, stream) as acks,
    ):
        await common.fill(env.js, f"{stream}.noop", backlog)
        await fleet.ready()
        go = time.perf_counter()
        await fleet.go()
        if not backlog:
            await asyncio.sleep(0.5)  # both sides have pull requests out
        sent = await common.publish_at(env.js, f"{stream}.noop", rate, seconds, backlog + 1)
        total = backlog + len(sent)
        await common.until(lambda: len(acks.acked) >= total, 120, what="every ack")
        waited = [acks.acked[seq] - go for seq in range(1, backlog + 1)]
        return waited, [acks.acked[seq] - t for seq, t in sent.items()]


def float_list(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


async def main() -> None:
    parser = common.parser(__doc__)
    parser.add_argument("--rates", type=float_list, default=[100.0, 500.0, 2000.0])
    parser.add_argument("--seconds", type=float, default=3.0, help="publishing time per rate")
    parser.add_argument("--backlog", type=int, default=20_000)
    parser.add_argument("--backlog-rate", type=float, default=500.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds (pooled)")
    run = common.begin("task_latency", parser)
    args, logs = run.args, run.logs
    samples: dict[str, dict[Side, list[float]]] = defaultdict(lambda: {"raw": [], "worker": []})
    scenarios = [f"{r:g}/s" for r in args.rates]
    backlog_new = f"{args.backlog_rate:g}/s behind {args.backlog:,} tasks"
    backlog_wait = f"the {args.backlog:,} tasks' own wait"
    async with common.nats_env() as env:
        for round_ in range(args.rounds):
            for rate, name in zip(args.rates, scenarios, strict=True):
                for side in SIDES:
                    _, lat = await latencies(env, side, rate, args.seconds, args.concurrency, logs)
                    samples[name][side] += lat
                    log.info(
                        "round %d/%d %s %s: p50/p95/p99 %s ms",
                        round_ + 1, args.rounds, name, side,
                        " / ".join(f"{v:.2f}" for v in latency_ms(lat).values()),
                    )  # fmt: skip
            for side in SIDES:
                waited, new = await latencies(
                    env, side, args.backlog_rate, args.seconds, args.concurrency, logs,
                    args.backlog,
                )  # fmt: skip
                samples[backlog_wait][side] += waited
                samples[backlog_new][side] += new
                log.info(
                    "round %d/%d backlog %s: drained in %.2f s, new tasks p99 %.1f ms",
                    round_ + 1, args.rounds, side, max(waited), latency_ms(new)["p99"],
                )  # fmt: skip
    rows: list[list[Cell]] = []
    summary: dict[str, dict[Side, dict[str, float]]] = {}
    for name in [*scenarios, backlog_new, backlog_wait]:
        summary[name] = {side: latency_ms(samples[name][side]) for side in SIDES}
        for side in SIDES:
            ms = summary[name][side]
            rows.append([name, SIDE_LABEL[side], len(samples[name][side]), *ms.values()])
        worker, raw = summary[name]["worker"], summary[name]["raw"]
        rows.append(
            [name, "worker / baseline", None, *(ratio(worker[p], raw[p]) for p in PERCENTILES)]
        )
    table = Table(
        f"publish -> ack received by the server, ms (concurrency {args.concurrency}, "
        f"{args.rounds} round(s) pooled)",
        ["scenario", "consumer", "tasks", "p50 ms", "p95 ms", "p99 ms"],
        rows,
        note=f"'{backlog_wait}' counts from the moment the consumer was let go.",
    )
    shown = [*scenarios, backlog_new]
    figure = plots.save_panels(
        args.out / "task_latency.png",
        f"publish -> done latency (ms, log scale); backlog: {backlog_new}",
        [
            plots.Panel(
                p,
                [*scenarios, "backlog"],
                {SIDE_LABEL[s]: [summary[n][s][p] for n in shown] for s in SIDES},
                "ms",
                log_y=True,
            )
            for p in PERCENTILES
        ],
        bars=True,
    )
    run.finish(
        "Publish -> done latency: jetpool worker process vs bare nats-py process",
        "Latency from publishing a no-op task to the server receiving its ack, at fixed "
        "publish rates and behind a pre-filled backlog. Baseline: a bare nats-py pull+ack "
        "process at the same concurrency and rate, in the same run.",
        [table],
        [figure],
    )


if __name__ == "__main__":
    asyncio.run(main())
