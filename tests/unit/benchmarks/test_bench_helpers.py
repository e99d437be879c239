"""The benchmarks' pure helpers: percentiles, ratios, report rendering, binning, selection."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import pytest

from bench.lib.handlers import Entry, Ledger, read_ledger
from bench.lib.plots import binned
from bench.lib.report import Result, Table, format_cell, render_report, render_table
from bench.lib.stats import latency_ms, median, percentile, ratio
from bench.lib.tracking import rotated, settings_for, variants
from bench.run_all import BENCHMARKS, select


def test_percentile_interpolates_between_closest_ranks_like_the_stdlib_inclusive_method():
    values = [float(v * v % 97) for v in range(1, 201)]
    expected = statistics.quantiles(values, n=100, method="inclusive")
    for q in (1, 25, 50, 95, 99):
        assert percentile(values, q) == pytest.approx(expected[q - 1])


def test_percentile_edges():
    assert percentile([3.0, 1.0, 2.0], 0) == 1.0
    assert percentile([3.0, 1.0, 2.0], 100) == 3.0
    assert percentile([5.0], 99) == 5.0
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError, match="outside"):
        percentile([1.0], 101)


def test_latency_is_reported_in_milliseconds():
    ms = latency_ms([0.001] * 98 + [0.010, 0.100])
    assert ms["p50"] == pytest.approx(1.0)
    assert ms["p99"] == pytest.approx(10.9)


def test_ratio_and_median_of_nothing_are_not_numbers():
    assert ratio(3.0, 2.0) == 1.5
    assert math.isnan(ratio(1.0, 0.0))
    assert math.isnan(ratio(math.nan, 1.0))
    assert math.isnan(median([]))


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (None, "-"),
        (math.nan, "-"),
        (12345.6, "12,346"),
        (123.4, "123"),
        (12.34, "12.3"),
        (0.8234, "0.82"),
        (0.0012, "0.001"),
        (0.0, "0.00"),
        (7, "7"),
        (12000, "12,000"),
        ("a|b", "a\\|b"),
    ],
)
def test_cells_are_formatted_by_size(value, shown):
    assert format_cell(value) == shown


def test_a_table_renders_as_markdown_and_refuses_ragged_rows():
    table = Table("title", ["a", "b"], [["x", 1.5]], note="n")
    assert render_table(table) == "**title**\n\n| a | b |\n|---|---|\n| x | 1.50 |\n\nn"
    with pytest.raises(ValueError, match="does not match"):
        render_table(Table("", ["a", "b"], [["x"]]))


def test_a_result_survives_its_json_and_the_report_shows_everything(tmp_path: Path):
    result = Result(
        name="demo",
        title="Demo",
        about="what it measures",
        command="bench/demo.py",
        tables=[Table("t", ["k", "v"], [["ratio", math.nan], ["n", 3]])],
        figures=["demo.png"],
        seconds=12.0,
    )
    loaded = Result.load(result.save(tmp_path))
    assert (loaded.name, loaded.figures, loaded.seconds) == ("demo", ["demo.png"], 12.0)
    assert loaded.tables[0].columns == ["k", "v"]
    assert math.isnan(loaded.tables[0].rows[0][1])
    assert loaded.tables[0].rows[1] == ["n", 3]
    report = render_report(
        [loaded], {"scaling": "printed\n"}, {"commit": "abc"}, {"broken": "exit code 1"}
    )
    assert "## Demo" in report
    assert "| ratio | - |" in report
    assert "![demo.png](demo.png)" in report
    assert "- commit: abc" in report
    assert "## scaling (printed output)\n\n```text\nprinted\n```" in report
    assert "- broken: exit code 1" in report


def test_events_are_binned_into_rates():
    starts, rates = binned([0.1, 0.2, 0.6, 1.4, 5.0], 0.5, 1.5)
    assert starts == [0.0, 0.5, 1.0]
    assert rates == [4.0, 2.0, 2.0]


def test_ledgers_of_several_processes_read_back_in_time_order(tmp_path: Path):
    a, b = tmp_path / "run-1.ledger", tmp_path / "run-2.ledger"
    a.write_text("done t1 1 10.5 1\nstart t2 1 9.0 1\ncut-by-a-kill")
    b.write_text("fail t3 2 9.5 2\n")
    entries = read_ledger(tmp_path / "run-{pid}.ledger")
    assert [e.task_id for e in entries] == ["t2", "t3", "t1"]
    assert entries[1] == Entry("fail", "t3", 2, 9.5, 2)
    assert read_ledger(tmp_path / "absent.ledger") == []


def test_a_ledger_writes_one_line_per_event(tmp_path: Path):
    ledger = Ledger(str(tmp_path / "w-{pid}.ledger"))
    ledger.write("done", "t1", 2)
    [entry] = read_ledger(tmp_path / "w-{pid}.ledger")
    assert (entry.event, entry.task_id, entry.attempt) == ("done", "t1", 2)
    Ledger(None).write("done", "t1", 1)  # no ledger: nothing happens


def test_the_suite_selects_in_its_own_order_and_refuses_unknown_names():
    names = [b.name for b in select(BENCHMARKS, [], ["scaling"])]
    assert "scaling" not in names
    assert names[0] == "worker_throughput"
    assert [b.name for b in select(BENCHMARKS, ["recovery", "load_throughput"], [])] == [
        "load_throughput",
        "recovery",
    ]
    with pytest.raises(SystemExit, match="unknown"):
        select(BENCHMARKS, ["nope"], [])


def test_tracking_variants_start_with_off_and_rotate_by_round():
    assert variants("on,results") == ["off", "on", "results"]
    assert variants("") == ["off"]
    assert variants("results, on,results,off") == ["off", "results", "on"]
    with pytest.raises(ValueError, match="unknown tracking variant"):
        variants("on,maybe")
    assert rotated(["off", "on", "results"], 0) == ["off", "on", "results"]
    assert rotated(["off", "on", "results"], 4) == ["on", "results", "off"]
    assert rotated([], 3) == []


def test_a_tracked_bench_worker_gets_the_settings_the_operator_gives_a_tracked_pool():
    assert settings_for("p1", "off") == {"task_state_bucket": None, "task_results_max_bytes": None}
    on = settings_for("p1", "on")
    assert on["task_state_bucket"].endswith("-state")
    assert on["task_results_max_bytes"] is None
    kept = settings_for("p1", "results")
    assert kept["task_state_bucket"] == on["task_state_bucket"]
    assert kept["task_results_max_bytes"] == 65_536
    assert settings_for("p2", "on")["task_state_bucket"] != on["task_state_bucket"]
