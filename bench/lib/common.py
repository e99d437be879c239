"""What every benchmark needs: a nats-server, task streams, worker and baseline processes, and
the run's out directory.

A benchmark is a CLI (``bench/<name>.py``) that starts its own nats-server, measures the
jetpool side and its baseline alternately in the same run, prints its tables and saves a
:class:`bench.lib.report.Result` (plus PNG plots) in ``--out`` (default ``bench/out``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import nats
from nats.aio.msg import Msg
from nats.js import api

from bench.lib.report import Result, Table, render_table
from e2e.testbed.nats_server import NatsServer
from jetpool_protocol.control import BreakerState, ControlState
from jetpool_protocol.worker_settings import WorkerSettings

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "bench" / "out"
CONSUMER = "workers"
CONTROL_BUCKET = "jetpool-control"
"""The workers' default control bucket (``WorkerSettings.control_bucket``)."""
HANDLER = "bench.lib.handlers:work"

log = logging.getLogger("bench")
Side = Literal["raw", "worker"]
SIDES: tuple[Side, Side] = ("raw", "worker")
SIDE_LABEL: dict[Side, str] = {"raw": "bare nats-py", "worker": "jetpool worker"}
_spawned: list[subprocess.Popen[bytes]] = []


# ---------------------------------------------------------------------------- CLI plumbing


