"""The memory bound of the reputation benchmark: engines filled to their caps
in child processes of their own, measured (RSS or tracemalloc) and split by
table, and the report of it."""

from __future__ import annotations

import gc
import json
import os
import random
import subprocess
import sys
import time
import tracemalloc
import types
from dataclasses import replace
from pathlib import Path
from typing import Any

from reputation_stream import MAX_CALL_ID, NANP, SEED, T_START, TYPICAL_CALL_ID

from proxy.reputation import ReputationConfig, ReputationEngine
from proxy.sip.identity import CallFacts

MB = 1024 * 1024
COUNTERS = tuple(
    f"{w}_{b}"
    for w in ("s", "m", "h", "seq", "fin", "ans", "end", "short")
    for b in ("cur", "prev")
)


# -- filling an engine to its caps ----------------------------------------------------------------

# Peers are filled through a sample: each holds a window of recent callees, and
# filling max_peers windows through the engine would take minutes; the rest of
# the cap is extrapolated from the sample's size per peer.
PEER_SAMPLE = 64
CALLS_PER_PEER = 1024  # distinct callees per sampled peer at least


def invite_facts(call_id: str, source: str, caller: int | None, callee: int, t: float) -> CallFacts:
    known = caller is not None
    return CallFacts(
        "INVITE", call_id, source, f"+{caller}" if known else None, caller, None, known,
        not known, not known, f"+{callee}", callee, False, None, t, None, None,
    )  # fmt: skip


def rss_bytes() -> int:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def deep_size(roots: list[object], seen: set[int]) -> int:
    """sys.getsizeof over everything reachable from roots and not yet seen
    (types, modules and functions excluded): what one table holds."""
    total = 0
    stack = list(roots)
    while stack:
        o = stack.pop()
        if id(o) in seen or isinstance(o, type | types.ModuleType | types.FunctionType):
            continue
        seen.add(id(o))
        total += sys.getsizeof(o)
        stack.extend(gc.get_referents(o))
    return total


def inflate(entries: Any) -> int:
    """Every counter a separate int object, as once it passes 256 (CPython
    shares the ints up to 256). Returns the bytes added."""
    added = 0
    for n, t in enumerate(entries.values()):
        for name in COUNTERS:
            v = getattr(t, name, None)
            if isinstance(v, int):
                big = v + 1000 + n
                setattr(t, name, big)
                added += sys.getsizeof(big)
    return added


def fill_engine(engine: ReputationEngine, caps: dict[str, int], sample: int) -> None:
    """Fill an engine to its caps through record, final and ended only.

    Each caller makes one answered call in the last second of an hour and
    three in the first second of the next (answered, failed, answered; the
    answered ones end), to near-sequential callees: every window (second,
    minute, hour) has its previous and current bucket, the callee ring is
    full, the outcome counters are set. Callers spread over max_ranges
    thousands-blocks, their calls over the sampled peers (whose windows fill).
    max_calls answered calls, awaiting their BYE, come last."""
    n, r = caps["numbers"], caps["ranges"]
    hour = int(T_START) // 3600 + 1
    t_prev, t_cur = hour * 3600 - 0.5, hour * 3600 + 0.5
    peers = [f"2001:db8:5060::{i:x}" for i in range(sample)]
    rnd = random.Random(SEED + 7)
    block0 = NANP // 1000 + 2_000_000

    def call(i: int, j: int, caller: int | None, callee: int, t: float, status: int) -> None:
        peer = peers[(i + j) % sample]
        cid = f"{rnd.getrandbits(64):016x}{i:08x}{j}@{peer}"[:TYPICAL_CALL_ID]
        engine.record(invite_facts(cid, peer, caller, callee, t))
        engine.final(cid, status, t)
        if status == 200 and caller is not None:
            engine.ended(cid, t)

    for phase, t, legs in ((0, t_prev, ((0, 200),)), (1, t_cur, ((1, 200), (2, 486), (3, 200)))):
        for i in range(n):
            key = (block0 + i % r) * 1000 + i // r % 1000
            for j, status in legs:
                call(i, j + 4 * phase, key, 13_000_000_000 + 8 * i + j, t, status)
    for i in range(caps["calls"]):  # anonymous: they touch only their peer
        call(i, 9, None, 14_000_000_000 + i, t_cur, 200)


