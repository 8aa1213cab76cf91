"""Microbenchmark: what the [telemarketing] check costs per INVITE, in µs.

Rows (each: --iterations calls, --repeats times after a warm-up; median and
best repeat reported; the calls' `now` is 10 ms apart, as at 100 calls/s):
  other peer            a call from a trunk that is not telemarketing (the
                        common case: one memoised peer lookup)
  tm, one zone          telemarketing, callees spread over NANP area codes,
                        not on the DNC list
  tm, DNC listed        telemarketing, callees on the DNC list (Bloom hit and
                        exact-store confirmation)
  tm, unplaced          telemarketing to toll-free numbers: judged in the four
                        continental zones
  phonenumbers          what the table replaces: phonenumbers.parse plus
                        time_zones_for_number per call (fewer iterations)
  core, without/with    StatelessProxy.receive_datagram of a telemarketing
                        INVITE, with no [telemarketing] and with it (their
                        repeats interleaved, so drift of a shared machine
                        falls on both; the difference is within its noise)
plus the start-up costs: the zone table and loading the DNC artefact.

    .venv/bin/python loadtest/bench_telemarketing.py [--iterations N] [--dnc-numbers N]
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from procs import source_version, write_result

from blocklists.build import build
from blocklists.sources import parse_source
from blocklists.store import Artefact
from proxy.config import parse_config
from proxy.core import StatelessProxy
from proxy.events import Address
from proxy.routing import SwitchPool
from proxy.screening import build_pipeline
from proxy.sip.identity import CallFacts
from proxy.telemarketing.check import Telemarketing
from proxy.telemarketing.zones import ZoneTable

RESULTS = Path(__file__).parent / "results"
TM, OTHER = "198.51.100.10", "203.0.113.5"
NOON_CHICAGO = 1_751_389_200.0  # 2025-07-01 12:00 in Chicago: within hours
DISTINCT = 1024  # inputs cycled, so no memo sees only one key


def callees(rng: random.Random, n: int) -> list[int]:
    """Geographic NANP keys across the area codes in use (200-989)."""
    return [10**10 + rng.randrange(201, 990) * 10**7 + rng.randrange(2, 10) * 10**6
            + rng.randrange(10**6) for _ in range(n)]  # fmt: skip


def facts(source: str, keys: list[int]) -> list[CallFacts]:
    return [
        CallFacts(
            method="INVITE", call_id=f"c{i}", source=source, caller="+12125550142",
            caller_key=12125550142, caller_display=None, asserted=True, anonymous=False,
            privacy_id=False, callee=f"+{k}", callee_key=k, emergency_urn=False, identity=None,
            received=1000.0 + i * 0.01,
        )
        for i, k in enumerate(keys)
    ]  # fmt: skip


def timed(run: Callable[[int], None], iterations: int, repeats: int) -> dict[str, float]:
    run(min(iterations, 2000))  # warm-up
    per_call = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run(iterations)
        per_call.append((time.perf_counter() - t0) / iterations * 1e6)
    return {"median_us": round(statistics.median(per_call), 3), "best_us": round(min(per_call), 3)}


def timed_pair(
    a: Callable[[int], None], b: Callable[[int], None], iterations: int, repeats: int
) -> tuple[dict[str, float], dict[str, float]]:
    """Two rows measured in turn, repeat by repeat."""
    a(min(iterations, 2000))
    b(min(iterations, 2000))
    runs: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for run, out in ((a, runs[0]), (b, runs[1])):
            t0 = time.perf_counter()
            run(iterations)
            out.append((time.perf_counter() - t0) / iterations * 1e6)
    first, second = (
        {"median_us": round(statistics.median(r), 3), "best_us": round(min(r), 3)} for r in runs
    )
    return first, second


def check_row(tm: Telemarketing, calls: list[CallFacts]) -> Callable[[int], None]:
    check, n = tm.check.check, len(calls)
    tm.check.wall_offset = NOON_CHICAGO - 1000.0

    def run(iterations: int) -> None:
        for i in range(iterations):
            check(calls[i % n])

    return run


def core_row(core: StatelessProxy, messages: list[bytes]) -> Callable[[int], None]:
    source, n = Address(TM, 5060, "udp"), len(messages)

    def run(iterations: int) -> None:
        receive = core.receive_datagram
        for i in range(iterations):
            receive(messages[i % n], source, 1000.0 + i * 0.01)

    return run


def invite(i: int, callee: int) -> bytes:
    return (
        f"INVITE sip:+{callee}@192.0.2.5;user=phone SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {TM}:5060;branch=z9hG4bK-b{i}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:+1212555{i % 10000:04d}@{TM};user=phone>;tag=f{i}\r\n"
        f"To: <sip:+{callee}@192.0.2.5;user=phone>\r\n"
        f"Call-ID: bench-{i}@{TM}\r\nCSeq: 1 INVITE\r\n"
        f"Contact: <sip:c@{TM}:5060>\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iterations", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--dnc-numbers", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    peers = [{"name": "tm-dialer", "addresses": ["198.51.100.0/28"]},
             {"name": "carrier-a", "addresses": ["203.0.113.0/28"]}]  # fmt: skip
    base = {
        "sip": {"host": "192.0.2.5", "port": 5060},
        "switches": [{"name": "sw1", "host": "192.0.2.20", "port": 5080}],
        "routing": {"health_checks": False},
        "redress": {"url": "https://redress.example.net/r"},
        "peers": peers,
    }
    results: dict[str, object] = {"iterations": args.iterations, "repeats": args.repeats}

    t0 = time.perf_counter()
    zones = ZoneTable.build()
    results["zone_table_build_s"] = round(time.perf_counter() - t0, 3)

    listed = callees(rng, args.dnc_numbers)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "dnc.txt"
        src.write_text("".join(f"{k - 10**10}\n" for k in listed))
        t0 = time.perf_counter()
        build([parse_source(f"dnc:{src}")], Path(tmp) / "dnc")
        results["dnc_build_s"] = round(time.perf_counter() - t0, 2)
        t0 = time.perf_counter()
        art = Artefact.load(Path(tmp) / "dnc")
        results["dnc_load_s"] = round(time.perf_counter() - t0, 3)
        results["dnc_numbers"] = art.counts["numbers"]

        cfg = parse_config({**base, "telemarketing": {"trunks": ["tm-dialer"]}})
        tm = Telemarketing(cfg.telemarketing, cfg.peers, zones)
        tm.slot.current = art
        listed_set = set(listed)
        clean = [k for k in callees(rng, DISTINCT * 2) if k not in listed_set][:DISTINCT]
        rows: dict[str, dict[str, float]] = {
            "other peer": timed(check_row(tm, facts(OTHER, clean)), args.iterations, args.repeats),
            "tm, one zone": timed(check_row(tm, facts(TM, clean)), args.iterations, args.repeats),
            "tm, DNC listed": timed(
                check_row(tm, facts(TM, listed[:DISTINCT])), args.iterations, args.repeats
            ),
            "tm, unplaced": timed(
                check_row(tm, facts(TM, [18005550000 + i for i in range(DISTINCT)])),
                args.iterations,
                args.repeats,
            ),
        }
        import phonenumbers
        from phonenumbers.timezone import time_zones_for_number

        texts = [f"+{k}" for k in clean]

        def parse_each(iterations: int) -> None:
            for i in range(iterations):
                time_zones_for_number(phonenumbers.parse(texts[i % len(texts)]))

        rows["phonenumbers"] = timed(parse_each, max(1, args.iterations // 20), args.repeats)

        messages = [invite(i, k) for i, k in enumerate(clean)]
        plain_cfg = parse_config(base)
        plain = StatelessProxy(
            plain_cfg,
            build_pipeline(plain_cfg.screening),
            SwitchPool(plain_cfg.switches, plain_cfg.routing),
            "b",
        )
        tm.check.wall_offset = NOON_CHICAGO - 1000.0
        with_tm = StatelessProxy(
            cfg,
            build_pipeline(cfg.screening, telemarketing=tm.stage),
            SwitchPool(cfg.switches, cfg.routing),
            "b",
        )
        core_iterations = max(1, args.iterations // 5)
        rows["core, without"], rows["core, with"] = timed_pair(
            core_row(plain, messages), core_row(with_tm, messages), core_iterations, args.repeats
        )
        tm.slot.current = None
        art.close()

    results["rows"] = rows
    results["version"] = source_version()
    print(
        f"zone table {results['zone_table_build_s']} s; DNC of {results['dnc_numbers']:,} "
        f"numbers: build {results['dnc_build_s']} s, load {results['dnc_load_s']} s"
    )
    print("| row | median µs/call | best µs/call |\n|---|---:|---:|")
    for name, row in rows.items():
        print(f"| {name} | {row['median_us']} | {row['best_us']} |")
    write_result(RESULTS / "bench_telemarketing.json", results)


if __name__ == "__main__":
    main()
