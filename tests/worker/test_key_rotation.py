"""Key rotation under load: real worker processes roll from keyring [A] to [B, A] mid-stream.

The rotation procedure of docs/worker.md: B is added to the workers' keyrings (second, then
first) and the workers are rolled before any publisher signs with B; tasks sealed with A that
are still queued run after the roll, tasks sealed with B run on the new workers, and a task
whose key id no keyring knows is dead-lettered as ``invalid`` naming that id.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS
from nats.js.client import JetStreamContext

from e2e.testbed.nats_server import NatsServer
from jetpool_cli.publishing import TaskOptions, build_task
from jetpool_protocol.dead_letter import DeadLetterReason
from jetpool_protocol.keyring import Key, Keyring, derive_key_id
from tests.worker.helpers import Pool, dead_letters, eventually, make_pool, stream_messages
from tests.worker.subprocess_worker import done_ids, kill, spawn_worker

pytestmark = pytest.mark.nats

BATCH = 60
SLEEP = 0.2
"""60 tasks x 0.2 s on 2 slots: the A backlog outlives the roll of the workers."""


def _b64(secret: bytes) -> str:
    return base64.b64encode(secret).decode()


async def _publish(
    js: JetStreamContext, pool: Pool, ids: list[str], signing: Keyring, encryption: Keyring
) -> None:
    """What `jetpool publish` sends: sealed with the keyrings' current keys."""
    options = TaskOptions(signing_keys=signing, encryption_keys=encryption)
    for task_id in ids:
        task = build_task(
            pool.subject(),
            json.dumps({"sleep": SLEEP}).encode(),
            task_id,
            created_at=datetime.now(UTC),
            options=options,
        )
        await js.publish(task.subject, task.payload, headers=task.headers)


def _wait(proc: subprocess.Popen[bytes], seconds: float) -> int | None:
    try:
        return proc.wait(seconds)
    except subprocess.TimeoutExpired:
        return None


async def test_tasks_sealed_before_a_key_rotation_still_run_after_it_and_unknown_keys_are_invalid(
    nc: NATS, nats_server: NatsServer, tmp_path: Path
) -> None:
    js = nc.jetstream()
    sign_a, enc_a, sign_b, enc_b = (os.urandom(32) for _ in range(4))
    sign_file, enc_file = tmp_path / "signing.key", tmp_path / "encryption.key"
    # Before: single bare keys, the pre-keyring format (ids derived from the keys).
    sign_file.write_text(_b64(sign_a) + "\n")
    enc_file.write_text(_b64(enc_a) + "\n")
    pool = await make_pool(
        js,
        nats_server.url,
        concurrency=2,
        signing_key_file=str(sign_file),
        encryption_key_file=str(enc_file),
        require_signed=True,
    )
    ring_a_sign, ring_a_enc = Keyring.single(sign_a), Keyring.single(enc_a)
    ring_ba_sign = Keyring((Key("b", sign_b), *ring_a_sign.keys))
    ring_ba_enc = Keyring((Key("b", enc_b), *ring_a_enc.keys))
    done, log = tmp_path / "done", tmp_path / "worker.log"
    token = uuid.uuid4().hex[:6]
    with_a = [f"a-{token}-{i}" for i in range(BATCH)]
    with_b = [f"b-{token}-{i}" for i in range(BATCH)]

    old = spawn_worker(pool.settings.model_copy(update={"worker_id": "old"}), done, log)
    new = None
    try:
        await _publish(js, pool, with_a, ring_a_sign, ring_a_enc)
        await eventually(lambda: len(done_ids(done)) >= 10, within=20, what="old worker at work")

        # The rotation: the Secret gains B as its first line and A as its second; workers roll.
        sign_file.write_text(f"b:{_b64(sign_b)}\n{_b64(sign_a)}\n")
        enc_file.write_text(f"b:{_b64(enc_b)}\n{_b64(enc_a)}\n")
        new = spawn_worker(pool.settings.model_copy(update={"worker_id": "new"}), done, log)
        old.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(_wait, old, 20) == 0, log.read_text()
        assert len(done_ids(done)) < BATCH, "the A backlog must outlive the roll"

        # Publishers move to B while the new worker is still draining A's backlog.
        await _publish(js, pool, with_b, ring_ba_sign, ring_ba_enc)
        await eventually(
            lambda: len(done_ids(done)) >= 2 * BATCH, within=60, what="every task done"
        )

        # A task sealed with a key no keyring lists: dead-lettered, the id named.
        stranger = Keyring((Key("c-unknown", os.urandom(32)),))
        await _publish(js, pool, [f"c-{token}"], stranger, ring_ba_enc)
        await eventually(
            lambda: _dead_letter_count(js, pool, 1), within=20, what="the unknown key's dead letter"
        )
        assert await stream_messages(js, pool) == 0
    finally:
        for proc in (old, new):
            if proc is not None:
                kill(proc, signal.SIGTERM)

    counts = Counter(done_ids(done))
    assert set(counts) == set(with_a) | set(with_b)
    assert all(n == 1 for n in counts.values()), [t for t, n in counts.items() if n > 1]
    [(_, record)] = await dead_letters(js, pool)
    assert record.task_id == f"c-{token}"
    assert record.reason is DeadLetterReason.INVALID
    assert "unknown key id 'c-unknown'" in record.error_message
    a_id = derive_key_id(sign_a)
    text = log.read_text()
    assert f"signing keys {a_id} (current {a_id})" in text
    assert f"signing keys b, {a_id} (current b)" in text


async def _dead_letter_count(js: JetStreamContext, pool: Pool, n: int) -> bool:
    return len(await dead_letters(js, pool)) == n
