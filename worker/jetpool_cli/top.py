"""``jetpool top``: a live terminal view of pools and of one pool's workers, from NATS alone.

The workers' stats (``jetpool.stats.<ns>.<pool>``, every second) give workers, slots, rates and
pauses; each refresh also reads every pool's task stream (tasks stored: waiting or running),
dead-letter stream and breaker state (the control bucket). Folding is pure
(:mod:`jetpool_cli.top_view`); this module is the I/O and the rendering (rich).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from nats.js.errors import KeyNotFoundError, NotFoundError
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from jetpool_cli.connection import connect
from jetpool_cli.errors import EXIT_OK
from jetpool_cli.task_commands import connect_options
from jetpool_cli.top_view import PoolKey, PoolReading, PoolRow, TopModel, WorkerRow
from jetpool_protocol.control import BreakerState, ControlState
from jetpool_protocol.naming import CONTROL_BUCKET, STATS_SUBJECT_PREFIX, PoolNames, nats_token
from jetpool_protocol.stats import WorkerStats

if TYPE_CHECKING:
    from jetpool_cli.main import Io

Command = Callable[[argparse.Namespace, "Io"], Any]
NO_CONTROL_BUCKET = object()
"""The control bucket does not exist: every breaker is Closed (as workers read it)."""


def add_parser(
    commands: Any,
    common: Callable[[argparse.ArgumentParser], None],
    positive_float: Callable[[str], float],
) -> None:
    top = commands.add_parser(
        "top", help="live view of pools (and of one pool's workers with -p), refreshed each second"
    )
    top.add_argument(
        "-A",
        "--all-namespaces",
        action="store_true",
        help="every namespace's pools (default: the -n namespace)",
    )
    top.add_argument(
        "--interval", type=positive_float, default=1.0, metavar="SECONDS", help="refresh period"
    )
    top.add_argument(
        "--once",
        action="store_true",
        help="watch for a few refreshes (rates need two), print one view and exit",
    )
    common(top)


async def cmd_top(args: argparse.Namespace, io: Io) -> int:
    model = TopModel(window=max(10.0, 5 * args.interval))
    namespace = "*" if args.all_namespaces else nats_token(args.namespace)
    pool = nats_token(args.pool) if args.pool and not args.all_namespaces else "*"
    focus: PoolKey | None = (args.namespace, args.pool) if pool != "*" else None
    # --once prints plain text at a fixed width (scripts, docs); live redraws the terminal
    console = (
        Console(file=io.stdout, width=120, no_color=True, highlight=False)
        if args.once
        else Console(file=io.stdout)
    )
    async with connect(connect_options(args)) as nc:
        js = nc.jetstream(timeout=args.timeout)

        async def on_stats(msg: Any) -> None:
            with contextlib.suppress(ValueError):
                model.saw(WorkerStats.model_validate_json(msg.data), time.monotonic())

        sub = await nc.subscribe(f"{STATS_SUBJECT_PREFIX}.{namespace}.{pool}", cb=on_stats)
        try:
            if args.once:
                for _ in range(3):
                    await asyncio.sleep(args.interval)
                    await _refresh(js, model, focus)
                console.print(_view(model, focus, time.monotonic()))
                return EXIT_OK
            with Live(console=console, auto_refresh=False, screen=False) as live:
                while True:
                    await _refresh(js, model, focus)
                    live.update(_view(model, focus, time.monotonic()), refresh=True)
                    await asyncio.sleep(args.interval)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()


async def _refresh(js: Any, model: TopModel, focus: PoolKey | None) -> None:
    keys = [k for k in model.known() if focus is None or k == focus]
    if focus is not None and focus not in keys:
        keys.append(focus)
    control: Any
    try:
        control = await js.key_value(CONTROL_BUCKET)
    except NotFoundError:  # no bucket yet: no breaker was ever tripped
        control = NO_CONTROL_BUCKET
    except Exception:  # not readable (permissions, NATS): the state is unknown
        control = None
    readings = await asyncio.gather(*(_read_pool(js, control, key) for key in keys))
    for key, reading in zip(keys, readings, strict=True):
        model.read(key, reading)
    model.tick(time.monotonic())


async def _read_pool(js: Any, control: Any, key: PoolKey) -> PoolReading:
    """Tasks stored in the pool's task stream (waiting or running), its dead letters and its
    breaker state; what cannot be read stays unknown (custom stream names, permissions)."""
    names = PoolNames(*key)

    async def messages(stream: str) -> int | None:
        try:
            return int((await js.stream_info(stream)).state.messages)
        except Exception:
            return None

    async def breaker() -> str:
        if control is NO_CONTROL_BUCKET:
            return BreakerState.CLOSED.value
        if control is None:
            return "?"
        try:
            entry = await control.get(names.control_key)
        except KeyNotFoundError:
            return BreakerState.CLOSED.value  # no entry: the operator has never tripped it
        except Exception:
            return "?"
        try:
            return ControlState.model_validate_json(entry.value or b"{}").breaker.value
        except ValueError:
            return "?"

    backlog, dead, state = await asyncio.gather(
        messages(names.stream), messages(names.dead_letter_stream), breaker()
    )
    return PoolReading(backlog=backlog, dead_letters=dead, breaker=state)


def _number(value: float | int | None, fmt: str = "{:d}") -> str:
    return "-" if value is None else fmt.format(value)


def _pools_table(rows: list[PoolRow]) -> Table:
    table = Table(title="jetpool pools", title_justify="left", expand=False)
    for name in ("NAMESPACE", "POOL", "WORKERS", "BUSY", "BACKLOG", "RATE/S", "ERRORS"):
        table.add_column(name, justify="left" if name in ("NAMESPACE", "POOL") else "right")
    for name in ("BREAKER", "DLQ", "DLQ+", "PAUSED"):
        table.add_column(name, justify="right" if name != "BREAKER" else "left")
    for r in rows:
        breaker = r.breaker if r.breaker == "Closed" else f"[bold red]{r.breaker}[/]"
        errors = _number(r.error_rate, "{:.0%}")
        if r.error_rate:
            errors = f"[yellow]{errors}[/]"
        table.add_row(
            r.namespace,
            r.pool,
            str(r.workers),
            f"{r.in_flight}/{r.slots}",
            _number(r.backlog),
            _number(r.rate, "{:.1f}"),
            errors,
            breaker,
            _number(r.dead_letters),
            _number(r.dead_letter_growth),
            str(r.paused) if not r.paused else f"[yellow]{r.paused}[/]",
        )
    return table


def _workers_table(key: PoolKey, rows: list[WorkerRow]) -> Table:
    table = Table(title=f"workers of {key[0]}/{key[1]}", title_justify="left")
    for name in ("WORKER", "BUSY", "RATE/S", "FAILED", "STATE", "PULLED", "LINGERING"):
        table.add_column(name, justify="left" if name in ("WORKER", "STATE") else "right")
    for r in rows:
        state = r.state if r.state == "fetching" else f"[yellow]{r.state}[/]"
        table.add_row(
            r.worker,
            f"{r.in_flight}/{r.slots}",
            _number(r.rate, "{:.1f}"),
            str(r.failed),
            state,
            _number(r.pulled_ago, "{:.1f}s ago"),
            str(r.lingering),
        )
    return table


def _view(model: TopModel, focus: PoolKey | None, now: float) -> Group:
    pools = [r for r in model.pools(now) if focus is None or (r.namespace, r.pool) == focus]
    parts: list[Any] = [_pools_table(pools)]
    if focus is not None:
        parts.append(_workers_table(focus, model.workers(focus, now)))
    return Group(*parts)


COMMANDS: dict[tuple[str, str | None], Command] = {("top", None): cmd_top}
