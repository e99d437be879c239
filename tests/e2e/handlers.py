"""Handlers the e2e suite's workers run (local provider: via PYTHONPATH=<repo>; kind: baked
into the handler image by e2e/kind/handlers.Dockerfile).

Completion and failure injection go through a NATS KV bucket (``JETPOOL_E2E_BUCKET``) on the
pool's own NATS server (with the worker's credentials and CA when the pool has them), so the
same tests work whether workers are local processes or pods:

* a finished task is recorded as key ``done.<task id>``; a task that finishes a second time
  (a redelivery after it had already run) also leaves ``again.<task id>``;
* while key ``FAIL`` exists, every task fails with :class:`InjectedFailure`.

:func:`lifecycle` keeps its own ledger of runs (``runs.<id>``, one count per handler start)
and of how each run ended (``end.<id>``: returned, raised, cancelled), which the lifecycle
tests compare with what jetpool reports.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import time

import nats
from nats.js.errors import KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KeyValue
from opentelemetry import trace

from jetpool_protocol.envelope import Task
from jetpool_protocol.naming import PoolNames
from jetpool_protocol.worker_settings import server_urls

_bucket: KeyValue | None = None
_tracer = trace.get_tracer("tests.e2e.handlers")
_lock = asyncio.Lock()


class InjectedFailure(RuntimeError):
    """Raised while the FAIL key exists."""


async def bucket() -> KeyValue:
    global _bucket  # noqa: PLW0603 - one connection per worker process
    async with _lock:
        if _bucket is None:
            # The worker's own NATS settings (credentials and CA mounted by the operator).
            creds = os.environ.get("JETPOOL_NATS_CREDENTIALS_FILE") or None
            ca = os.environ.get("JETPOOL_NATS_TLS_CA_FILE")
            # A per-pool NATS user may subscribe only to the pool's own inbox prefix.
            pool = PoolNames(os.environ["JETPOOL_POOL_NAMESPACE"], os.environ["JETPOOL_POOL_NAME"])
            nc = await nats.connect(
                server_urls(os.environ["JETPOOL_NATS_URL"]),
                user_credentials=creds,
                tls=ssl.create_default_context(cafile=ca) if ca else None,
                inbox_prefix=pool.inbox_prefix,
            )
            _bucket = await nc.jetstream().key_value(os.environ["JETPOOL_E2E_BUCKET"])
    return _bucket


async def record(task: Task) -> None:
    kv = await bucket()
    try:
        await kv.get("FAIL")
    except NotFoundError:  # never set, or deleted (KeyDeletedError is not a KeyNotFoundError)
        pass
    else:
        raise InjectedFailure(f"failure injected for {task.id}")
    work = json.loads(task.payload) if task.payload else {}
    await asyncio.sleep(float(work.get("sleep", 0)))
    try:
        await kv.create(f"done.{task.id}", b"1")
    except KeyWrongLastSequenceError:
        await kv.put(f"again.{task.id}", b"1")


async def paced(task: Task) -> None:
    """Stamps its start (``start.<id>``: wall-clock seconds; a second start of a task leaves
    ``restart.<id>``), sleeps ``{"sleep": s}``, then records ``done.<id>``: the record the
    flow-control tests measure rates and concurrency with."""
    kv = await bucket()
    stamp = repr(time.time()).encode()
    try:
        await kv.create(f"start.{task.id}", stamp)
    except KeyWrongLastSequenceError:
        await kv.put(f"restart.{task.id}", stamp)
    work = json.loads(task.payload) if task.payload else {}
    await asyncio.sleep(float(work.get("sleep", 0)))
    await kv.put(f"done.{task.id}", repr(time.time()).encode())


async def _count_run(kv: KeyValue, task_id: str) -> int:
    """This run's number in the ledger (compare-and-set, so concurrent runs count apart)."""
    key = f"runs.{task_id}"
    while True:
        try:
            entry = await kv.get(key)
        except NotFoundError:
            try:
                await kv.create(key, b"1")
                return 1
            except KeyWrongLastSequenceError:
                continue
        runs = int(entry.value or b"0") + 1
        try:
            await kv.update(key, str(runs).encode(), last=entry.revision)
            return runs
        except KeyWrongLastSequenceError:
            continue


async def lifecycle(task: Task) -> object:
    """``{"return": X}`` returns X; ``{"raise": msg}`` always raises; ``{"fail_once": true}``
    raises on its first run by the ledger's count; ``{"sleep": s}`` sleeps first (cancellable).
    Runs inside its own span (``e2e.lifecycle``), as traced user code does."""
    with _tracer.start_as_current_span("e2e.lifecycle", attributes={"task.id": task.id}):
        return await _lifecycle(task)


async def _lifecycle(task: Task) -> object:
    kv = await bucket()
    work = json.loads(task.payload) if task.payload else {}
    run = await _count_run(kv, task.id)
    try:
        await asyncio.sleep(float(work.get("sleep", 0)))
    except asyncio.CancelledError:
        await kv.put(f"end.{task.id}", b"cancelled")
        raise
    if "raise" in work or (work.get("fail_once") and run == 1):
        await kv.put(f"end.{task.id}", b"raised")
        raise InjectedFailure(str(work.get("raise", "the first run fails")))
    await kv.put(f"end.{task.id}", b"returned")
    return work.get("return")


_HELD: list[bytearray] = []


async def hog(task: Task) -> None:
    """Holds ``{"hold_mb": n}`` MiB for the rest of the process's life (pushing the worker
    over its memory guard), then records ``held.<id>`` with the wall-clock time."""
    work = json.loads(task.payload) if task.payload else {}
    block = bytearray(int(work.get("hold_mb", 0)) * 1024 * 1024)
    block[::4096] = b"\x01" * len(block[::4096])  # touch every page: resident, not just mapped
    _HELD.append(block)
    await (await bucket()).put(f"held.{task.id}", repr(time.time()).encode())
