"""`jetpool task` and `jetpool schedule` against pools that cannot serve them: one clear line
and exit 1, never a traceback (the happy paths run against real workers in
tests/e2e/test_task_lifecycle.py and tests/worker/test_task_lifecycle.py)."""

from __future__ import annotations

import pytest

from tests.cli.conftest import Pool

pytestmark = pytest.mark.nats


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


async def test_a_cron_nats_server_would_refuse_is_refused_with_its_rule(pool: Pool) -> None:
    result = await pool.cli("schedule", "add", "nightly", "--cron", "0 2 * * *")
    assert result.code == 1
    assert "6 fields" in one_line(result.err)


async def test_a_bad_schedule_name_is_refused(pool: Pool) -> None:
    result = await pool.cli("schedule", "add", "Night.Ly", "--every", "1m")
    assert result.code == 1
    assert "lowercase" in one_line(result.err)


@pytest.mark.parametrize(
    "argv",
    [
        ("task", "status", "t-1"),
        ("task", "result", "t-1"),
        ("task", "cancel", "t-1"),
    ],
)
async def test_task_commands_on_a_pool_without_task_state_say_so(
    pool: Pool, argv: tuple[str, ...]
) -> None:
    result = await pool.cli(*argv)
    assert result.code == 1
    assert "task-state bucket" in one_line(result.err)


@pytest.mark.parametrize(
    "argv",
    [("schedule", "list"), ("schedule", "delete", "nightly")],
)
async def test_schedule_commands_on_a_pool_without_schedules_say_so(
    pool: Pool, argv: tuple[str, ...]
) -> None:
    result = await pool.cli(*argv)
    assert result.code == 1
    assert "has no schedules" in one_line(result.err)


async def test_delayed_publish_needs_the_pool(pool: Pool) -> None:
    result = await pool.cli(
        "publish", pool.task_subject, "--data", "{}", "--delay", "5s", pool_flags=False
    )
    assert result.code == 2
    assert "-p POOL" in one_line(result.err)
