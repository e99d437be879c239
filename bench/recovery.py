"""Recovery of real jetpool-worker processes: a worker SIGKILLed mid-task, and a nats-server
SIGKILLed and restarted on the same store. The handler's own ledger (``BENCH_LEDGER``) says
which tasks ran and when, so every round also checks that no task was lost.

* **Worker killed**: a worker takes ``--tasks`` tasks whose first attempt hangs; a second
  worker is running idle; the first is SIGKILLed at a random moment of its heartbeat cycle.
  The consumer redelivers each task ``ack_wait`` after its lease was last renewed (the
  worker's ``in_progress`` heartbeat every ``ack_wait / 3``, seen on ``$JS.ACK``), so the
  floor of kill -> done lies between 2/3 and 1 ``ack_wait``. Reported: kill -> every task done
  by the survivor, as a ratio to ``ack_wait``, and done - lease expiry (the part jetpool adds).
* **Server restarted**: one worker works through 50 ms I/O tasks; the nats-server is
  SIGKILLed and started again on the same port and store. Reported: server up -> the first
  task started after it (consumption resumed), as a ratio to the worker's reconnect wait
  (0.5 s, fixed in the worker), and then that every task was done.

    .venv/bin/python bench/recovery.py [--ack-wait 2] [--tasks 8] [--kill-rounds 3]
        [--restart-rounds 2]
"""

from __future__ import annotations

import asyncio
import random
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "worker")]

from bench.lib import common, plots  # noqa: E402
from bench.lib.common import log  # noqa: E402
from bench.lib.handlers import IO_SECONDS, LEDGER_ENV, Entry, read_ledger  # noqa: E402
from bench.lib.report import Cell, Table  # noqa: E402
from bench.lib.stats import median, percentile, ratio  # noqa: E402

RECONNECT_WAIT = 0.5
"""nats-py ``reconnect_time_wait`` the worker connects with (``consumer_loop._connect``)."""


def done_ids(entries: list[Entry]) -> list[str]:
    return [e.task_id for e in entries if e.event == "done"]


@dataclass
class KillRound:
    recovery: float
    """SIGKILL -> the last in-flight task done by the survivor (s)."""
    beyond_lease: list[float]
    """Per task: done - (last lease renewal + ack_wait), s."""
    lost: int
    duplicates: int


async def kill_round(env: common.Nats, ack_wait: float, tasks: int, logs: Path) -> KillRound:
    settings = {"ack_wait_seconds": ack_wait, "task_timeout_seconds": 3600}
    ids = [f"h{i}" for i in range(tasks)]
    async with common.fresh_stream(env.js, "K", ack_wait=ack_wait, max_deliver=5) as stream:
        ledgers = {tag: logs / f"{stream}-{tag}.ledger" for tag in ("victim", "survivor")}

        def fleet(tag: str) -> common.Fleet:
            return common.Fleet(
                env, stream, "worker", logs, concurrency=tasks, held=False, tag=tag,
                settings=settings, process_env={LEDGER_ENV: str(ledgers[tag])},
            )  # fmt: skip

        async def all_taken() -> bool:
            info = await env.js.consumer_info(stream, common.CONSUMER)
            return int(info.num_ack_pending) == tasks

        async with common.AckWatch(env.nc, stream, time.time) as acks, fleet("victim") as victim:
            await victim.ready()
            await common.fill(env.js, f"{stream}.hang", tasks, "h")
            await common.until(all_taken, 30, 0.02, "every task taken by the victim")
            async with fleet("survivor") as survivor:
                await survivor.ready()
                await asyncio.sleep(random.uniform(0, ack_wait / 3))
                killed = time.time()
                victim.stop(signal.SIGKILL)
                await common.until(
                    lambda: set(done_ids(read_ledger(ledgers["survivor"]))) >= set(ids),
                    10 * ack_wait + 10, 0.01, "every task done by the survivor",
                )  # fmt: skip
                await common.until(lambda: len(acks.acked) >= tasks, 10, what="the survivor's acks")
                left = await common.stream_messages(env.js, stream)
    started = {e.task_id: e.at for e in read_ledger(ledgers["victim"]) if e.event == "start"}
    done = {e.task_id: e.at for e in read_ledger(ledgers["survivor"]) if e.event == "done"}
    beyond = []
    for seq, task_id in enumerate(ids, start=1):
        renewed = max(acks.progress.get(seq, 0.0), started.get(task_id, 0.0))
        beyond.append(done[task_id] - (renewed + ack_wait))
    all_done = done_ids(read_ledger(ledgers["survivor"]))
    return KillRound(
        recovery=max(done.values()) - killed,
        beyond_lease=beyond,
        lost=len(set(ids) - set(all_done)) + left,
        duplicates=len(all_done) - len(set(all_done)),
    )