def parser(description: str | None) -> argparse.ArgumentParser:
    """An argument parser with the flags every benchmark has (``--out``)."""
    p = argparse.ArgumentParser(
        description=(description or "").split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--out", type=Path, default=OUT, help="where results and plots go")
    return p


def cli_logging() -> None:
    """Progress lines on stderr (``HH:MM:SS message``); the clients' own noise stays quiet."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", force=True
    )
    logging.getLogger("nats").setLevel(logging.CRITICAL)


@dataclass
class Run:
    """One benchmark CLI run: its arguments, its process logs' directory, its start."""

    name: str
    args: argparse.Namespace
    started: float = field(default_factory=time.monotonic)

    @property
    def logs(self) -> Path:
        return Path(self.args.out) / "logs" / self.name

    def finish(
        self, title: str, about: str, tables: list[Table], figures: Sequence[str | None] = ()
    ) -> None:
        """Print the tables and save the result (see :func:`finish`)."""
        result = Result(
            name=self.name,
            title=title,
            about=about,
            command=command_line(),
            tables=tables,
            figures=[f for f in figures if f],
        )
        finish(result, Path(self.args.out), self.started)


def begin(name: str, arguments: argparse.ArgumentParser) -> Run:
    """Parse the command line and set up progress logging."""
    args = arguments.parse_args()
    cli_logging()
    return Run(name, args)


def finish(result: Result, out: Path, started: float) -> None:
    """Print the result's tables and save it."""
    result.seconds = time.monotonic() - started
    for table in result.tables:
        print("\n" + render_table(table), flush=True)
    path = result.save(out)
    log.info("%s done in %.0f s; result in %s", result.name, result.seconds, path)


def command_line() -> str:
    """How this benchmark was started, for the report."""
    script = Path(sys.argv[0]).resolve()
    shown = script.relative_to(ROOT) if script.is_relative_to(ROOT) else script
    return " ".join([".venv/bin/python", str(shown), *sys.argv[1:]])


# ---------------------------------------------------------------------------- NATS


@dataclass
class Nats:
    """A benchmark's own nats-server and one client connection to it."""

    server: NatsServer
    nc: Any
    js: Any
    kv: Any

    @property
    def url(self) -> str:
        return self.server.url


async def connect(url: str) -> Any:
    """A client that reconnects at once (the recovery benchmark restarts the server)."""
    return await nats.connect(
        url, max_reconnect_attempts=-1, reconnect_time_wait=0.05, name="bench"
    )


def pin_apart(server: NatsServer) -> bool:
    """Put nats-server on CPU 0 and this process on the others, so a ratio measures the
    client's own cost rather than two processes taking turns on the same cores (in
    production the server has its own machines). False where that cannot be done."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(cpus) < 2 or server.process is None:
        return False
    os.sched_setaffinity(server.process.pid, {cpus[0]})
    for tid in os.listdir(f"/proc/{server.process.pid}/task"):  # every Go thread
        with contextlib.suppress(OSError):
            os.sched_setaffinity(int(tid), {cpus[0]})
    os.sched_setaffinity(0, set(cpus[1:]))
    return True


@contextlib.asynccontextmanager
async def nats_env(*, pin: bool = False) -> AsyncIterator[Nats]:
    """Start a nats-server with JetStream and the control bucket; stop everything after.
    ``pin``: the server on a CPU of its own (:func:`pin_apart`)."""
    server = NatsServer().start()
    before = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    if pin and not pin_apart(server):
        log.warning("cannot pin nats-server to a CPU of its own here; running unpinned")
    nc = None
    try:
        nc = await connect(server.url)
        js = nc.jetstream()
        kv = await js.create_key_value(bucket=CONTROL_BUCKET)
        yield Nats(server, nc, js, kv)
    finally:
        kill_spawned()
        if nc is not None:
            with contextlib.suppress(Exception):
                await nc.close()
        server.close()
        if before is not None:
            os.sched_setaffinity(0, before)


def new_name(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


async def make_stream(
    js: Any,
    name: str,
    *,
    ack_wait: float = 30.0,
    max_deliver: int = 10,
    max_ack_pending: int = 20_000,
) -> None:
    """A WorkQueue stream ``name`` on ``name.>``, its durable pull consumer and its DLQ stream
    (``name-dlq`` on ``dlq.name.>``), as the operator makes them."""
    await js.add_stream(
        api.StreamConfig(
            name=name, subjects=[f"{name}.>"], retention=api.RetentionPolicy.WORK_QUEUE
        )
    )
    await js.add_stream(name=f"{name}-dlq", subjects=[f"dlq.{name}.>"])
    await js.add_consumer(
        name,
        api.ConsumerConfig(
            durable_name=CONSUMER,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=ack_wait,
            max_deliver=max_deliver,
            max_ack_pending=max_ack_pending,
        ),
    )


async def delete_stream(js: Any, name: str) -> None:
    for stream in (name, f"{name}-dlq"):
        with contextlib.suppress(Exception):
            await js.delete_stream(stream)


@contextlib.asynccontextmanager
async def fresh_stream(js: Any, prefix: str, **config: Any) -> AsyncIterator[str]:
    """A new stream (:func:`make_stream`) named ``prefix`` + a random suffix, deleted after."""
    name = new_name(prefix)
    await make_stream(js, name, **config)
    try:
        yield name
    finally:
        await delete_stream(js, name)


async def fill(js: Any, subject: str, count: int, id_prefix: str = "t") -> None:
    """Publish ``count`` tasks quickly (async publish, bounded window of PubAcks)."""
    window = []
    for i in range(count):
        window.append(
            await js.publish_async(subject, b"{}", headers={"Jetpool-Task-Id": f"{id_prefix}{i}"})
        )
        if len(window) >= 2000:
            await asyncio.gather(*window)
            window.clear()
    await asyncio.gather(*window)


async def publish_at(
    js: Any, subject: str, rate: float, seconds: float, first_seq: int = 1
) -> dict[int, float]:
    """Publish ``rate`` tasks a second for ``seconds`` on a fixed schedule; returns the send
    time (``perf_counter``) of each by stream sequence, checked to be the publish order (one
    publisher): sequences ``first_seq``, ``first_seq + 1``..."""
    total = int(rate * seconds)
    sent: list[float] = []
    acks = []
    start = time.perf_counter()
    for i in range(total):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        sent.append(time.perf_counter())
        acks.append(await js.publish_async(subject, b"{}", headers={"Jetpool-Task-Id": f"p{i}"}))
    stored = [a.seq for a in await asyncio.gather(*acks)]
    if stored != list(range(first_seq, first_seq + total)):
        raise RuntimeError("stream sequences are not the publish order")
    return dict(zip(stored, sent, strict=True))


async def stream_messages(js: Any, stream: str) -> int:
    """Tasks still in a WorkQueue stream (an ack removes a task)."""
    return int((await js.stream_info(stream)).state.messages)


async def until(
    condition: Callable[[], bool | Awaitable[bool]],
    within: float = 60.0,
    interval: float = 0.01,
    what: str = "condition",
) -> None:
    """Poll a condition owned by someone else (a worker, the server) until it holds."""
    deadline = time.monotonic() + within
    while True:
        value = condition()
        if not isinstance(value, bool):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} within {within:g} s")
        await asyncio.sleep(interval)


class AckWatch:
    """When the server received each ack of a stream: core NATS hands a second connection a
    copy of every ack on ``$JS.ACK.<stream>.>``, whose subject carries the stream sequence.
    Also keeps the last ``+WPI`` (in progress) per sequence."""

    def __init__(
        self, nc: Any, stream: str, clock: Callable[[], float] = time.perf_counter
    ) -> None:
        self.nc, self.stream, self.clock = nc, stream, clock
        self.acked: dict[int, float] = {}
        self.progress: dict[int, float] = {}
        self._sub: Any = None

    async def _on_ack(self, msg: Msg) -> None:
        now = self.clock()
        seq = int(msg.subject.split(".")[5])
        if msg.data in (b"", b"+ACK"):
            self.acked.setdefault(seq, now)
        elif msg.data.startswith(b"+WPI"):
            self.progress[seq] = now

    async def __aenter__(self) -> AckWatch:
        self._sub = await self.nc.subscribe(f"$JS.ACK.{self.stream}.>", cb=self._on_ack)
        await self.nc.flush()
        return self

    async def __aexit__(self, *_: object) -> None:
        with contextlib.suppress(Exception):
            await self._sub.unsubscribe()


def control(state: BreakerState, epoch: int, reason: str = "") -> bytes:
    return (
        ControlState(breaker=state, epoch=epoch, since=datetime.now(UTC), reason=reason)
        .model_dump_json()
        .encode()
    )


# ---------------------------------------------------------------------------- processes


def worker_settings(url: str, stream: str, worker_id: str, **extra: Any) -> WorkerSettings:
    """Settings of a bench worker on the stream made by :func:`make_stream`."""
    return WorkerSettings.model_validate(
        {
            "pool_name": stream.lower(),
            "worker_id": worker_id,
            "handler": HANDLER,
            "nats_url": url,
            "stream": stream,
            "consumer": CONSUMER,
            "dead_letter_stream": f"{stream}-dlq",
            "dead_letter_subject_prefix": f"dlq.{stream}",
            "control_bucket": CONTROL_BUCKET,
            "control_key": f"bench.{stream}",
            "stats_subject": f"jetpool.stats.bench.{stream}",
            "stats_interval_seconds": 0.25,
            "metrics_port": 0,
            "log_format": "text",
            "log_level": "WARNING",
            **extra,
        }
    )


def spawn(argv: list[str], env: dict[str, str], log_file: Path) -> subprocess.Popen[bytes]:
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as out:
        proc = subprocess.Popen(
            argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True
        )
    _spawned.append(proc)
    return proc


def _base_env(extra: dict[str, str] | None, pythonpath: list[Path]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JETPOOL_")}
    env["PYTHONPATH"] = os.pathsep.join(str(p) for p in pythonpath)
    env.update(extra or {})
    return env


def spawn_worker(
    settings: WorkerSettings, log_file: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """A real ``jetpool-worker`` process (``python -m jetpool_worker``), configured by env."""
    full = _base_env(env, [ROOT, ROOT / "worker"])
    full.update(settings.to_env())
    return spawn([sys.executable, "-m", "jetpool_worker"], full, log_file)


def spawn_raw(
    url: str, stream: str, concurrency: int, ready: str, go: str, log_file: Path
) -> subprocess.Popen[bytes]:
    """A bare nats-py consumer process (:mod:`bench.lib.raw_consumer`)."""
    argv = [sys.executable, "-m", "bench.lib.raw_consumer", "--url", url, "--stream", stream]
    argv += ["--concurrency", str(concurrency), "--ready", ready, "--go", go]
    return spawn(argv, _base_env(None, [ROOT]), log_file)


def kill(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def kill_spawned() -> None:
    """Every process a benchmark started and did not stop yet (on any exit)."""
    while _spawned:
        kill(_spawned.pop())


def tail(path: Path, lines: int = 15) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def rss_bytes(pid: int) -> int:
    """Resident set size of a process (``VmRSS`` in ``/proc/<pid>/status``; Linux)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise ValueError(f"no VmRSS for process {pid}")


class Fleet:
    """``processes`` consumers of one side on one stream, held until :meth:`go`.

    Workers are held by their circuit breaker (the control key says Open until ``go`` writes
    Closed; ``held=False`` writes nothing) and count as ready once their stats arrive;
    baseline processes announce themselves and wait for a message. So both sides start from
    the same moment, connected, bound and idle. ``tag`` tells fleets of one stream apart.
    """

    def __init__(
        self,
        env: Nats,
        stream: str,
        side: Side,
        logs: Path,
        *,
        processes: int = 1,
        concurrency: int = 1,
        held: bool = True,
        tag: str = "w",
        settings: dict[str, Any] | None = None,
        process_env: dict[str, str] | None = None,
    ) -> None:
        self.env, self.stream, self.side, self.logs = env, stream, side, logs
        self.size, self.concurrency, self.held, self.tag = processes, concurrency, held, tag
        self.settings, self.process_env = settings or {}, process_env
        self.procs: list[subprocess.Popen[bytes]] = []
        self.names: list[str] = []
        self.seen: set[str] = set()
        self._sub: Any = None
        self._ready_subject = f"bench.ready.{stream}"
        self._go_subject = f"bench.go.{stream}"

    def settings_of(self, index: int) -> WorkerSettings:
        return worker_settings(
            self.env.url,
            self.stream,
            f"{self.stream.lower()}-{self.tag}{index}",
            concurrency=self.concurrency,
            **self.settings,
        )

    async def _on_ready(self, msg: Msg) -> None:
        if self.side == "worker":
            self.seen.add(json.loads(msg.data)["worker"])
        else:
            self.seen.add(msg.data.decode())

    async def start(self) -> Fleet:
        nc = self.env.nc
        if self.side == "worker":
            first = self.settings_of(0)
            if self.held:
                await self.env.kv.put(first.control_key, control(BreakerState.OPEN, 1, "held"))
            self._sub = await nc.subscribe(first.stats_subject, cb=self._on_ready)
        else:
            self._sub = await nc.subscribe(self._ready_subject, cb=self._on_ready)
        await nc.flush()
        for i in range(self.size):
            log_file = self._log_file(i)
            if self.side == "worker":
                settings = self.settings_of(i)
                self.procs.append(spawn_worker(settings, log_file, self.process_env))
                self.names.append(settings.worker_id)
            else:
                proc = spawn_raw(
                    self.env.url,
                    self.stream,
                    self.concurrency,
                    self._ready_subject,
                    self._go_subject,
                    log_file,
                )
                self.procs.append(proc)
                self.names.append(f"raw-{proc.pid}")
        return self

    def _log_file(self, index: int) -> Path:
        return self.logs / f"{self.stream}-{self.side}-{self.tag}{index}.log"

    def _check_alive(self) -> None:
        for i, proc in enumerate(self.procs):
            if proc.poll() is not None:
                raise RuntimeError(
                    f"{self.side} process {i} exited with {proc.returncode}:\n"
                    + tail(self._log_file(i))
                )

    async def ready(self, within: float = 60.0) -> None:
        def all_seen() -> bool:
            self._check_alive()
            return self.seen.issuperset(self.names)

        await until(all_seen, within, 0.02, f"{self.size} ready {self.side} processes")

    async def go(self) -> None:
        if self.side == "worker":
            if self.held:
                key = self.settings_of(0).control_key
                await self.env.kv.put(key, control(BreakerState.CLOSED, 2, "go"))
        else:
            await self.env.nc.publish(self._go_subject, b"go")
            await self.env.nc.flush()

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def stop(self, sig: int = signal.SIGKILL) -> None:
        for proc in self.procs:
            kill(proc, sig)
            with contextlib.suppress(ValueError):
                _spawned.remove(proc)

    async def __aenter__(self) -> Fleet:
        return await self.start()

    async def __aexit__(self, *_: object) -> None:
        self.stop()
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
