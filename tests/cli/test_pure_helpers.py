"""Pure helpers of the CLI: durations, tables, progress lines, subject filters and stats."""

from __future__ import annotations

import gc
import io
import re
from datetime import timedelta

import pytest

from jetpool_cli.dead_letters import RecordFilter, split_subject, summarize_subjects
from jetpool_cli.durations import format_duration, parse_duration
from jetpool_cli.output import render_table, truncate
from jetpool_cli.progress import Progress

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
HIDE_CURSOR, SHOW_CURSOR = "\x1b[?25l", "\x1b[?25h"


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


def test_a_table_without_rows_is_its_header() -> None:
    assert render_table(["SEQ", "NAME"], []) == "SEQ  NAME"


def test_wide_tables_are_never_wrapped_or_truncated() -> None:
    long = "x" * 400
    table = render_table(["A", "B", "C"], [[long, long, "end"], ["a", "b", "c"]])
    assert table.splitlines() == [
        "A" + " " * 401 + "B" + " " * 401 + "C",
        f"{long}  {long}  end",
        "a" + " " * 401 + "b" + " " * 401 + "c",
    ]


def test_table_cells_are_literal_text_on_one_line() -> None:
    table = render_table(["ERROR", "N"], [["[bold]KeyError[/] :smile:", 1], ["two\nlines", 2]])
    assert table.splitlines() == [
        "ERROR" + " " * 22 + "N",
        "[bold]KeyError[/] :smile:  1",
        "two lines" + " " * 18 + "2",
    ]


def test_only_a_terminal_table_has_a_bold_header_and_its_text_is_the_same() -> None:
    plain = render_table(["SEQ", "NAME"], [[1, "a"]])
    styled = render_table(["SEQ", "NAME"], [[1, "a"]], color=True)
    assert "\x1b[" not in plain
    assert "\x1b[1m" in styled.splitlines()[0]
    assert ANSI.sub("", styled) == plain


def test_truncate_flattens_newlines_and_marks_the_cut() -> None:
    assert truncate("line one\nline two", 10) == "line one…"
    assert truncate("short", 10) == "short"


class Terminal(io.StringIO):
    """A stream that says it is a terminal, as stderr does in an interactive shell."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> Terminal:
    monkeypatch.setenv("TERM", "xterm-256color")  # not "dumb", which rich never redraws
    return Terminal()


def frames(stream: io.StringIO) -> list[str]:
    """What a terminal showed, one redraw each (rich returns to the line start with \\r)."""
    return ANSI.sub("", stream.getvalue()).split("\r")


def test_progress_on_a_terminal_redraws_at_most_once_per_interval(terminal: Terminal) -> None:
    now = [0.0]
    progress = Progress("published", terminal, enabled=True, total=10, clock=lambda: now[0])
    now[0] = 1.0
    progress.update(2)
    progress.update(3)  # same instant: skipped
    now[0] = 2.0
    progress.update(8)
    first, last = frames(terminal)
    assert re.fullmatch(r"published [━╸╺]+ +2/10 \(2/s\) 0:00:01", first)
    assert re.fullmatch(r"published [━╸╺]+ +8/10 \(4/s\) 0:00:02", last)


def test_progress_on_a_terminal_ends_its_line_and_shows_the_cursor_again(
    terminal: Terminal,
) -> None:
    now = [0.0]
    progress = Progress("replayed", terminal, enabled=True, total=10, clock=lambda: now[0])
    now[0] = 1.0
    progress.update(4)
    now[0] = 2.0
    progress.finish(10)
    assert terminal.getvalue().startswith(HIDE_CURSOR)
    assert terminal.getvalue().endswith("\n" + SHOW_CURSOR)
    assert re.fullmatch(r"replayed [━]+ 10/10 \(5/s\) 0:00:02\n", frames(terminal)[-1])


def test_interrupted_progress_still_ends_its_line_and_shows_the_cursor(
    terminal: Terminal,
) -> None:
    now = [0.0]
    progress = Progress("published", terminal, enabled=True, total=10, clock=lambda: now[0])
    now[0] = 1.0
    progress.update(3)
    assert not terminal.getvalue().endswith(SHOW_CURSOR)
    del progress  # as when Ctrl-C or an error leaves the command before finish()
    gc.collect()
    assert terminal.getvalue().endswith("\n" + SHOW_CURSOR)
    assert re.fullmatch(r"published [━╸╺]+ +3/10 \(3/s\) 0:00:01\n", frames(terminal)[-1])


def test_progress_dropped_before_any_work_writes_nothing() -> None:
    out = io.StringIO()
    progress = Progress("published", out, enabled=True, total=10)
    del progress  # the command failed before publishing (no stream, no connection)
    gc.collect()
    assert out.getvalue() == ""


def test_progress_elsewhere_writes_one_final_line_with_count_and_rate() -> None:
    now = [0.0]
    out = io.StringIO()
    progress = Progress("published", out, enabled=True, total=100, clock=lambda: now[0])
    for done in range(10, 101, 10):
        now[0] += 0.25
        progress.update(done)
    progress.finish(100)
    assert out.getvalue() == "published 100/100 (40/s) 0:00:02\n"


def test_progress_without_a_total_counts_what_was_done() -> None:
    now = [0.0]
    out = io.StringIO()
    progress = Progress("deleted", out, enabled=True, clock=lambda: now[0])
    now[0] = 3.0
    progress.update(30)
    now[0] = 4.0
    progress.finish(40)
    assert out.getvalue() == "deleted 40 (10/s) 0:00:04\n"


@pytest.mark.parametrize("stream", [io.StringIO, Terminal])
def test_disabled_progress_writes_nothing(stream: type[io.StringIO]) -> None:
    out = stream()
    progress = Progress("published", out, enabled=False)
    progress.update(1)
    progress.finish(1)
    del progress
    gc.collect()
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
