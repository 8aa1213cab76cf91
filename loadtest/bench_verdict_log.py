"""Microbenchmark: what a verdict-log line costs the event loop, in µs per call.

Rows (each formats the line of a screened, passing INVITE with the wall
clock read per call, as ``Worker.dispatch`` does):
  format only           format_verdict alone: the floor every design pays
  (a) thread hand-off   the old design: append to a batch; every ``--batch``
                        calls (0.1 s of calls at ``--batch`` x 10 calls/s) the
                        batch is joined and queued, and a thread writes it
  (b) os.write per line the line written with one os.write on the O_APPEND
                        descriptor at once (page cache: survives a process
                        crash, not a power loss)
  (c) os.write per dispatch  lines gathered over one ``dispatch`` call and
                        written with one os.write before its Sends go out;
                        ``dispatch`` handles one received message, so it holds
                        one Screened event (x1), rarely more (x4 shown too)
  VerdictLog.write      the module as it is now, on a file

Per row, ``--iterations`` calls are timed ``--repeats`` times after a
warm-up; median and best wall clock and the median thread CPU time are
printed. Bounded: about 10 s with the defaults.

    .venv/bin/python loadtest/bench_verdict_log.py [--iterations N] [--repeats R] [--dir D]
"""

from __future__ import annotations

import argparse
import os
import platform
import queue
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench_core import SBC, call_ids, invite, make_proxy
from procs import source_version

from proxy.events import Screened
from proxy.verdict_log import VerdictLog, format_verdict


@dataclass
class Row:
    name: str
    median_us: float
    best_us: float
    cpu_us: float


Run = Callable[[list[Screened]], None]


def screened_events(count: int) -> list[Screened]:
    core = make_proxy()
    events = []
    for n in range(count):
        data = invite(call_ids(n, f"+1201555{n % 10000:04d}"))
        events.append(next(e for e in core.receive_datagram(data, SBC, 0.0)
                            if isinstance(e, Screened)))  # fmt: skip
    return events


def measure(paths: list[tuple[str, Run]], seq: list[Screened], repeats: int) -> list[Row]:
    """Every path once per round, rounds repeated: a machine whose load
    changes during the run slows every path alike."""
    for _, run in paths:
        run(seq[: len(seq) // 10])  # warm-up
    walls: dict[str, list[float]] = {name: [] for name, _ in paths}
    cpus: dict[str, list[float]] = {name: [] for name, _ in paths}
    for _ in range(repeats):
        for name, run in paths:
            c0, t0 = time.thread_time_ns(), time.perf_counter_ns()
            run(seq)
            t1, c1 = time.perf_counter_ns(), time.thread_time_ns()
            walls[name].append((t1 - t0) / len(seq) / 1000)
            cpus[name].append((c1 - c0) / len(seq) / 1000)
    return [
        Row(name, statistics.median(walls[name]), min(walls[name]), statistics.median(cpus[name]))
        for name, _ in paths
    ]


def thread_handoff(path: str, batch: int) -> tuple[Run, Callable[[], None]]:
    """The design before zero loss: a batch per interval, written by a thread."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    chunks: queue.SimpleQueue[str | None] = queue.SimpleQueue()

    def writer() -> None:
        while (chunk := chunks.get()) is not None:
            os.write(fd, chunk.encode())

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()

    def run(seq: list[Screened]) -> None:
        lines: list[str] = []
        clock = time.time
        for i, ev in enumerate(seq, 1):
            lines.append(format_verdict(clock(), ev))
            if i % batch == 0:
                chunks.put("".join(lines))
                lines = []
        if lines:
            chunks.put("".join(lines))

    def close() -> None:
        chunks.put(None)
        thread.join(timeout=30)
        os.close(fd)

    return run, close


def per_line(fd: int) -> Run:
    def run(seq: list[Screened]) -> None:
        write, clock = os.write, time.time
        for ev in seq:
            write(fd, format_verdict(clock(), ev).encode())

    return run


def per_dispatch(fd: int, per: int) -> Run:
    def run(seq: list[Screened]) -> None:
        write, clock = os.write, time.time
        for start in range(0, len(seq), per):
            lines = [format_verdict(clock(), ev) for ev in seq[start : start + per]]
            write(fd, "".join(lines).encode())

    return run


def format_only(seq: list[Screened]) -> None:
    clock = time.time
    for ev in seq:
        format_verdict(clock(), ev)


def filesystem(path: str) -> str:
    best = ("?", "")
    try:
        with open("/proc/mounts", encoding="ascii") as mounts:
            for line in mounts:
                fields = line.split()
                point = fields[1]
                if path.startswith(point.rstrip("/") + "/") and len(point) >= len(best[1]):
                    best = (fields[2], point)
    except OSError:
        pass
    return best[0]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iterations", type=int, default=50_000, help="calls per repeat")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=200, help="calls per hand-off in (a)")
    ap.add_argument("--dir", default=tempfile.gettempdir(), help="where the log files go")
    args = ap.parse_args(argv)
    if not 1 <= args.iterations <= 1_000_000 or not 1 <= args.repeats <= 20:
        ap.error("--iterations must be 1..1,000,000 and --repeats 1..20")
    distinct = screened_events(1024)
    seq = [distinct[i % len(distinct)] for i in range(args.iterations)]
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:

        def fd(name: str) -> int:
            return os.open(os.path.join(tmp, name), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

        handoff, close = thread_handoff(os.path.join(tmp, "a.jsonl"), args.batch)
        vlog = VerdictLog(os.path.join(tmp, "now.jsonl"))

        def module(batch: list[Screened]) -> None:
            write = vlog.write
            for ev in batch:
                write(ev)
            vlog.flush()

        fds = [fd("b.jsonl"), fd("c1.jsonl"), fd("c4.jsonl")]
        rows = measure(
            [
                ("format only", format_only),
                (f"(a) thread hand-off, {args.batch} per batch", handoff),
                ("(b) os.write per line", per_line(fds[0])),
                ("(c) os.write per dispatch, x1", per_dispatch(fds[1], 1)),
                ("(c) os.write per dispatch, x4", per_dispatch(fds[2], 4)),
                ("VerdictLog.write (this checkout)", module),
            ],
            seq,
            args.repeats,
        )
        close()
        vlog.close()
        for each in fds:
            os.close(each)
        sizes = {p.name: p.stat().st_size for p in Path(tmp).iterdir()}
    line = len(format_verdict(time.time(), seq[0]))
    print(
        f"robocall-shield {source_version()} verdict-log microbenchmark: Python "
        f"{platform.python_version()}, {os.cpu_count()} CPUs, {args.iterations} calls x "
        f"{args.repeats} repeats, {line}-byte lines, files on "
        f"{filesystem(os.path.abspath(args.dir))} ({args.dir})"
    )
    width = max(len(r.name) for r in rows)
    print(f"{'path':<{width}}  {'median':>8}  {'best':>8}  {'cpu med':>8}  (us/call)")
    for r in rows:
        print(f"{r.name:<{width}}  {r.median_us:>8.2f}  {r.best_us:>8.2f}  {r.cpu_us:>8.2f}")
    print(f"bytes written per file: {sizes}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
