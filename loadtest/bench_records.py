"""Benchmark: the decision records (proxy/records).

Requirement: at least 1 million records a day sustained (~12/s on
average) with bursts of thousands a second kept up with, and ``add`` cheap
on the event loop. Measured, on screened calls from records_sim.py (real
Identity headers, so the writer decodes origids as in production):

1. ``add`` on the loop: µs per call, with the writer asleep (the append
   alone) and with the writer busy inserting at the same time (what the GIL
   costs the loop while it writes).
2. Throughput: as many records as the writer takes, end to end (added as
   fast as possible, timed until ``close`` has written the last); and the
   insert alone (rows already built: SQLite with its two indexes).
3. A paced burst: ``--burst-rate`` records a second for ``--burst-seconds``
   added from an asyncio loop in 10 ms ticks, as a worker would; reports the
   most records ever waiting and any drop.
4. A full day: ``--day`` records (default 1,000,000) in one day file; its
   size, and how long a traceback (one caller) and the campaign report take
   on it.

    .venv/bin/python loadtest/bench_records.py [--records N] [--day N]

Bounded: every phase has a fixed count; the whole run takes about a minute
on the 2-core machine with the defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from proxy.records.query import traceback
from proxy.records.recorder import DecisionRecorder
from proxy.records.reports import find_campaigns, parse_month
from proxy.records.settings import RecordsConfig
from proxy.records.store import DayWriter, day_files, row_of

if TYPE_CHECKING or __package__:
    from loadtest.procs import source_version, write_result
    from loadtest.records_sim import SimRecord, generate
else:  # python loadtest/bench_records.py, like the other benchmarks
    from procs import source_version, write_result
    from records_sim import SimRecord, generate

RESULTS = Path(__file__).resolve().parent / "results"
START = dt.datetime(2025, 9, 10, 0, tzinfo=dt.UTC).timestamp()


def base_events() -> list[SimRecord]:
    sims, _ = generate(seed=1, start=START, hours=1, callers=1500, campaign_calls=1000)
    return sims


def add_cost(sims: list[SimRecord], n: int, directory: Path, writer_busy: bool) -> float:
    """µs per add over ``n`` adds (median of 5 runs)."""
    runs = []
    for r in range(5):
        cfg = RecordsConfig(dir=str(directory / f"add{int(writer_busy)}{r}"), max_pending=n * 2)
        rec = DecisionRecorder(cfg, poll=0.01 if writer_busy else 3600)
        if writer_busy:  # a backlog for the writer to chew on while we add
            for i in range(20_000):
                s = sims[i % len(sims)]
                rec.add(s.event, START + i * 0.01, s.peer)
        m = len(sims)
        t0 = time.perf_counter()
        for i in range(n):
            s = sims[i % m]
            rec.add(s.event, START + i * 0.01, s.peer)
        runs.append((time.perf_counter() - t0) / n * 1e6)
        rec.close()
    # the loop's own indexing and tuple fetch are in these figures: an upper bound
    return statistics.median(runs)


def throughput(sims: list[SimRecord], n: int, directory: Path) -> dict[str, float]:
    rec = DecisionRecorder(RecordsConfig(dir=str(directory / "tput"), max_pending=n + 1))
    t0 = time.perf_counter()
    for i in range(n):
        s = sims[i % len(sims)]
        rec.add(s.event, START + i * 0.05, s.peer)
    added = time.perf_counter() - t0
    rec.close(timeout=900)
    total = time.perf_counter() - t0
    assert rec.written == n and rec.dropped == 0 and rec.failed == 0, "records lost"
    rows = [row_of(s.event, START + i * 0.05, s.peer) for i, s in enumerate(sims)]
    writer = DayWriter(directory / "insert")
    batches = max(1, n // len(rows))
    t0 = time.perf_counter()
    for b in range(batches):
        writer.insert([(r[0] + b * 0.001, *r[1:]) for r in rows])
    insert = time.perf_counter() - t0
    writer.close()
    return {
        "records": n,
        "end_to_end_per_s": n / total,
        "add_phase_s": added,
        "insert_only_per_s": batches * len(rows) / insert,
    }


async def paced_burst(
    sims: list[SimRecord], rate: int, seconds: float, directory: Path, record: bool = True,
    switch_interval: float | None = None,
) -> dict[str, float]:
    """``record=False``: the same loop without the recorder, for its baseline
    lag; ``switch_interval``: sys.setswitchinterval for the run (the GIL's
    hand-over period, 5 ms by default)."""
    rec = DecisionRecorder(RecordsConfig(dir=str(directory / f"burst{int(record)}")))
    default_interval = sys.getswitchinterval()
    if switch_interval is not None:
        sys.setswitchinterval(switch_interval)
    per_tick, ticks = max(1, rate // 100), int(seconds * 100)
    worst_pending, lags = 0, []
    i = 0
    next_at = time.perf_counter()
    for _ in range(ticks):
        for _ in range(per_tick):
            s = sims[i % len(sims)]
            if record:
                rec.add(s.event, START + i / rate, s.peer)
            i += 1
        worst_pending = max(worst_pending, rec.pending)
        next_at += 0.01
        delay = next_at - time.perf_counter()
        before = time.perf_counter()
        await asyncio.sleep(max(0.0, delay))
        lags.append(max(0.0, time.perf_counter() - before - max(0.0, delay)))
    sys.setswitchinterval(default_interval)
    t0 = time.perf_counter()
    rec.close()
    return {
        "rate_per_s": rate,
        "seconds": seconds,
        "records": i,
        "written": rec.written,
        "dropped": rec.dropped + rec.failed,
        "max_pending": worst_pending,
        "close_s": time.perf_counter() - t0,
        "loop_lag_p99_ms": sorted(lags)[int(len(lags) * 0.99)] * 1e3,
    }


def full_day(sims: list[SimRecord], n: int, directory: Path) -> dict[str, float]:
    day = directory / "day"
    rec = DecisionRecorder(RecordsConfig(dir=str(day), max_pending=n + 1))
    spacing = 86_000 / n
    callers = [s.event.call.caller_key for s in sims if s.peer == "gateway"]
    t0 = time.perf_counter()
    for i in range(n):
        s = sims[i % len(sims)]
        rec.add(s.event, START + i * spacing, s.peer)
    rec.close(timeout=900)
    assert rec.written == n, "records lost"
    write_s = time.perf_counter() - t0
    path = next(iter(day_files(day).values()))
    size = sum(p.stat().st_size for p in day.iterdir())
    t0 = time.perf_counter()
    result = traceback(day, int(callers[0] or 0), START, START + 86_400)
    trace_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    report = find_campaigns(day, parse_month("2025-09"))
    report_s = time.perf_counter() - t0
    return {
        "records": n,
        "write_s": write_s,
        "file": path.name,
        "bytes": size,
        "bytes_per_record": size / n,
        "traceback_ms": trace_s * 1e3,
        "traceback_calls_found": result.total,
        "campaign_report_s": report_s,
        "campaigns_found": report.found,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=200_000, help="throughput phase size")
    ap.add_argument("--adds", type=int, default=100_000, help="adds timed per run")
    ap.add_argument("--burst-rate", type=int, default=5_000)
    ap.add_argument("--burst-seconds", type=float, default=10.0)
    ap.add_argument("--day", type=int, default=1_000_000, help="records in the full-day file")
    ap.add_argument("--out", type=Path, default=RESULTS / "bench_records.json")
    args = ap.parse_args()
    sims = base_events()
    with tempfile.TemporaryDirectory(prefix="bench-records-") as tmp:
        work = Path(tmp)
        result = {
            "version": source_version(),
            "python": platform.python_version(),
            "machine": platform.machine(),
            "add_us_writer_idle": add_cost(sims, args.adds, work, writer_busy=False),
            "add_us_writer_busy": add_cost(sims, args.adds, work, writer_busy=True),
            "throughput": throughput(sims, args.records, work),
            "burst": asyncio.run(paced_burst(sims, args.burst_rate, args.burst_seconds, work)),
            "burst_baseline_no_records": asyncio.run(
                paced_burst(sims, args.burst_rate, args.burst_seconds, work, record=False)
            ),
            "burst_switch_interval_1ms": asyncio.run(
                paced_burst(sims, args.burst_rate, args.burst_seconds, work, switch_interval=0.001)
            ),
            "day": full_day(sims, args.day, work) if args.day else {},
        }
    for key, value in result.items():
        print(f"{key}: {value}")
    write_result(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
