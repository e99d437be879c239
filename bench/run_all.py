"""Run the benchmark suite and write ``bench/out/report.md`` (``make bench``).

Each benchmark runs as its own process, one after the other (they share the box's CPUs, so
never in parallel); its output streams to the terminal and to ``<out>/<name>.log``. A
benchmark that saves a result (``<out>/<name>.json``, see ``bench/lib/report.py``) appears in
the report with its tables and plots, one that does not with its printed output.

    .venv/bin/python bench/run_all.py [--quick] [--only a,b] [--skip scaling] [--list]

To add a benchmark, append a :class:`Benchmark` to :data:`BENCHMARKS`.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "worker")]

from bench.lib.common import OUT  # noqa: E402
from bench.lib.report import Result, render_report  # noqa: E402


@dataclass(frozen=True)
class Benchmark:
    name: str
    script: str
    """File in bench/."""
    about: str
    quick: tuple[str, ...] = ()
    """Arguments of a quick smoke run (``--quick``)."""
    writes_result: bool = True
    """It takes ``--out DIR`` and saves ``DIR/<name>.json``; otherwise the report shows its
    printed output."""
    needs: str = "a nats-server it starts itself"


BENCHMARKS: list[Benchmark] = [
    Benchmark(
        "worker_throughput",
        "worker_throughput.py",
        "one in-process worker vs a raw nats-py loop, no-op tasks; task state tracking on / off",
        ("--tasks", "2000", "--rounds", "1", "--seconds", "1"),
    ),
    Benchmark(
        "lanes",
        "lanes.py",
        "one in-process worker on a plain pool vs a pool with two priority levels (no-op tasks)",
        ("--tasks", "1000", "--rounds", "1"),
    ),
    Benchmark(
        "load_throughput",
        "load_throughput.py",
        "worker processes vs bare nats-py processes: 3 loads, concurrency and process sweeps; "
        "task state tracking on / off",
        ("--seconds", "0.5", "--concurrency", "1,32", "--processes", "2"),
    ),
    Benchmark(
        "worker_memory",
        "worker_memory.py",
        "RSS of a worker process idle and under load vs a bare nats-py process",
        ("--seconds", "0.5"),
    ),
    Benchmark(
        "task_latency",
        "task_latency.py",
        "publish -> done percentiles at fixed rates and behind a backlog",
        ("--rates", "200", "--seconds", "1", "--backlog", "2000"),
    ),
    Benchmark(
        "recovery",
        "recovery.py",
        "worker SIGKILL and nats-server restart: time to recover, nothing lost",
        ("--kill-rounds", "1", "--restart-rounds", "1", "--ack-wait", "1"),
    ),
    Benchmark(
        "breaker_effect",
        "breaker_effect.py",
        "calls to a failing dependency with and without the circuit breaker",
        ("--healthy", "2", "--failing", "6", "--healed", "6", "--open", "2"),
    ),
    Benchmark(
        "scaling",
        "scaling.py",
        "burst -> scale-up timings on the local Kubernetes test bed",
        ("--rounds", "1"),
        writes_result=False,
        needs="the local Kubernetes test bed (JETPOOL_KUBECONFIG or its own cluster)",
    ),
    Benchmark(
        "operator_failover",
        "operator_failover.py",
        "SIGKILL of the active operator replica -> the standby reconciles and scales, "
        "/ peering lifetime",
        ("--rounds", "1", "--term-rounds", "1", "--idle-pools", "10"),
        needs="the local Kubernetes test bed (JETPOOL_KUBECONFIG or its own cluster)",
    ),
    Benchmark(
        "operator_scale",
        "operator_scale.py",
        "N pools on one operator, batched vs per-pool observation: convergence, idle and "
        "busy cost, burst -> scale-up",
        ("--pools", "50", "--busy", "2", "--idle-seconds", "10", "--bursts", "2"),
        needs="the local Kubernetes test bed (starts its own cluster per mode)",
    ),
]


def select(
    benchmarks: Sequence[Benchmark], only: Sequence[str], skip: Sequence[str]
) -> list[Benchmark]:
    """The benchmarks to run, in suite order; unknown names are an error."""
    known = {b.name for b in benchmarks}
    unknown = (set(only) | set(skip)) - known
    if unknown:
        raise SystemExit(f"unknown benchmark(s): {', '.join(sorted(unknown))}; known: {known}")
    return [b for b in benchmarks if (not only or b.name in only) and b.name not in skip]


def run_one(bench: Benchmark, out: Path, quick: bool) -> tuple[int, str]:
    """Run one benchmark, teeing its output to the terminal and ``<out>/<name>.log``."""
    argv = [sys.executable, str(ROOT / "bench" / bench.script)]
    if bench.writes_result:
        argv += ["--out", str(out)]
    if quick:
        argv += list(bench.quick)
    print(f"\n=== {bench.name}: {bench.about}\n=== {' '.join(argv)}", flush=True)
    (out / f"{bench.name}.json").unlink(missing_ok=True)
    lines: list[str] = []
    with subprocess.Popen(
        argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            lines.append(line)
    text = "".join(lines)
    (out / f"{bench.name}.log").write_text(text)
    return proc.returncode, text


def context(started: datetime, load_before: str) -> dict[str, str]:
    def run(*argv: str) -> str:
        try:
            done = subprocess.run(argv, check=False, cwd=ROOT, capture_output=True, text=True)
        except OSError:
            return "?"
        return done.stdout.strip()

    nats_server = shutil.which("nats-server", path=str(Path(sys.executable).parent)) or "?"
    changed = run("git", "status", "--porcelain", "--", "bench", "worker", "operator")
    dirty = " (with uncommitted changes in bench/, worker/ or operator/)" if changed else ""
    return {
        "run": f"{started:%Y-%m-%d %H:%M} UTC, {time.time() - started.timestamp():.0f} s",
        "commit": run("git", "rev-parse", "--short", "HEAD") + dirty,
        "machine": f"{os.cpu_count()} CPUs, {platform.system()} {platform.release()}",
        "load average (1/5/15 min) before / after": f"{load_before} / {_load()}",
        "python": platform.python_version(),
        "nats-server": run(nats_server, "--version") if nats_server != "?" else "?",
    }


def _load() -> str:
    return " ".join(f"{v:.1f}" for v in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--quick", action="store_true", help="short smoke runs")
    parser.add_argument("--only", default="", help="comma-separated benchmark names")
    parser.add_argument("--skip", default="", help="comma-separated benchmark names")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args()
    if args.list:
        for b in BENCHMARKS:
            print(f"{b.name:<20} {b.about} (needs {b.needs})")
        return
    chosen = select(BENCHMARKS, _names(args.only), _names(args.skip))
    args.out.mkdir(parents=True, exist_ok=True)
    started, load_before = datetime.now(UTC), _load()
    results: list[Result] = []
    printed: dict[str, str] = {}
    failures: dict[str, str] = {}
    for bench in chosen:
        code, text = run_one(bench, args.out, args.quick)
        path = args.out / f"{bench.name}.json"
        if code != 0:
            failures[bench.name] = f"exit code {code}; output in {bench.name}.log"
        elif bench.writes_result and path.exists():
            results.append(Result.load(path))
        else:
            printed[bench.name] = text
    report = args.out / "report.md"
    report.write_text(render_report(results, printed, context(started, load_before), failures))
    print(f"\nreport: {report}", flush=True)
    if failures:
        raise SystemExit(f"failed: {', '.join(failures)}")


def _names(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


if __name__ == "__main__":
    main()