@dataclass
class RestartRound:
    down: float
    """SIGKILL -> the restarted server listens (s)."""
    resumed: float
    """Server listening -> the first task started after it (s)."""
    drained: float
    """Server listening -> every task done (s)."""
    lost: int
    duplicates: int
    events: list[float]
    """Task completions, s from the start of the round (for the plot)."""
    marks: tuple[float, float, float]
    """Kill, up and resumed, s from the start of the round."""


async def restart_round(
    env: common.Nats, tasks: int, concurrency: int, before: float, logs: Path
) -> RestartRound:
    ids = {f"s{i}" for i in range(tasks)}
    async with common.fresh_stream(env.js, "S", ack_wait=3.0) as stream:
        ledger = logs / f"{stream}.ledger"
        async with common.Fleet(
            env, stream, "worker", logs, concurrency=concurrency,
            process_env={LEDGER_ENV: str(ledger)},
        ) as fleet:  # fmt: skip
            await common.fill(env.js, f"{stream}.io", tasks, "s")
            await fleet.ready()
            begin = time.time()
            await fleet.go()
            await asyncio.sleep(before)
            killed = time.time()
            env.server.stop(signal.SIGKILL)
            await asyncio.to_thread(env.server.start)
            up = time.time()

            def started_after_up() -> list[float]:
                return [e.at for e in read_ledger(ledger) if e.event == "start" and e.at > up]

            await common.until(
                lambda: bool(started_after_up()), 60, 0.01, "a task started after the restart"
            )
            resumed = min(started_after_up())
            await common.until(
                lambda: set(done_ids(read_ledger(ledger))) >= ids, 120, 0.05, "every task done"
            )
            drained = max(e.at for e in read_ledger(ledger) if e.event == "done")
            await common.until(
                lambda: _empty(env, stream), 30, 0.1, "the stream empty (every task acked)"
            )
    done = done_ids(read_ledger(ledger))
    return RestartRound(
        down=up - killed,
        resumed=resumed - up,
        drained=drained - up,
        lost=len(ids - set(done)),
        duplicates=len(done) - len(set(done)),
        events=[e.at - begin for e in read_ledger(ledger) if e.event == "done"],
        marks=(killed - begin, up - begin, resumed - begin),
    )


async def _empty(env: common.Nats, stream: str) -> bool:
    try:
        return await common.stream_messages(env.js, stream) == 0
    except Exception:  # the client is still reconnecting
        return False


