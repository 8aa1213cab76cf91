"""Verdicts against the targets and the printed report of the blocklist benchmark."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any

# -- numbers --------------------------------------------------------------------
from list_consts import (
    TARGET_BUILD_NUMBERS,
    TARGET_BUILD_S,
    TARGET_HIT_US,
    TARGET_MEMORY_MB,
    TARGET_MISS_US,
)


@dataclass
class Verdict:
    target: str
    limit: str
    measured: str
    passed: bool | None  # None: not measured
    note: str = ""


@dataclass
class Report:
    verdicts: list[Verdict] = field(default_factory=list)

    def add(
        self, target: str, limit: str, measured: str, passed: bool | None, note: str = ""
    ) -> None:
        self.verdicts.append(Verdict(target, limit, measured, passed, note))

    def table(self) -> str:
        rows = [("target", "limit", "measured", "result")]
        for v in self.verdicts:
            result = "n/a" if v.passed is None else "PASS" if v.passed else "FAIL"
            rows.append((v.target, v.limit, v.measured, result))
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        for v in self.verdicts:
            if v.note:
                lines.append(f"  {v.target}: {v.note}")
        return "\n".join(lines)


def shared_note(memory: dict[str, Any]) -> str:
    two = memory["runs"].get("two workers")
    if not two:
        return ""
    a, b = two["first"], two["second"]
    return (
        f"; with two workers on the artefact: private {a['rollup_kb']['Private'] / 1024:.0f} and "
        f"{b['rollup_kb']['Private'] / 1024:.0f} MB, shared {a['rollup_kb']['Shared'] / 1024:.0f} "
        f"and {b['rollup_kb']['Shared'] / 1024:.0f} MB, PSS {a['rollup_kb']['Pss'] / 1024:.0f} "
        f"and {b['rollup_kb']['Pss'] / 1024:.0f} MB"
    )


def judge(result: dict[str, Any], args: argparse.Namespace) -> Report:
    rep = Report()
    b = result.get("build")
    if b:
        passed = b["wall_s"] <= TARGET_BUILD_S
        note = (
            f"{b['numbers']:,} numbers; CPU {b['cpu_s']} s; peak RSS {b['max_rss_mb']:.0f} MB; "
            f"build() itself {b['build_seconds_in_manifest']} s"
        )
        if b["wall_s"] > TARGET_BUILD_S:
            note += f"; over by {b['wall_s'] - TARGET_BUILD_S:.1f} s"
        if args.numbers != TARGET_BUILD_NUMBERS:
            note += f"; the target is for {TARGET_BUILD_NUMBERS:,} numbers"
        rep.add(
            f"build {args.numbers:,} numbers",
            f"<= {TARGET_BUILD_S:g} s",
            f"{b['wall_s']:.1f} s",
            passed,
            note,
        )
    m = result.get("memory")
    if m:
        g = m["growth_mb"]["after_load"]
        rep.add(
            "proxy memory growth (unshared)",
            f"<= {TARGET_MEMORY_MB:g} MB",
            f"{g['unshared']:.1f} MB",
            g["unshared"] <= TARGET_MEMORY_MB,
            f"RSS +{g['Rss']:.1f} MB, PSS +{g['Pss']:.1f} MB, private +{g['Private']:.1f} MB "
            f"(of which {g['artefact_mapped_rss']:.1f} MB mmap'ed artefact pages, page cache "
            f"shared by all workers), anonymous +{g['Anonymous']:.1f} MB" + shared_note(m),
        )
    lk = result.get("lookup")
    if lk:
        for name, limit in (("miss", TARGET_MISS_US), ("hit", TARGET_HIT_US)):
            r = lk[name]
            net_us = r["net_ns"] / 1000
            rep.add(
                f"lookup {name}",
                f"<= {limit:g} us",
                f"{net_us:.3f} us net",
                net_us <= limit,
                f"raw {r['raw_ns'] / 1000:.3f} us (best {r['raw_best_ns'] / 1000:.3f}), "
                f"bare loop {r['loop_ns']:.0f} ns, empty call {r['empty_call_ns']:.0f} ns",
            )
    rl = result.get("reload")
    if rl:
        ctl, run = rl["control"], rl["reload"]
        switched = sum(a["switched"] for a in run["actions"])
        failed = run["sipp"]["failed"]
        rep.add(
            f"reload {rl['numbers']:,} x3 under {args.rate} calls/s",
            "0 failed calls",
            f"{failed} failed, {switched}/3 switched",
            failed == 0 and switched == len(run["actions"]) == 3,
            f"retransmissions {run['sipp']['retransmissions']}; control run without reload: "
            f"{ctl['sipp']['failed']} failed, {ctl['sipp']['retransmissions']} retransmissions",
        )
    elif args.skip_load:
        rep.add("reload under load", "0 failed calls", "skipped (--skip-load)", None)
    return rep


def print_details(result: dict[str, Any]) -> None:
    b = result.get("build")
    if b:
        print(f"\n== build: {b['command']}")
        print(
            f"  wall {b['wall_s']} s (interpreter+imports {b['interpreter_and_imports_s']} s, "
            f"build() {b['build_seconds_in_manifest']} s); user {b['user_s']} s, system "
            f"{b['system_s']} s; peak RSS {b['max_rss_mb']:.0f} MB; other processes "
            f"{b['other_processes_cores']} cores meanwhile"
        )
        files = ", ".join(f"{n} {s} MB" for n, s in b["file_mb"].items() if s)
        print(f"  artefact {b['artefact_mb']} MB: {files}")
    ph = result.get("build_phases")
    if ph and "phases_s" in ph:
        print(f"  phases (separate in-process build, {ph['build_seconds']} s):")
        for name, secs in sorted(ph["phases_s"].items(), key=lambda kv: -kv[1]):
            print(f"    {name:<15} {secs:7.2f} s  {secs / ph['build_seconds'] * 100:5.1f}%")
    elif ph:
        print(f"  phases: {ph.get('error')}")
    lk = result.get("lookup")
    if lk:
        print(
            f"\n== lookup over {lk['numbers']:,} numbers; Artefact.load {lk['artefact_load_s']} s"
            f" (sha256 of every file included); median of {lk['repeats']} passes"
        )
        for name in ("miss", "hit"):
            r = lk[name]
            print(
                f"  {name:<4} raw {r['raw_ns']:7.1f} ns  loop {r['loop_ns']:5.1f} ns  "
                f"net {r['net_ns']:7.1f} ns  (net of an empty call {r['net_of_call_ns']:.1f} ns)"
            )
        print(
            f"  first pass over the hits {lk['hit']['first_pass_raw_ns']} ns raw; hits confirmed "
            f"{lk['hits_confirmed']}/{lk['hits']}; Bloom false positives among misses "
            f"{lk['miss_bloom_false_positive_rate']}; other processes "
            f"{lk['other_processes_cores']} cores meanwhile"
        )
        print(
            "  where it goes (net of an empty call): miss: Bloom test "
            f"{lk['miss']['bloom_ns']} ns, the rest {lk['miss']['exact_store_and_entry_ns']} ns "
            f"(Bloom false positives' exact-store checks, attribute look-ups); hit: Bloom test "
            f"{lk['hit']['bloom_ns']} ns, exact store and entry "
            f"{lk['hit']['exact_store_and_entry_ns']} ns"
        )
    m = result.get("memory")
    if m:
        print("\n== proxy memory, MB (smaps_rollup; growth = with artefact - without)")
        keys = ("Rss", "Pss", "Private", "Shared", "Anonymous", "unshared", "artefact_mapped_rss")
        print("  " + " " * 11 + "".join(f"{k:>20}" for k in keys))
        for label in ("without", "with"):
            for when in ("idle", "after_load"):
                s = m["runs"][label][when]
                vals = [s["rollup_kb"][k] / 1024 for k in keys[:5]]
                vals += [s["unshared_kb"] / 1024, s["artefact_mappings_kb"]["Rss"] / 1024]
                print(f"  {label:>7} {when:<11}" + "".join(f"{v:20.1f}" for v in vals)[8:])
        two = m["runs"].get("two workers", {})
        for label, snap in (("worker 1/2", two.get("first")), ("worker 2/2", two.get("second"))):
            if snap:
                vals = [snap["rollup_kb"][k] / 1024 for k in keys[:5]]
                vals += [snap["unshared_kb"] / 1024, snap["artefact_mappings_kb"]["Rss"] / 1024]
                print(f"  {label:<19}" + "".join(f"{v:20.1f}" for v in vals)[8:])
        for when in ("idle", "after_load"):
            g = m["growth_mb"][when]
            print(f"  {'growth':>7} {when:<11}" + "".join(f"{g[k]:20.1f}" for k in keys)[8:])
        print(
            "  Private counts a file page mapped by this process only; the two-worker rows show "
            "the same artefact pages as Shared once a second worker maps them"
        )
    rl = result.get("reload")
    if rl:
        print(f"\n== reload under load ({rl['numbers']:,}-number artefacts)")
        for bd in rl["builds"]:
            print(f"  build {bd['version']}: {bd['wall_s']} s wall, {bd['artefact_mb']} MB")
        for label in ("control", "reload"):
            r = rl[label]
            s = r["sipp"]
            print(
                f"  {label:<8} {r['rate']} calls/s x {r['seconds']} s: made {s['calls_made']}, "
                f"completed {s['completed']}, blocked {s['blocked']}, failed {s['failed']}, "
                f"retransmissions {s['retransmissions']}, kernel UDP drops "
                f"{r['udp_rcvbuf_errors']}; proxy {r['proxy_core_utilisation'] * 100:.0f}% of a "
                f"core, machine {r['machine_busy_cores']} cores busy; reloads {r['reloads_total']}"
            )
            if r.get("loads_logged"):
                loads = ", ".join(f"{x['why']} {x['version']}" for x in r["loads_logged"])
                print(f"    loads in the proxy log: {loads}")
            for a in r["actions"]:
                post = (
                    f" (POST {a['post_status']} {a['post_outcome']})" if "post_status" in a else ""
                )
                print(
                    f"    at {a['at_s']:5.1f} s {a['trigger']:<14}{post}: "
                    f"{'switched' if a['switched'] else 'NOT switched'} to {a['seen_version']} "
                    f"in {a['seconds_to_switch']} s"
                )


# -- main ---------------------------------------------------------------------------------------
