"""Benchmark: loading the subscriber store into memory at start-up.

Target (issue 5): 1 million subscribers load in at most 5 s and take at most
300 MB. A store of N subscribers is written straight into SQLite (a third
opted in across the four policies, 5% with small personal lists, 2% with
anonymous rejection), then a fresh process opens it with SubscriberService,
as the proxy does at start-up, and reports the time and its resident memory
growth. Also reports what the screening check costs per INVITE.

    .venv/bin/python loadtest/bench_subscribers.py [--subscribers N]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from procs import source_version, write_result

RESULTS = Path(__file__).parent / "results"
LOAD_S_TARGET, MEMORY_MB_TARGET = 5.0, 300.0
POLICIES = ("off", "label", "block-high-confidence", "block-all-suspected")


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def build_store(path: Path, n: int, seed: int) -> None:
    from proxy.subscribers.store import SubscriberStore, connect

    db = connect(path)
    SubscriberStore(db)
    rng = random.Random(seed)
    now = time.time()
    rows, entries = [], []
    for i in range(n):
        number = 12_000_000_000 + i * 7 % 8_000_000_000  # distinct NANP-shaped keys
        opted = rng.random() < 1 / 3
        rows.append((number, opted, rng.choice(POLICIES), rng.random() < 0.02, now, now))
        if rng.random() < 0.05:
            for j in range(rng.randint(1, 3)):
                entries.append((number, rng.choice(("allow", "block")), f"+1312555{j:04d}"))
    db.execute("BEGIN")
    db.executemany("INSERT INTO subscribers VALUES (?, ?, ?, ?, ?, ?)", rows)
    db.executemany("INSERT OR IGNORE INTO list_entries VALUES (?, ?, ?)", entries)
    db.execute("COMMIT")
    db.close()


def measure(path: Path) -> dict[str, float]:
    """Run in a fresh process: what start-up costs."""
    from proxy.screening.subscriber_check import SubscriberCheck
    from proxy.sip.identity import CallFacts

    before = rss_mb()
    t0 = time.perf_counter()
    from proxy.subscribers.service import SubscriberService

    service = SubscriberService(path)
    load_s = time.perf_counter() - t0
    grown = rss_mb() - before
    check = SubscriberCheck(service.index, service.global_allow)
    keys = list(service.index)[:: max(1, len(service.index) // 1000)]
    calls = [
        CallFacts("INVITE", f"c{i}", "198.51.100.10", "+13125550100", 13125550100, None,
                  True, False, False, f"+{k}", k, False, None)
        for i, k in enumerate(keys)
    ]  # fmt: skip
    rounds = 200
    t0 = time.perf_counter()
    for _ in range(rounds):
        for call in calls:
            check.check(call)
    check_us = (time.perf_counter() - t0) / (rounds * len(calls)) * 1e6
    service.close()
    return {
        "subscribers": len(service.index),
        "load_s": round(load_s, 2),
        "rss_growth_mb": round(grown, 1),
        "check_us": round(check_us, 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--subscribers", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--measure", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        print(json.dumps(measure(Path(args.measure))))
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "subscribers.sqlite3"
        t0 = time.perf_counter()
        build_store(path, args.subscribers, args.seed)
        print(f"wrote {args.subscribers} subscribers in {time.perf_counter() - t0:.1f} s")
        out = subprocess.run(
            [sys.executable, __file__, "--measure", str(path)],
            capture_output=True, text=True, check=True, timeout=300,
        )  # fmt: skip
        figures = json.loads(out.stdout.strip().splitlines()[-1])
    ok_time = figures["load_s"] <= LOAD_S_TARGET
    ok_mem = figures["rss_growth_mb"] <= MEMORY_MB_TARGET
    print("| subscribers | load (s) | resident growth (MB) | check per INVITE (µs) |")
    print("|---:|---:|---:|---:|")
    print(
        f"| {figures['subscribers']:,} | {figures['load_s']} | {figures['rss_growth_mb']} "
        f"| {figures['check_us']} |"
    )
    print(f"load <= {LOAD_S_TARGET} s: {'PASS' if ok_time else 'MISS'}")
    print(f"memory <= {MEMORY_MB_TARGET} MB: {'PASS' if ok_mem else 'MISS'}")
    write_result(
        RESULTS / "bench_subscribers.json",
        {**figures, "version": source_version(), "targets_met": ok_time and ok_mem},
    )


if __name__ == "__main__":
    main()