async def main() -> None:
    parser = common.parser(__doc__)
    parser.add_argument("--ack-wait", type=float, default=2.0, help="consumer ack_wait (s)")
    parser.add_argument("--tasks", type=int, default=8, help="tasks in flight at the kill")
    parser.add_argument("--kill-rounds", type=int, default=3)
    parser.add_argument("--restart-rounds", type=int, default=2)
    parser.add_argument("--restart-concurrency", type=int, default=32)
    parser.add_argument("--before", type=float, default=1.5, help="work before the restart (s)")
    run = common.begin("recovery", parser)
    args, logs = run.args, run.logs
    kills: list[KillRound] = []
    restarts: list[RestartRound] = []
    async with common.nats_env() as env:
        for i in range(args.kill_rounds):
            kills.append(await kill_round(env, args.ack_wait, args.tasks, logs))
            log.info(
                "worker kill %d/%d: every task done %.2f s after the kill (%.2f x ack_wait)",
                i + 1, args.kill_rounds, kills[-1].recovery, kills[-1].recovery / args.ack_wait,
            )  # fmt: skip
        # About three times the work done before the restart, so it spans the outage.
        tasks = int(args.restart_concurrency / IO_SECONDS * args.before * 3)
        for i in range(args.restart_rounds):
            restarts.append(
                await restart_round(env, tasks, args.restart_concurrency, args.before, logs)
            )
            r = restarts[-1]
            log.info(
                "server restart %d/%d: down %.2f s, resumed %.2f s after it was up, "
                "drained %.2f s after", i + 1, args.restart_rounds, r.down, r.resumed, r.drained,
            )  # fmt: skip
    beyond = [b for k in kills for b in k.beyond_lease]
    recovery = median([k.recovery for k in kills])
    kill_rows: list[list[Cell]] = [
        ["kill -> every in-flight task done (s, median)", recovery],
        ["... / ack_wait", ratio(recovery, args.ack_wait)],
        ["... / ack_wait, worst round", max(k.recovery for k in kills) / args.ack_wait],
        ["done - lease expiry, p50 (ms)", percentile(beyond, 50) * 1000],
        ["done - lease expiry, max (ms)", max(beyond) * 1000],
        [
            "tasks lost / run twice",
            f"{sum(k.lost for k in kills)} / {sum(k.duplicates for k in kills)}",
        ],
    ]
    resumed = median([r.resumed for r in restarts])
    restart_rows: list[list[Cell]] = [
        ["SIGKILL -> server listening again (s, median)", median([r.down for r in restarts])],
        ["server up -> first task started (s, median)", resumed],
        ["... / reconnect wait (0.5 s)", ratio(resumed, RECONNECT_WAIT)],
        ["... / reconnect wait, worst round", max(r.resumed for r in restarts) / RECONNECT_WAIT],
        ["server up -> every task done (s, median)", median([r.drained for r in restarts])],
        [
            "tasks lost / run twice",
            f"{sum(r.lost for r in restarts)} / {sum(r.duplicates for r in restarts)}",
        ],
    ]
    tables = [
        Table(
            f"worker SIGKILLed with {args.tasks} tasks in flight; ack_wait {args.ack_wait:g} s, "
            f"{args.kill_rounds} rounds",
            ["measure", "value"],
            kill_rows,
            note="The lease is renewed every ack_wait / 3 (heartbeat), so the redelivery floor "
            "is 2/3 to 1 ack_wait after the kill; 'done - lease expiry' is what follows it "
            "(the server's redelivery, the survivor's pull, the handler, the ledger).",
        ),
        Table(
            f"nats-server SIGKILLed and restarted on its store; {args.restart_concurrency} x "
            f"50 ms I/O tasks in flight, {args.restart_rounds} rounds",
            ["measure", "value"],
            restart_rows,
        ),
    ]
    r0 = restarts[0]
    figure = plots.save_timelines(
        args.out / "recovery.png",
        "nats-server SIGKILL and restart (first round)",
        [
            plots.Timeline(
                "tasks done per 0.1 s (handler ledger)",
                {"jetpool worker": r0.events},
                0.1,
                spans=[plots.Span(r0.marks[0], r0.marks[1], "server down")],
                marks=[(r0.marks[2], "first task after restart")],
            )
        ],
    )
    run.finish(
        "Recovery: worker SIGKILL and nats-server restart",
        "Time for work to go on after a crash, relative to the setting that bounds it: the "
        "consumer's ack_wait for a killed worker, the worker's reconnect wait for a restarted "
        "server. Outcomes come from the handler's own ledger.",
        tables,
        [figure],
    )


if __name__ == "__main__":
    asyncio.run(main())
