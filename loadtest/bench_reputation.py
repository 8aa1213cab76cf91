"""Microbenchmark and memory bound of the reputation stage, in-process.

Per INVITE the proxy calls ``ReputationEngine.record`` and then the pipeline
runs ``ReputationCheck.check`` (``engine.assess`` and ``decide``); per final
response ``final``, per BYE ``ended``. Rows, in µs per operation:

  record + check        what the reputation stage adds to one INVITE: without
                        an artefact, with one where 1% of callers are listed
                        (Bloom misses), and with every caller listed (hits)
  record, check         the same 1%-listed stream, the two timed apart
  final, ended          per final response and per BYE, pooled over all rows
  whole call            record + check + final + ended of a stream, per INVITE
  calls table full      record + check once max_calls calls await an outcome
                        (BYEs lost): every INVITE evicts the oldest call

The engine is warm before anything is timed: a simulated carrier stream at
200 calls/s of simulated time has filled the caller table to max_numbers and
the calls table to its level, with thousands-blocks, peers and calls in
progress whose finals and BYEs arrive on time. Each repeat times a fresh,
pre-built part of that stream (distinct Call-IDs, new and repeat callers,
campaigns, an attestation mix) second by second: that second's INVITEs, then
the finals and BYEs due in it. The rows take turns, repeat by repeat.

Memory: child processes fill an engine to every cap through record, final
and ended alone, each entry in its worst state (both hour buckets, second and
minute windows, callee ring and distinct-count bitmaps populated, outcomes
counted), and measure its growth as RSS (default caps, and max_numbers =
--big-numbers) and with tracemalloc (a tenth of the default caps: it slows the
fill sixfold); sys.getsizeof over what each table holds splits it by table.
Peers are filled through a sample and the rest of max_peers counted at their
size. The "ceiling" adds what an entry costs once every counter passes 256 and
CPython's small-int cache no longer holds it; the bound stated is the ceiling.

The run takes as long as the engine makes it (it times 1.3 million INVITEs with
their finals and BYEs): about 2 minutes on 2 cores at ~40 µs a call.

    .venv/bin/python loadtest/bench_reputation.py [--iterations N] [--repeats R]
        [--full-repeats R] [--big-numbers N] [--no-memory] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import os
import platform
import pstats
import random
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from procs import source_version, write_result
from reputation_memory import memory_child, memory_collect, memory_lines, memory_start
from reputation_stream import (
    BENCH_DAY,
    EPOCH,
    GC_CLOCK,
    RATE,
    SEED,
    T_START,
    VERSTAT_FROM,
    Mix,
    Stream,
    build_artefact,
    fill_calls_table,
    run_batches,
    state_of,
    warm_up,
)

from blocklists.slot import ArtefactSlot
from blocklists.store import Artefact
from proxy.reputation import ReputationConfig, ReputationEngine
from proxy.screening.reputation_check import ReputationCheck
from proxy.sip.identity import CallFacts

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
TARGET_US = 10.0


# -- timing ---------------------------------------------------------------------------------------


@dataclass
class Row:
    name: str
    unit: str
    median_us: float  # wall clock (perf_counter_ns), median of the repeats
    best_us: float
    cpu_median_us: float  # thread CPU time
    gc_mean_us: float  # of the wall clock: in the cyclic garbage collector (mean: it is lumpy)
    ops_per_repeat: int
    runs_us: list[float]


@dataclass
class Scenario:
    name: str
    mode: str
    artefact: bool
    mix: Mix
    rows: dict[str, str]  # segment name -> row name
    stats: dict[str, Any] = field(default_factory=dict)
    walls: dict[str, list[float]] = field(default_factory=dict)  # µs per op, per repeat
    cpus: dict[str, list[float]] = field(default_factory=dict)
    gcs: dict[str, list[float]] = field(default_factory=dict)
    ops: dict[str, int] = field(default_factory=dict)
    new_callers: int = 0
    invites: int = 0

    def result(self) -> dict[str, Row]:
        self.stats["new_caller_share"] = round(self.new_callers / max(1, self.invites), 3)
        return {name: self.row(name, label) for name, label in self.rows.items()}

    def row(self, name: str, label: str) -> Row:
        return make_row(label, self.walls[name], self.cpus[name], self.gcs[name], self.ops[name])


def make_row(label: str, walls: list[float], cpus: list[float], gcs: list[float], ops: int) -> Row:
    return Row(
        label,
        "us/op",
        round(statistics.median(walls), 3),
        round(min(walls), 3),
        round(statistics.median(cpus), 3),
        round(statistics.fmean(gcs), 3),
        ops,
        [round(r, 3) for r in walls],
    )


def pooled(label: str, name: str, scenarios: list[Scenario]) -> Row:
    """One row from a segment of every scenario's repeats: finals and BYEs
    do the same work whatever the INVITEs were, and a cost that varies with
    the fill of a table over hundreds of thousands of calls (as evicting the
    oldest from a dict did: a scan over the holes deletions leave) needs every
    sample."""
    walls = [w for sc in scenarios for w in sc.walls.get(name, [])]
    cpus = [c for sc in scenarios for c in sc.cpus.get(name, [])]
    gcs = [g for sc in scenarios for g in sc.gcs.get(name, [])]
    ops = min(sc.ops[name] for sc in scenarios if name in sc.ops)
    return make_row(label, walls, cpus, gcs, ops)


def verdict_mix(
    engine: ReputationEngine, check: ReputationCheck, calls: list[CallFacts]
) -> dict[str, float]:
    """What the check answered for a sample (assess reads, never writes)."""
    art = engine.slot.current
    n = len(calls)
    scored = labelled = listed = 0
    for c in calls:
        v = check.check(c)
        if v is not None and v.score:
            scored += 1
            labelled += v.action.name != "PASS"
        if art is not None and c.caller_key is not None:
            listed += art.lookup(c.caller_key) is not None
    return {
        "scored": round(scored / n, 3),
        "labelled_or_blocked": round(labelled / n, 3),
        "caller_listed": round(listed / n, 3),
    }


def measure_once(
    sc: Scenario,
    engine: ReputationEngine,
    check: ReputationCheck,
    stream: Stream,
    art: Artefact,
    iterations: int,
) -> None:
    """One repeat of a scenario: its slot and mix, a few simulated seconds
    of that mix untimed, then `iterations` INVITEs timed."""
    engine.slot.current = art if sc.artefact else None
    stream.mix = sc.mix
    run_batches(engine, check, stream.batches(5 * RATE), "untimed")
    sc.stats.setdefault("state_before", state_of(engine))
    new0, made0 = stream.new_callers, stream.calls_made
    batches = stream.batches(iterations)  # built before the clock starts
    sc.new_callers += stream.new_callers - new0
    sc.invites += stream.calls_made - made0
    sample = [c for b in batches[-10:] for c in b.calls]
    seg = run_batches(engine, check, batches, sc.mode)
    del batches
    for name, wall in seg.wall.items():
        n = max(1, seg.ops[name])
        sc.walls.setdefault(name, []).append(wall / n / 1000)
        sc.cpus.setdefault(name, []).append(seg.cpu[name] / n / 1000)
        sc.gcs.setdefault(name, []).append(seg.gc[name] / n / 1000)
        sc.ops[name] = seg.ops[name]
    if "record+check" in seg.wall:  # all the reputation work of the stream, per INVITE
        n = seg.ops["record+check"]
        parts = ("record+check", "final", "ended")
        sc.walls.setdefault("whole", []).append(sum(seg.wall[p] for p in parts) / n / 1000)
        sc.cpus.setdefault("whole", []).append(sum(seg.cpu[p] for p in parts) / n / 1000)
        sc.gcs.setdefault("whole", []).append(sum(seg.gc[p] for p in parts) / n / 1000)
        sc.ops["whole"] = n
    sc.stats.setdefault("verdicts", verdict_mix(engine, check, sample))


# -- report ---------------------------------------------------------------------------------------


def table_lines(rows: list[Row]) -> list[str]:
    w = max(len(r.name) for r in rows)
    head = ("median", "best", "cpu med", "gc mean")
    lines = [
        f"| {'benchmark (µs per operation)':<{w}} | "
        + " | ".join(f"{h:>8}" for h in head)
        + f" | {'ops/repeat':>10} |",
        f"|{'-' * (w + 2)}|" + "".join(f"{'-' * 9}:|" for _ in head) + f"{'-' * 11}:|",
    ]
    for r in rows:
        vals = (r.median_us, r.best_us, r.cpu_median_us, r.gc_mean_us)
        lines.append(
            f"| {r.name:<{w}} | "
            + " | ".join(f"{v:>8.2f}" for v in vals)
            + f" | {r.ops_per_repeat:>10,} |"
        )
    return lines


def profile_stream(
    engine: ReputationEngine, check: ReputationCheck, stream: Stream, out: Path, n: int
) -> None:
    """cProfile of record + check on the 1%-listed mix, top functions by own time."""
    stream.mix = Mix()
    batches = stream.batches(n)
    prof = cProfile.Profile()
    prof.enable()
    run_batches(engine, check, batches, "together")
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(30)
    out.write_text(buf.getvalue())
    print(f"wrote {out}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iterations", type=int, default=100_000, help="INVITEs per repeat")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--full-repeats", type=int, default=1, help="repeats of the calls-table-full row"
    )
    ap.add_argument(
        "--big-numbers",
        type=int,
        default=300_000,
        help="memory at this max_numbers too (1000000 takes ~30 s more; 0: skip)",
    )
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--profile", action="store_true", help="cProfile one stream part too")
    ap.add_argument("--json", type=Path, default=RESULTS / "bench_reputation.json")
    ap.add_argument("--markdown", type=Path, default=RESULTS / "bench_reputation.md")
    ap.add_argument("--memory-child", nargs=2, metavar=("CAPS", "HOW"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.memory_child:
        caps, how = args.memory_child
        print(json.dumps(memory_child(json.loads(caps), how)))
        return 0
    it, rep = args.iterations, args.repeats
    if it < 10 * RATE or rep < 1:
        ap.error(f"--iterations must be at least {10 * RATE}, --repeats at least 1")
    started = time.perf_counter()
    source = source_version()  # the code imported now is the code measured
    print(
        f"bench_reputation ({source}): {it:,} INVITEs x {rep} repeats per row; "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )

    children = {} if args.no_memory else memory_start(args.big_numbers, Path(__file__).resolve())

    cfg = replace(ReputationConfig(), verstat_from=VERSTAT_FROM)
    slot = ArtefactSlot()
    engine = ReputationEngine(cfg, slot)
    engine.wall_offset = (BENCH_DAY - EPOCH).days * 86400 - T_START
    check = ReputationCheck(engine)
    gc.callbacks.append(GC_CLOCK)
    with tempfile.TemporaryDirectory(prefix="rs-bench-rep-") as tmp:
        art, listed = build_artefact(Path(tmp), random.Random(SEED + 1))
        stream = Stream(SEED, listed.keys)
        slot.current = art
        warm = warm_up(engine, check, stream, cfg)
        print(f"warm-up: {warm}", flush=True)
        mem = memory_collect(children)  # nothing is timed while a child process runs

        miss = Mix()
        scenarios = [
            Scenario(
                "no artefact",
                "together",
                False,
                miss,
                {"record+check": "record + check, no artefact"},
            ),
            Scenario(
                "artefact, 1% listed",
                "together",
                True,
                miss,
                {
                    "noop": "loop overhead (2 no-op calls per INVITE)",
                    "record+check": "record + check, artefact, 1% listed (Bloom misses)",
                    "whole": "whole call per INVITE: record + check + final + ended",
                },
            ),
            Scenario(
                "artefact, all listed",
                "together",
                True,
                replace(miss, listed=1.0),
                {"record+check": "record + check, artefact, every caller listed (hits)"},
            ),
            Scenario(
                "split",
                "split",
                True,
                miss,
                {
                    "record": "record alone, artefact, 1% listed",
                    "check": "check alone, artefact, 1% listed",
                },
            ),
        ]
        for r in range(rep):  # round robin: drift and load spread over every row
            for sc in scenarios:
                measure_once(sc, engine, check, stream, art, it)
                medians = ", ".join(f"{v[-1]:.2f}" for v in sc.walls.values())
                print(f"repeat {r + 1}, {sc.name}: {medians} us", flush=True)
        got = {sc.name: sc.result() for sc in scenarios}
        targeted = [
            got["no artefact"]["record+check"],
            got["artefact, 1% listed"]["record+check"],
            got["artefact, all listed"]["record+check"],
        ]
        rows = [
            got["artefact, 1% listed"]["noop"],
            *targeted,
            got["split"]["record"],
            got["split"]["check"],
            pooled("final (per final response), all rows' streams", "final", scenarios),
            pooled("ended (per BYE), all rows' streams", "ended", scenarios),
            got["artefact, 1% listed"]["whole"],
        ]
        stats: dict[str, Any] = {sc.name: sc.stats for sc in scenarios}

        if args.profile:
            profile_stream(engine, check, stream, RESULTS / "bench_reputation_profile.txt", it)

        # last, as it leaves the engine so: max_calls calls await an outcome
        # (BYEs lost), and every INVITE evicts the oldest one
        fill_calls_table(engine, check, stream)
        full = Scenario(
            "calls table full",
            "together",
            True,
            replace(miss, leak=True),
            {"record+check": f"record + check, calls table full ({cfg.max_calls:,} calls)"},
        )
        for _ in range(args.full_repeats):
            measure_once(full, engine, check, stream, art, it)
        full_row = full.result()["record+check"]
        rows.append(full_row)
        stats[full.name] = full.stats
        print(f"{full.name}: {full_row.median_us:.2f} us", flush=True)
        art.close()
    gc.callbacks.remove(GC_CLOCK)

    worst = max(targeted, key=lambda r: r.median_us)
    whole = rows[-2]
    verdict = "PASS" if worst.median_us <= TARGET_US else "MISS"
    target = (
        f"reputation check ≤ {TARGET_US:g} µs per INVITE: {verdict} (worst median of record + "
        f"check {worst.median_us:.2f} µs: {worst.name}; with its final and BYE "
        f"{whole.median_us:.2f} µs a call; with the calls table full {full_row.median_us:.2f} µs)"
    )
    mem_lines, statement = memory_lines(mem) if mem else ([], "memory not measured (--no-memory)")
    state = stats["artefact, 1% listed"]
    before = state["state_before"]
    header = (
        f"robocall-shield {source} reputation microbenchmark: Python "
        f"{platform.python_version()}, {os.cpu_count()} CPUs, {it:,} INVITEs x {rep} repeats per "
        f"row (calls table full: x{args.full_repeats}), gc {'on' if gc.isenabled() else 'off'}, "
        f"{RATE} calls/s of simulated time"
    )
    warm_text = (
        f"warm state: {before['callers']:,} callers, {before['ranges']:,} thousands-blocks, "
        f"{before['peers']:,} peers, {before['calls']:,} calls in progress; "
        f"{state['new_caller_share']:.0%} of INVITEs from new callers; the check scored "
        f"{state['verdicts']['scored']:.0%} of calls above 0 and labelled or blocked "
        f"{state['verdicts']['labelled_or_blocked']:.0%}; callers listed: "
        f"{state['verdicts']['caller_listed']:.1%} (hit case "
        f"{stats['artefact, all listed']['verdicts']['caller_listed']:.0%})"
    )
    notes = (
        "median/best: wall clock (perf_counter_ns) over the repeats; cpu med: thread CPU time; "
        "gc mean: of the wall clock, time inside cyclic GC collections (gc.callbacks), mean over "
        "the repeats as a full collection lands in one repeat or another. Loop overhead is "
        "included, not subtracted."
    )
    lines = [header, warm_text, "", *table_lines(rows), "", target, notes]
    if mem_lines:
        lines += ["", *mem_lines, "", statement]
    text = "\n".join(lines)
    print()
    print(text)

    result = {
        "benchmark": "bench_reputation",
        "source": source,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "iterations": it,
        "repeats": rep,
        "full_repeats": args.full_repeats,
        "gc_enabled": gc.isenabled(),
        "rate_simulated": RATE,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "artefact_sources": listed.sources,
        "warm_up": warm,
        "scenarios": stats,
        "rows": [asdict(r) for r in rows],
        "target": {
            "limit_us": TARGET_US,
            "worst_steady_median_us": worst.median_us,
            "worst_steady_row": worst.name,
            "passed": worst.median_us <= TARGET_US,
            "calls_table_full_median_us": full_row.median_us,
            "line": target,
        },
        "memory": mem,
        "memory_statement": statement,
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    write_result(args.json, result)
    args.markdown.parent.mkdir(parents=True, exist_ok=True)
    args.markdown.write_text(f"# bench_reputation\n\n{text}\n", encoding="utf-8")
    print(f"wrote {args.markdown}")
    print(f"bench_reputation: {result['wall_seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
