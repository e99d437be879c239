"""Handlers the e2e suite's workers run (local provider: via PYTHONPATH=<repo>; kind: baked
into the handler image by e2e/kind/handlers.Dockerfile).

Completion and failure injection go through a NATS KV bucket (``JETPOOL_E2E_BUCKET``) on the
pool's own NATS server (with the worker's credentials and CA when the pool has them), so the
same tests work whether workers are local processes or pods:

* a finished task is recorded as key ``done.<task id>``; a task that finishes a second time
  (a redelivery after it had already run) also leaves ``again.<task id>``;
* while key ``FAIL`` exists, every task fails with :class:`InjectedFailure`.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl

import nats
from nats.js.errors import KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KeyValue

from jetpool_protocol.envelope import Task
from jetpool_protocol.naming import PoolNames

_bucket: KeyValue | None = None
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
                os.environ["JETPOOL_NATS_URL"],
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
