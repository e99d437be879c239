"""Metrics, health endpoints, periodic stats, the memory guard, JSON logs, configuration errors."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator

import pytest
from nats.aio.client import Client as NATS

from e2e.testbed.nats_server import NatsServer
from e2e.testbed.processes import free_port
from jetpool_protocol.stats import WorkerStats
from jetpool_worker.logs import JsonFormatter
from jetpool_worker.main import EXIT_CONFIG, main
from tests.worker import handlers
from tests.worker.helpers import eventually, make_pool, publish_task, running_worker
from tests.worker.subprocess_worker import REPO_ROOT


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


@pytest.mark.nats
async def test_metrics_and_health_endpoints_report_what_the_worker_did(
    nc: NATS, nats_server: NatsServer
):
    js = nc.jetstream()
    port = free_port()
    pool = await make_pool(js, nats_server.url, metrics_port=port, retry_max_attempts=1)
    base = f"http://127.0.0.1:{port}"
    ok_id, bad_id = f"m-{uuid.uuid4().hex[:8]}", f"m-{uuid.uuid4().hex[:8]}"
    async with running_worker(pool.settings) as worker:
        await publish_task(js, pool, ok_id)
        await publish_task(js, pool, bad_id, {"raise": "ValueError"})
        await eventually(
            lambda: worker.counters.dead_lettered == 1 and worker.counters.succeeded == 1
        )
        status, body = await asyncio.to_thread(_get, base + "/metrics")
        assert status == 200
        assert 'jetpool_tasks_succeeded_total{namespace="test"' in body
        assert 'error_type="ValueError",namespace="test"' in body
        assert "jetpool_tasks_dead_lettered_total" in body
        assert 'reason="max_attempts"' in body
        assert "jetpool_task_duration_seconds_bucket" in body
        assert (await asyncio.to_thread(_get, base + "/healthz"))[0] == 200
        assert (await asyncio.to_thread(_get, base + "/readyz"))[0] == 200


@pytest.mark.nats
async def test_stats_are_published_periodically_on_the_stats_subject(
    nc: NATS, nats_server: NatsServer
):
    js = nc.jetstream()
    pool = await make_pool(js, nats_server.url, stats_interval_seconds=0.2)
    received: list[WorkerStats] = []

    async def collect(msg) -> None:
        received.append(WorkerStats.model_validate_json(msg.data))

    sub = await nc.subscribe(pool.settings.stats_subject, cb=collect)
    task_id = f"s-{uuid.uuid4().hex[:8]}"
    async with running_worker(pool.settings):
        await publish_task(js, pool, task_id)
        await eventually(lambda: any(s.succeeded == 1 for s in received), what="stats with success")
    await sub.unsubscribe()
    last = received[-1]
    assert last.worker == pool.settings.worker_id
    assert last.pool == pool.settings.pool_name
    # what health needs to judge the worker (core/worker_signals.py)
    assert last.concurrency == pool.settings.concurrency
    assert last.pulled_ago_seconds is not None
    assert last.pulled_ago_seconds < 5
    assert last.control_read_ago_seconds is not None
    assert last.control_read_ago_seconds < 10
    assert last.lingering_threads == 0


@pytest.mark.nats
async def test_the_memory_guard_pauses_fetching_above_the_limit_and_resumes_below_ninety_percent(
    nc: NATS, nats_server: NatsServer
):
    js = nc.jetstream()
    pool = await make_pool(js, nats_server.url, memory_limit_bytes=1000)
    rss = {"value": 2000}
    task_id = f"mem-{uuid.uuid4().hex[:8]}"
    async with running_worker(pool.settings, rss_reader=lambda: rss["value"]) as worker:
        await eventually(lambda: worker.stats().paused_reason == "memory", what="memory pause")
        await publish_task(js, pool, task_id)
        paused = [
            line
            for line in worker.metrics.render().decode().splitlines()
            if line.startswith("jetpool_fetching_paused{") and 'reason="memory"' in line
        ]
        assert paused
        assert paused[0].endswith(" 1.0")
        rss["value"] = 950  # below the limit but above 90 %: still paused
        with pytest.raises(AssertionError):
            await eventually(lambda: handlers.DONE[task_id] == 1, within=0.8)
        rss["value"] = 800
        await eventually(lambda: handlers.DONE[task_id] == 1, what="task after resume")


def test_json_logs_are_one_object_per_line_with_extras():
    record = logging.makeLogRecord(
        {"msg": "task %s done", "args": ("t1",), "levelname": "INFO", "name": "x", "task_id": "t1"}
    )
    line = json.loads(JsonFormatter({"pool": "p"}).format(record))
    assert line["message"] == "task t1 done"
    assert line["task_id"] == "t1"
    assert line["pool"] == "p"
    assert line["level"] == "info"


def test_bad_configuration_exits_with_code_2_and_names_the_variable(capsys):
    assert main([], env={"JETPOOL_POOL_NAME": "p", "JETPOOL_CONCURRENCY": "zero"}) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert "JETPOOL_CONCURRENCY" in err
    assert "JETPOOL_HANDLER" in err


@pytest.fixture
def root_logging() -> Iterator[None]:
    """``main`` configures the root logger; give the next tests theirs back."""
    root = logging.getLogger()
    handlers_before, level_before = root.handlers[:], root.level
    yield
    root.handlers[:], root.level = handlers_before, level_before


BASE_ENV = {
    "JETPOOL_POOL_NAME": "p",
    "JETPOOL_HANDLER": "tests.worker.handlers:handle",
    "JETPOOL_STREAM": "s",
    "JETPOOL_CONSUMER": "c",
    "JETPOOL_DEAD_LETTER_STREAM": "d",
    "JETPOOL_DEAD_LETTER_SUBJECT_PREFIX": "jetpool.dlq.x",
    "JETPOOL_CONTROL_KEY": "x.p",
    "JETPOOL_STATS_SUBJECT": "jetpool.stats.x.p",
    "JETPOOL_NATS_URL": "nats://127.0.0.1:1",
    "JETPOOL_LOG_FORMAT": "text",
}


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"JETPOOL_REQUIRE_SIGNED": "true"}, "signing_key_file"),
        ({"JETPOOL_HEARTBEAT_SECONDS": "60", "JETPOOL_ACK_WAIT_SECONDS": "60"}, "heartbeat"),
        ({"JETPOOL_HEARTBEAT_SECONDS": "90", "JETPOOL_ACK_WAIT_SECONDS": "60"}, "heartbeat"),
        ({"JETPOOL_LOG_LEVEL": "LOUD"}, "JETPOOL_LOG_LEVEL"),
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "zipkin"),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
            "4318",
        ),
    ],
    ids=[
        "require-signed-without-key",
        "heartbeat-equal-ack-wait",
        "heartbeat-over",
        "log-level",
        "unknown-trace-exporter",
        "otlp-over-grpc",
    ],
)
def test_inconsistent_settings_exit_with_code_2_and_say_why(
    capsys: pytest.CaptureFixture[str], root_logging: None, extra: dict[str, str], named: str
):
    assert main([], env={**BASE_ENV, **extra}) == EXIT_CONFIG
    assert named in capsys.readouterr().err


def test_a_taken_metrics_port_exits_with_code_2_and_names_the_port(
    capsys: pytest.CaptureFixture[str], root_logging: None
):
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main([], env={**BASE_ENV, "JETPOOL_METRICS_PORT": str(port)})
    assert code == EXIT_CONFIG
    assert f"JETPOOL_METRICS_PORT={port}" in capsys.readouterr().err


def test_an_unimportable_handler_exits_with_code_2():
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": f"{REPO_ROOT}:{REPO_ROOT / 'worker'}",
        "JETPOOL_POOL_NAME": "p",
        "JETPOOL_HANDLER": "no_such_module:handle",
        "JETPOOL_STREAM": "s",
        "JETPOOL_CONSUMER": "c",
        "JETPOOL_DEAD_LETTER_STREAM": "d",
        "JETPOOL_DEAD_LETTER_SUBJECT_PREFIX": "jetpool.dlq.x",
        "JETPOOL_CONTROL_KEY": "x.p",
        "JETPOOL_STATS_SUBJECT": "jetpool.stats.x.p",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "jetpool_worker"],
        env=env,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == EXIT_CONFIG
    assert b"no_such_module" in proc.stderr