def memory_child(caps: dict[str, int], how: str) -> dict[str, Any]:
    """Fill an engine to its caps; its growth (tracemalloc or RSS) and each
    table's size by sys.getsizeof, in its worst state and at the ceiling."""
    cfg = replace(
        ReputationConfig(),
        max_numbers=caps["numbers"],
        max_ranges=caps["ranges"],
        max_peers=caps["peers"],
        max_calls=caps["calls"],
    )
    sample = max(1, min(PEER_SAMPLE, cfg.max_peers, 4 * cfg.max_numbers // CALLS_PER_PEER))
    gc.collect()
    if how == "tracemalloc":
        tracemalloc.start()

    def used() -> int:
        gc.collect()
        return tracemalloc.get_traced_memory()[0] if how == "tracemalloc" else rss_bytes()

    t0 = time.perf_counter()
    base = used()
    engine = ReputationEngine(cfg)
    fill_engine(engine, caps, sample)
    filled = used()
    tables: dict[str, Any] = {
        "callers": engine.callers.entries,
        "ranges": engine.ranges.entries,
        "peers": engine.peers.entries,
        "calls": engine.calls,
    }
    counts = {name: len(t) for name, t in tables.items()}
    want = {"callers": cfg.max_numbers, "ranges": cfg.max_ranges, "peers": sample}
    want |= {"calls": cfg.max_calls}
    if any(counts[k] < v for k, v in want.items()):
        raise SystemExit(f"bench_reputation: engine not filled to its caps: {counts}")
    added = {name: inflate(tables[name]) for name in ("callers", "ranges", "peers")}
    ceiling = used()
    long_ids: dict[str, float] = {}
    if how == "tracemalloc":  # Call-IDs as long as the parser lets them be, and typical ones
        for chars in (TYPICAL_CALL_ID, MAX_CALL_ID):
            for status, what in ((486, "finished"), (200, "call")):
                small = ReputationEngine(replace(cfg, max_calls=2000))
                before = used()
                for i in range(2000):
                    cid = f"{status}{i:08x}".ljust(chars, "x")
                    small.record(invite_facts(cid, "192.0.2.1", None, 13_125_550_100 + i, 0.0))
                    small.final(cid, status, 0.0)
                long_ids[f"{what}_{chars}"] = (used() - before) / 2000
                del small
    seen: set[int] = set()  # tables first: a call's Traffic objects belong to them
    deep = {name: deep_size([t], seen) for name, t in tables.items()}
    return {
        "how": how,
        "caps": caps,
        "peer_sample": sample,
        "entries": counts,
        "growth_bytes": {"filled": filled - base, "ceiling": ceiling - filled},
        "deep_bytes": {
            name: {"ceiling": deep[name], "worst": deep[name] - added.get(name, 0)}
            for name in tables
        },
        "max_call_id": long_ids,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def default_caps(numbers: int | None = None, scale: int = 1) -> dict[str, int]:
    d = ReputationConfig()
    return {
        "numbers": (numbers or d.max_numbers) // scale,
        "ranges": d.max_ranges // scale,
        "peers": d.max_peers // scale,
        "calls": d.max_calls // scale,
    }


def memory_start(big: int, script: Path) -> dict[str, tuple[dict[str, int], subprocess.Popen[str]]]:
    """Each fill in a child process of its own (RSS growth there is the
    engine's alone), all at once: only the untimed warm-up runs meanwhile.
    tracemalloc slows a fill sixfold, so it runs at a tenth of the caps.
    Each child is ``script --memory-child CAPS HOW``, which calls memory_child."""
    plan = {"tracemalloc": (default_caps(scale=10), "tracemalloc"), "rss": (default_caps(), "rss")}
    if big > 0:
        plan["rss big"] = (default_caps(big), "rss")
    children = {}
    for label, (caps, how) in plan.items():
        cmd = [sys.executable, str(script), "--memory-child"]
        cmd += [json.dumps(caps), how]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        children[label] = (caps, proc)
    return children


def memory_collect(
    children: dict[str, tuple[dict[str, int], subprocess.Popen[str]]],
) -> dict[str, Any]:
    runs: dict[str, Any] = {}
    for label, (caps, proc) in children.items():
        out, err = proc.communicate(timeout=900)
        if proc.returncode != 0:
            raise SystemExit(f"bench_reputation: memory child {label} failed:\n{err[-2000:]}")
        runs[label] = json.loads(out)
        print(f"memory: {label} at {caps}: {runs[label]['seconds']} s", flush=True)
    return runs


def at_caps(run: dict[str, Any]) -> dict[str, Any]:
    """Per table: entries at its cap and bytes per entry (worst, ceiling, by
    getsizeof); the growth measured, with the peers beyond the sample added
    at their size per peer (scaled by the measured/getsizeof ratio)."""
    caps, deep, entries = run["caps"], run["deep_bytes"], run["entries"]
    cap_of = {"callers": "numbers", "ranges": "ranges", "peers": "peers"}
    out: dict[str, Any] = {"tables": {}}
    for name, d in deep.items():
        n = max(1, entries[name])
        out["tables"][name] = {
            "entries": caps[cap_of.get(name, "calls")],
            "worst": d["worst"] / n,
            "ceiling": d["ceiling"] / n,
        }
    measured = run["growth_bytes"]["filled"] + run["growth_bytes"]["ceiling"]
    ratio = measured / max(1, sum(d["ceiling"] for d in deep.values()))
    missing_peers = caps["peers"] - entries["peers"]
    out["ratio"] = ratio
    out["total"] = measured + missing_peers * out["tables"]["peers"]["ceiling"] * ratio
    return out


# -- report ---------------------------------------------------------------------------------------


TABLES = {
    "callers": "callers (numbers)",
    "ranges": "thousands-blocks",
    "peers": "peers",
    "calls": "calls in progress",
}


def memory_lines(mem: dict[str, Any]) -> tuple[list[str], str]:
    rss, traced, big = mem["rss"], mem["tracemalloc"], mem.get("rss big")
    caps = rss["caps"]
    full, small = at_caps(rss), at_caps(traced)
    scale = caps["numbers"] / traced["caps"]["numbers"]
    lines = [
        "| table (getsizeof of what it holds) | entries at cap | bytes/entry, worst state "
        "| bytes/entry, ceiling | MB at cap, ceiling |",
        "|---|---:|---:|---:|---:|",
    ]
    tables_mb = 0.0
    for name, t in full["tables"].items():
        mb = t["entries"] * t["ceiling"] / MB
        tables_mb += mb
        lines.append(
            f"| {TABLES.get(name, name)} | {t['entries']:,} | {t['worst']:,.0f} "
            f"| {t['ceiling']:,.0f} | {mb:,.1f} |"
        )
    rss_mb, traced_mb = full["total"] / MB, small["total"] * scale / MB
    lines += [
        f"| **sum of the tables** | | | | **{tables_mb:,.1f}** |",
        f"| **RSS growth** (x{full['ratio']:.2f} the getsizeof sum: allocator overhead) "
        f"| | | | **{rss_mb:,.1f}** |",
        f"| tracemalloc at 1/{scale:.0f} of the caps, x{scale:.0f} | | | | {traced_mb:,.1f} |",
    ]
    if big:
        b = at_caps(big)
        lines.append(
            f"| **RSS growth, max_numbers {big['caps']['numbers']:,}** | "
            f"{big['caps']['numbers']:,} | | callers {b['tables']['callers']['ceiling']:,.0f} "
            f"| **{b['total'] / MB:,.1f}** |"
        )
    lines.append(
        f"\nPeers: {rss['peer_sample']} filled through the engine, the other "
        f"{caps['peers'] - rss['peer_sample']:,} of the cap counted at their size."
    )
    bound = max(rss_mb, traced_mb, tables_mb)
    per_number = full["tables"]["callers"]["ceiling"] * max(1.0, full["ratio"])
    statement = (
        f"Memory bound: at most {bound:,.0f} MB for {caps['numbers']:,} active numbers at the "
        f"default caps ({caps['ranges']:,} thousands-blocks, {caps['peers']:,} peers, "
        f"{caps['calls']:,} calls awaiting an outcome), every "
        f"entry in its worst state and every counter past 256; a number costs at most "
        f"{per_number:,.0f} bytes"
    )
    if big:
        statement += (
            f", {at_caps(big)['total'] / MB:,.0f} MB for {big['caps']['numbers']:,} numbers "
            f"(RSS growth, other caps at their defaults)"
        )
    ids = traced.get("max_call_id") or {}
    if ids:
        per_call = ids[f"call_{MAX_CALL_ID}"]
        per_finished = ids[f"finished_{MAX_CALL_ID}"]
        typical = ids[f"call_{TYPICAL_CALL_ID}"] + ids[f"finished_{TYPICAL_CALL_ID}"]
        extra = (per_call + per_finished - typical) * caps["calls"] / MB
        statement += (
            f". With Call-IDs as long as the parser allows ({MAX_CALL_ID:,} characters) a call "
            f"in progress costs {per_call:,.0f} bytes and a finished one {per_finished:,.0f} "
            f"({TYPICAL_CALL_ID} characters: {typical:,.0f} together): "
            + (f"{extra:,.0f} MB more at max_calls." if extra > 1 else "the length does not count.")
        )
    return lines, statement
