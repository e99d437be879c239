"""Pure helpers of the CLI: durations, tables, progress lines, subject filters and stats."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest

from jetpool_cli.dead_letters import RecordFilter, split_subject, summarize_subjects
from jetpool_cli.durations import format_duration, parse_duration
from jetpool_cli.output import render_table, truncate
from jetpool_cli.progress import Progress


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90),
        ("90s", 90),
        ("15m", 900),
        ("2h", 7200),
        ("7d", 604800),
        ("1h30m", 5400),
        ("1.5s", 1.5),
        ("250ms", 0.25),
    ],
)
def test_durations_parse_units_and_combinations(text: str, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "abc", "5x", "h5", "1h 30m", "-5"])
def test_malformed_durations_are_rejected_with_examples(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_durations_format_as_their_two_largest_units() -> None:
    assert format_duration(timedelta(days=3, hours=4, minutes=5)) == "3d4h"
    assert format_duration(timedelta(seconds=0.4)) == "0s"


def test_tables_align_columns_and_show_none_as_blank() -> None:
    table = render_table(["SEQ", "NAME"], [[1, "a"], [10, None]])
    assert table.splitlines() == ["SEQ  NAME", "1    a", "10"]


def test_truncate_flattens_newlines_and_marks_the_cut() -> None:
    assert truncate("line one\nline two", 10) == "line one…"
    assert truncate("short", 10) == "short"


def test_progress_redraws_at_most_once_per_interval() -> None:
    now = [0.0]
    out = io.StringIO()
    progress = Progress("published", out, enabled=True, total=10, clock=lambda: now[0])
    now[0] = 1.0
    progress.update(2)
    progress.update(3)  # same instant: skipped
    now[0] = 2.0
    progress.update(8)
    assert out.getvalue().count("\r") == 2
    assert "published 8/10 (4/s)" in out.getvalue()


def test_disabled_progress_writes_nothing() -> None:
    out = io.StringIO()
    progress = Progress("published", out, enabled=False)
    progress.update(1)
    progress.finish(1)
    assert out.getvalue() == ""


@pytest.mark.parametrize(
    ("flt", "subject"),
    [
        (RecordFilter(), "p.>"),
        (RecordFilter(reason="invalid"), "p.invalid.*"),
        (RecordFilter(error_type="pkg.mod.Error"), "p.*.pkg_mod_Error"),
        (RecordFilter(reason="expired", error_type="ExpiredTask"), "p.expired.ExpiredTask"),
    ],
)
def test_record_filters_become_subject_filters_like_the_worker_names_them(
    flt: RecordFilter, subject: str
) -> None:
    assert flt.subject("p") == subject


def test_subjects_split_into_reason_and_error_type_and_foreign_ones_are_marked() -> None:
    assert split_subject("jetpool.dlq.ns.pool", "jetpool.dlq.ns.pool.invalid.KeyError") == (
        "invalid",
        "KeyError",
    )
    assert split_subject("jetpool.dlq.ns.pool", "other.subject") == ("?", "?")


def test_stats_sum_per_subject_counts_by_reason_and_by_error_type() -> None:
    by_reason, by_error_type, pairs = summarize_subjects(
        "p", {"p.max_attempts.ValueError": 3, "p.invalid.ValueError": 1, "p.max_attempts.Oops": 2}
    )
    assert by_reason == {"max_attempts": 5, "invalid": 1}
    assert by_error_type == {"ValueError": 4, "Oops": 2}
    assert pairs[0] == ("max_attempts", "ValueError", 3)
    assert list(by_reason) == ["max_attempts", "invalid"]  # largest first
