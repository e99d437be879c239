"""A worker on a secure NATS: creds + CA from mounted files; bad creds stop it at once."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NATS

from e2e.testbed.nats_auth import NatsAuth
from e2e.testbed.nats_server import NatsServer
from jetpool_protocol.worker_settings import WorkerSettings
from jetpool_worker import consumer_loop
from jetpool_worker.consumer_loop import Worker
from tests.worker import handlers
from tests.worker.helpers import eventually, make_pool, publish_task, running_worker
from tests.worker.subprocess_worker import REPO_ROOT

pytestmark = pytest.mark.nats


@pytest.fixture
async def tenant_b(secure_nats_server: NatsServer, nats_auth: NatsAuth) -> AsyncIterator[NATS]:
    nc = await nats.connect(
        secure_nats_server.url,
        tls=secure_nats_server.tls_context(),
        user_credentials=str(nats_auth.user("tenant-b").creds_file),
    )
    yield nc
    await nc.close()


async def test_a_worker_with_the_mounted_creds_and_ca_runs_tasks(
    tenant_b: NATS, secure_nats_server: NatsServer, nats_auth: NatsAuth
) -> None:
    js = tenant_b.jetstream()
    pool = await make_pool(
        js,
        secure_nats_server.url,
        nats_credentials_file=str(nats_auth.user("tenant-b").creds_file),
        nats_tls_ca_file=str(nats_auth.tls.ca_file),
    )
    ids = [f"s-{uuid.uuid4().hex[:10]}" for _ in range(5)]
    async with running_worker(pool.settings) as worker:
        for task_id in ids:
            await publish_task(js, pool, task_id)
        await eventually(lambda: all(handlers.DONE[i] == 1 for i in ids), what="tasks done")
        assert worker.counters.succeeded == len(ids)


def run_worker_process(settings: WorkerSettings) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{REPO_ROOT}:{REPO_ROOT / 'worker'}"}
    env.update(settings.to_env())
    return subprocess.run(
        [sys.executable, "-m", "jetpool_worker"],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("", "the credentials file is empty"),
        ("not a creds file\n", "not a NATS credentials (.creds) file"),
        ("SEED_ONLY", "no '-----BEGIN NATS USER JWT-----' block"),
    ],
    ids=["empty", "garbage", "seed-only"],
)
def test_a_bad_credentials_file_stops_the_worker_with_exit_2_and_one_json_line(
    tmp_path: Path, nats_auth: NatsAuth, content: str, problem: str
) -> None:
    seed = nats_auth.user("tenant-a").seed
    if content == "SEED_ONLY":
        content = f"-----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
    creds = tmp_path / "nats.creds"
    creds.write_text(content)
    settings = WorkerSettings(
        pool_name="bad-creds",
        handler="tests.worker.handlers:handle",
        nats_url="tls://127.0.0.1:1",
        nats_credentials_file=str(creds),
        stream="S",
        consumer="workers",
        dead_letter_stream="S-dlq",
        dead_letter_subject_prefix="jetpool.dlq.default.bad-creds",
        control_key="default.bad-creds",
        stats_subject="jetpool.stats.default.bad-creds",
        metrics_port=0,
    )
    proc = run_worker_process(settings)
    assert proc.returncode == 2, proc.stderr
    lines = [json.loads(line) for line in proc.stderr.splitlines()]
    assert len(lines) == 1, proc.stderr
    line = lines[0]
    assert (line["level"], line["event"]) == ("error", "invalid_credentials")
    assert line["pool"] == "bad-creds"
    assert line["credentials_file"] == str(creds)
    assert problem in line["problem"]
    assert seed not in proc.stderr


async def test_a_worker_that_does_not_trust_the_server_says_why_and_still_stops_at_once(
    secure_nats_server: NatsServer,
    nats_auth: NatsAuth,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """nats-py never returns from a connect whose TLS verification failed: attempts are
    bounded, the cause is logged, and a stop request is honoured while connecting."""
    monkeypatch.setattr(consumer_loop, "CONNECT_ATTEMPT_SECONDS", 1.0)
    settings = WorkerSettings(
        pool_name="no-ca",
        handler="tests.worker.handlers:handle",
        nats_url=secure_nats_server.url,
        nats_credentials_file=str(nats_auth.user("tenant-a").creds_file),
        stream="S",
        consumer="workers",
        dead_letter_stream="S-dlq",
        dead_letter_subject_prefix="jetpool.dlq.default.no-ca",
        control_key="default.no-ca",
        stats_subject="jetpool.stats.default.no-ca",
        metrics_port=0,
    )
    worker = Worker(settings)
    stop = asyncio.Event()
    run = asyncio.create_task(worker.run(stop))
    await eventually(
        lambda: "CERTIFICATE_VERIFY_FAILED" in caplog.text, within=10, what="the TLS cause logged"
    )
    assert not worker.connected
    stop.set()
    await asyncio.wait_for(run, timeout=3)
