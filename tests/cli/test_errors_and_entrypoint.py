"""Expected failures are one line and an exit code; the installed console script works."""

from __future__ import annotations

import asyncio
import io
import os
import sys
from pathlib import Path

import pytest

from e2e.testbed.nats_server import NatsServer
from e2e.testbed.processes import free_port
from jetpool_cli.main import main, main_async
from tests.cli.conftest import Pool

pytestmark = pytest.mark.nats


async def _run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = await main_async(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


async def test_an_unreachable_server_is_one_line_and_exit_1() -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    code, out, err = await _run("dlq", "stats", "-p", "x", "--nats-url", url, "--timeout", "0.5")
    assert code == 1
    assert out == ""
    assert err == f"jetpool: error: cannot connect to NATS at {url}: no server answered\n"


async def test_a_missing_dead_letter_stream_names_the_stream(nats_server: NatsServer) -> None:
    code, _, err = await _run(
        "dlq", "list", "-n", "nope", "-p", "absent", "--nats-url", nats_server.url
    )
    assert code == 1
    assert err == (
        "jetpool: error: stream 'jetpool-nope_absent-tasks-dlq' not found (dead-letter stream)\n"
    )


async def test_dlq_commands_need_a_pool_or_a_stream(nats_server: NatsServer) -> None:
    code, _, err = await _run("dlq", "list", "--nats-url", nats_server.url)
    assert code == 2
    assert "name the pool (-n NAMESPACE -p POOL) or the stream (--dlq-stream)" in err


async def test_a_missing_credentials_file_is_reported_before_connecting() -> None:
    code, _, err = await _run("dlq", "stats", "-p", "x", "--creds", "/nonexistent.creds")
    assert code == 1
    assert "credentials file '/nonexistent.creds' does not exist" in err


async def test_the_task_stream_override_also_names_its_dead_letter_stream(pool: Pool) -> None:
    await pool.dead_letter(pool.record("s"))
    result = await pool.cli(
        "dlq", "stats", "--stream", pool.names.stream, "-o", "json", pool_flags=False
    )
    assert result.code == 0, result.err
    assert result.json()["stream"] == pool.names.dead_letter_stream


def test_usage_errors_exit_2_with_argparse_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dlq", "list", "--reason", "bogus"]) == 2
    assert "invalid choice: 'bogus'" in capsys.readouterr().err
    assert main(["publish", "tasks.x"]) == 2
    assert "one of the arguments --data --file --stdin-lines is required" in (
        capsys.readouterr().err
    )


async def _script(*argv: str, env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "jetpool"),
        *argv,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    return int(proc.returncode or 0), out.decode(), err.decode()


async def test_the_installed_console_script_publishes_and_reports_errors(pool: Pool) -> None:
    env = {**os.environ, "JETPOOL_NATS_URL": pool.url}
    code, out, err = await _script(
        "publish",
        pool.task_subject,
        "--data",
        "{}",
        "--id",
        "via-script",
        "-o",
        "json",
        "-n",
        pool.names.namespace,
        "-p",
        pool.names.pool,
        env=env,
    )
    assert (code, err) == (0, "")
    assert '"published": 1' in out
    assert [m.headers["Jetpool-Task-Id"] for m in await pool.task_messages()] == ["via-script"]
    code, out, err = await _script("dlq", "stats", "-n", "nope", "-p", "absent", env=env)
    assert code == 1
    assert (
        err
        == "jetpool: error: stream 'jetpool-nope_absent-tasks-dlq' not found (dead-letter stream)\n"
    )
