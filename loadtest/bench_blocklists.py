"""Blocklist benchmark: build time, proxy memory and lookup time at 50 million
numbers, and reloading a 10-million-number artefact under SIPp load.

Targets (the issue's words), each reported PASS or FAIL:
  build    50 million numbers build in at most 90 s on this 2-core machine
  memory   the proxy's resident memory grows by at most 150 MB per worker
           (the exact store is mmap'ed and shared)
  lookup   at most 0.3 us on a miss and 5 us on a confirmed hit
  reload   reloading a 10-million-number artefact while SIPp sends calls
           through the proxy fails no call

Phases:
  1. numbers  --numbers distinct random valid NANP numbers (NPA and NXX 200-999,
              no N11 area code), shuffled, written one 10-digit number a line.
              Not timed against any target.
  2. build    ``robocall-shield blocklist build list:FILE -o DIR`` as a
              subprocess, timed end to end (interpreter start-up included;
              the list was just written, so it is read from the page cache).
              CPU time and peak RSS come from wait4(). When the build misses
              its target (or on --phases) a second build runs under
              build_phases.py, which times each phase of the same code.
  3. lookup   in this process: Artefact.load (sha256 checks included), then
              1e6 misses (random valid numbers not on the list) and 1e5 hits
              (listed numbers) in random order, each a tight loop over
              precomputed keys timed with perf_counter_ns; the bare loop
              (``for k in keys: pass``) is timed on the same list and
              subtracted: net = raw - loop. Median of --repeats passes.
  4. memory   ``robocall-shield serve`` twice (free ports, health checks off,
              admin on), without and with the artefact, each given the same
              short SIPp load whose callers are half listed numbers, so the
              exact store is really read. /proc/PID/smaps_rollup is read when
              idle and after the load. Per mapping (/proc/PID/smaps), the
              artefact's mmap'ed files are counted apart: they are page
              cache, shared by every worker mapping them, though with one
              worker the kernel counts them as Private_Clean. The target is
              judged on the unshared growth: the Private_Clean+Private_Dirty
              growth less the artefact's mapped pages. A second worker is
              then started on the same artefact and given the same load, to
              show those pages counted as Shared in both.
  5. reload   two different --reload-numbers artefacts built into the same
              directory; SIPp sends --rate calls/s for --duration s through a
              proxy using that directory. Control run: no reload. Reload run:
              three reloads, at 1/4, 2/4 and 3/4 of the run, each switching
              manifest.json to the other version (an atomic replace, as a
              build does), triggered by POST /admin/blocklists/reload, SIGHUP
              and the manifest watcher in turn; /healthz must show the new
              version each time. 10% of callers are on one list only and 10%
              on the other, so the verdicts follow the version in use.

One proxy worker saturates at roughly 700-1000 calls/s on this machine, so the
default rate is 500 calls/s; a failure at --rate 1000 shows in the control run
too. Everything runs under a temporary directory removed at the end unless
--keep (the 50M list is ~550 MB, its artefact ~1 GB).

    .venv/bin/python loadtest/bench_blocklists.py [--numbers 50000000]
        [--reload-numbers 10000000] [--rate 500] [--skip-load] [--keep]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import re
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
from list_consts import (
    BUILD_TIMEOUT_S,
    EXE,
    HERE,
    HITS,
    MB,
    MISSES,
    RELOAD_VISIBLE_S,
    RESULTS,
    TARGET_BUILD_NUMBERS,
    TARGET_BUILD_S,
)
from list_numbers import distinct_numbers, e164, keys_of, listed, unlisted, write_list
from list_report import judge, print_details
from list_rig import (
    Action,
    ListProxy,
    cpu_busy_s,
    memory_bench,
    other_cores,
    proxy_with_switch,
    run_timed,
    sipp_load,
)
from procs import (
    source_version,
    write_result,
)

from blocklists.store import Artefact

# -- numbers --------------------------------------------------------------------


def build_artefact(sources: list[Path], out: Path, log: Path) -> dict[str, Any]:
    """Build with the CLI, timed end to end; the manifest describes the result."""
    cmd = [str(EXE), "blocklist", "build", *(f"list:{s}" for s in sources), "-o", str(out)]
    busy0, w0 = cpu_busy_s(), time.monotonic()
    t = run_timed(cmd, BUILD_TIMEOUT_S, log)
    others = other_cores(busy0, w0, t.user_s + t.system_s)
    if t.timed_out or t.returncode != 0:
        tail = "\n".join(t.output.strip().splitlines()[-10:])
        why = f"timed out after {BUILD_TIMEOUT_S:.0f} s" if t.timed_out else f"exit {t.returncode}"
        raise RuntimeError(f"build {why}: {' '.join(cmd)}\n{tail}")
    manifest = json.loads((out / "manifest.json").read_text())
    version = manifest["version"]
    sizes = {n: (out / version / n).stat().st_size for n in manifest["files"]}
    return {
        "command": " ".join(cmd),
        "wall_s": t.wall_s,
        "user_s": t.user_s,
        "system_s": t.system_s,
        "cpu_s": round(t.user_s + t.system_s, 3),
        "max_rss_mb": t.max_rss_mb,
        "other_processes_cores": others,
        "build_seconds_in_manifest": manifest["build_seconds"],
        "interpreter_and_imports_s": round(t.wall_s - manifest["build_seconds"], 3),
        "version": version,
        "numbers": manifest["counts"]["numbers"],
        "fp_rate": manifest["fp_rate"],
        "artefact_mb": round(sum(sizes.values()) / MB, 1),
        "file_mb": {n: round(s / MB, 1) for n, s in sizes.items()},
        "output": t.output.strip(),
        "manifest": manifest,
    }


def build_phases(sources: list[Path], out: Path, work: Path) -> dict[str, Any]:
    result_file = work / "build_phases.json"
    cmd = [sys.executable, str(HERE / "build_phases.py")]
    cmd += [*(f"list:{s}" for s in sources), "-o", str(out), "--json", str(result_file)]
    t = run_timed(cmd, BUILD_TIMEOUT_S, work / "build_phases.log")
    if t.returncode != 0 or not result_file.exists():
        return {"error": f"build_phases.py exit {t.returncode}", "output": t.output[-2000:]}
    result: dict[str, Any] = json.loads(result_file.read_text())
    result["process_wall_s"] = t.wall_s
    result["max_rss_mb"] = t.max_rss_mb
    return result


# -- lookups ---------------------------------------------------------------------------


def ns_per_item(keys: list[int], fn: Callable[[int], object] | None) -> float:
    if fn is None:
        t0 = time.perf_counter_ns()
        for _k in keys:
            pass
        t1 = time.perf_counter_ns()
    else:
        t0 = time.perf_counter_ns()
        for k in keys:
            fn(k)
        t1 = time.perf_counter_ns()
    return (t1 - t0) / len(keys)


def bloom_ns(art: Artefact, keys: list[int], repeats: int) -> float:
    """Median ns of the Bloom test alone (``key in art.bloom``), net of an
    empty call: the part of a lookup that does not depend on the exact store."""
    bloom = art.bloom

    def test(k: int) -> bool:
        return k in bloom

    def empty(k: int) -> None:
        return None

    runs = [ns_per_item(keys, test) - ns_per_item(keys, empty) for _ in range(repeats)]
    return round(statistics.median(runs), 1)


def lookup_bench(
    directory: Path, misses: list[int], hits: list[int], repeats: int
) -> dict[str, Any]:
    busy0, own0, w0 = cpu_busy_s(), time.process_time(), time.monotonic()
    t0 = time.perf_counter()
    art = Artefact.load(directory)
    load_s = time.perf_counter() - t0
    wrong_miss = sum(art.lookup(k) is not None for k in misses[:10000])
    art.bloom_false_positives = 0
    lookup = art.lookup

    def noop(key: int) -> None:
        return None

    out: dict[str, Any] = {
        "artefact_load_s": round(load_s, 3),
        "numbers": len(art.keys),
        "misses": len(misses),
        "hits": len(hits),
        "repeats": repeats,
    }
    gc.collect()
    gc.disable()
    try:
        # The first pass over the hits maps the exact store's pages in (the
        # files are in the page cache: minor faults, no disk reads).
        first_hit = ns_per_item(hits, lookup)
        found = sum(lookup(k) is not None for k in hits)
        rows: dict[str, dict[str, list[float]]] = {"miss": {}, "hit": {}}
        for name, keys in (("miss", misses), ("hit", hits)):
            r = rows[name]
            for _ in range(repeats):
                r.setdefault("loop", []).append(ns_per_item(keys, None))
                r.setdefault("call", []).append(ns_per_item(keys, noop))
                r.setdefault("raw", []).append(ns_per_item(keys, lookup))
            if name == "miss":
                out["miss_bloom_false_positive_rate"] = round(
                    art.bloom_false_positives / (len(misses) * repeats), 6
                )
        bloom = {"miss": bloom_ns(art, misses, repeats), "hit": bloom_ns(art, hits, repeats)}
    finally:
        gc.enable()
    for name, r in rows.items():
        loop, call, raw = (statistics.median(r[k]) for k in ("loop", "call", "raw"))
        out[name] = {
            "raw_ns": round(raw, 1),
            "raw_best_ns": round(min(r["raw"]), 1),
            "loop_ns": round(loop, 1),
            "empty_call_ns": round(call, 1),
            "net_ns": round(raw - loop, 1),
            "net_of_call_ns": round(raw - call, 1),
            "bloom_ns": bloom[name],  # of net_of_call_ns
            "exact_store_and_entry_ns": round(raw - call - bloom[name], 1),
            "raw_all_ns": [round(x, 1) for x in r["raw"]],
        }
    out["hit"]["first_pass_raw_ns"] = round(first_hit, 1)
    out["hits_confirmed"] = found
    out["misses_wrongly_found"] = wrong_miss
    art.close()
    out["other_processes_cores"] = other_cores(busy0, w0, time.process_time() - own0)
    return out


# -- the proxy and SIPp ----------------------------------------------------------------


def swap_manifest(artefact_dir: Path, manifest: Path) -> None:
    """What the end of a build does: replace manifest.json atomically."""
    tmp = artefact_dir / "manifest.json.bench-tmp"
    shutil.copyfile(manifest, tmp)
    os.replace(tmp, artefact_dir / "manifest.json")


def reload_action(
    proxy: ListProxy, artefact_dir: Path, manifest: Path, expect: str, trigger: str
) -> Action:
    def act() -> dict[str, Any]:
        t0 = time.monotonic()
        swap_manifest(artefact_dir, manifest)
        record: dict[str, Any] = {"trigger": trigger, "expected_version": expect}
        if trigger == "POST":
            status, payload = proxy.post_reload()
            record["post_status"] = status
            record["post_outcome"] = payload.get("outcome")
        elif trigger == "SIGHUP":
            proxy.proc.send_signal(signal.SIGHUP)
        seen = proxy.version()
        while seen != expect and time.monotonic() < t0 + RELOAD_VISIBLE_S:
            time.sleep(0.05)
            seen = proxy.version()
        record["seen_version"] = seen
        record["switched"] = seen == expect
        record["seconds_to_switch"] = round(time.monotonic() - t0, 3)
        return record

    return act


def reload_bench(
    work: Path, n: int, rate: int, seconds: int, seed: int, keep: bool
) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    sorted_a, shuffled_a = distinct_numbers(rng, n)
    sorted_b, shuffled_b = distinct_numbers(rng, n)
    list_a, list_b = work / "reload_a.txt", work / "reload_b.txt"
    write_list(list_a, shuffled_a)
    write_list(list_b, shuffled_b)
    # 10% of callers on list A only, 10% on B only, 80% on neither.
    only_a = shuffled_a[:400][~listed(sorted_b, shuffled_a[:400])][:100]
    only_b = shuffled_b[:400][~listed(sorted_a, shuffled_b[:400])][:100]
    neither = unlisted(rng, [sorted_a, sorted_b], 800)
    callers: list[str] = []
    pools = [e164(only_a), e164(only_b), e164(neither)]
    for i in range(1000):
        pool = pools[0] if i % 10 == 0 else pools[1] if i % 10 == 5 else pools[2]
        callers.append(pool.pop())
    del sorted_a, shuffled_a, sorted_b, shuffled_b
    generate_s = time.perf_counter() - t0

    art_dir = work / "reload-artefact"
    build_a = build_artefact([list_a], art_dir, work / "build_reload_a.log")
    manifest_a = work / "manifest_a.json"
    shutil.copyfile(art_dir / "manifest.json", manifest_a)
    build_b = build_artefact([list_b], art_dir, work / "build_reload_b.log")
    manifest_b = work / "manifest_b.json"
    shutil.copyfile(art_dir / "manifest.json", manifest_b)
    if not keep:
        list_a.unlink()
        list_b.unlink()
    version_a, version_b = build_a["version"], build_b["version"]
    for b in (build_a, build_b):
        del b["manifest"]

    out: dict[str, Any] = {
        "numbers": n,
        "generate_s": round(generate_s, 1),
        "builds": [build_a, build_b],
        "versions": [version_a, version_b],
    }
    for label in ("control", "reload"):
        swap_manifest(art_dir, manifest_a)
        run_dir = work / f"reload-{label}"
        with proxy_with_switch(run_dir, art_dir, watch_interval=1.0) as rig:
            proxy, port, procs = rig.proxy, rig.sip_port, rig.procs
            start_version = proxy.version()
            actions: list[tuple[float, Action]] = []
            if label == "reload":
                plan = [
                    (manifest_b, version_b, "POST"),
                    (manifest_a, version_a, "SIGHUP"),
                    (manifest_b, version_b, "manifest watch"),
                ]
                actions = [
                    (seconds * (i + 1) / 4, reload_action(proxy, art_dir, m, v, trig))
                    for i, (m, v, trig) in enumerate(plan)
                ]
            run = sipp_load(proxy, port, procs, run_dir, callers, rate, seconds, actions)
            run["start_version"] = start_version
            run["end_version"] = proxy.version()
            run["reloads_total"] = proxy.reloads()
            # Which path did each load: the watcher may see a swapped
            # manifest before the POST or SIGHUP that follows it arrives.
            log_text = (run_dir / "proxy.log").read_text(errors="replace")
            run["loads_logged"] = [
                {"version": m.group(1), "why": m.group(2)}
                for m in re.finditer(r"blocklists (\S+) loaded \(([^)]*)\)", log_text)
            ]
            run["proxy_log_tail"] = log_text.strip().splitlines()[-8:]
        out[label] = run
    return out


# -- report ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--numbers", type=int, default=TARGET_BUILD_NUMBERS)
    ap.add_argument("--reload-numbers", type=int, default=10_000_000)
    ap.add_argument("--rate", type=int, default=500, help="calls/s during reloads (default 500)")
    ap.add_argument("--duration", type=int, default=20, help="seconds of load per run")
    ap.add_argument("--repeats", type=int, default=5, help="lookup passes (median)")
    ap.add_argument("--skip-load", action="store_true", help="skip the reload-under-load runs")
    ap.add_argument("--phases", action="store_true", help="profile the build phases anyway")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--seed", type=int, default=20240601)
    ap.add_argument("--json", type=Path, default=RESULTS / "bench_blocklists.json")
    args = ap.parse_args(argv)
    if args.numbers < 10_000 or args.reload_numbers < 10_000:
        ap.error("--numbers and --reload-numbers must be at least 10000")
    if args.duration < 8:
        ap.error("--duration must be at least 8 s (three reloads)")
    if shutil.which("sipp") is None:
        ap.error("sipp not found (make system-deps installs sip-tester)")

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    work = Path(tempfile.mkdtemp(prefix="rs-bench-lists-"))
    print(
        f"bench_blocklists ({source_version()}): {args.numbers:,} numbers, reload "
        f"{args.reload_numbers:,} at {args.rate} calls/s; {os.cpu_count()} cores, load "
        f"average {os.getloadavg()[0]:.2f}; work dir {work}",
        flush=True,
    )
    result: dict[str, Any] = {
        "benchmark": "bench_blocklists",
        "source": source_version(),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "cpus": os.cpu_count(),
        "loadavg_before": round(os.getloadavg()[0], 2),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }
    ok = False
    try:
        rng = np.random.default_rng(args.seed)
        t0 = time.perf_counter()
        sorted_n, shuffled = distinct_numbers(rng, args.numbers)
        hits_np = rng.choice(sorted_n, size=min(HITS, args.numbers), replace=False)
        misses = keys_of(unlisted(rng, [sorted_n], MISSES))
        hits = keys_of(hits_np)
        half = min(500, args.numbers)
        pairs = zip(e164(hits_np[:half]), e164(unlisted(rng, [sorted_n], half)), strict=True)
        memory_callers = [c for pair in pairs for c in pair]  # listed, unlisted, ...
        del sorted_n
        list_file = work / "numbers.txt"
        write_list(list_file, shuffled)
        del shuffled
        result["generate"] = {
            "seconds": round(time.perf_counter() - t0, 1),
            "file_mb": round(list_file.stat().st_size / MB, 1),
        }
        print(f"numbers: {result['generate']}", flush=True)

        art = work / "artefact"
        build = build_artefact([list_file], art, work / "build.log")
        del build["manifest"]
        result["build"] = build
        print(f"build: {build['wall_s']} s wall ({build['output'].splitlines()[-1]})", flush=True)
        if args.phases or build["wall_s"] > TARGET_BUILD_S:
            phases_dir = work / "artefact-phases"
            result["build_phases"] = build_phases([list_file], phases_dir, work)
            shutil.rmtree(phases_dir, ignore_errors=True)
            print(f"build phases: {result['build_phases'].get('phases_s')}", flush=True)
        if not args.keep:
            list_file.unlink()  # free the disk as soon as possible

        result["lookup"] = lookup_bench(art, misses, hits, args.repeats)
        del misses, hits
        gc.collect()
        print(
            f"lookup: miss {result['lookup']['miss']['net_ns']} ns net, "
            f"hit {result['lookup']['hit']['net_ns']} ns net",
            flush=True,
        )
        result["memory"] = memory_bench(work, art, memory_callers)
        print(f"memory growth: {result['memory']['growth_mb']['after_load']}", flush=True)
        if not args.keep:
            shutil.rmtree(art, ignore_errors=True)

        if not args.skip_load:
            result["reload"] = reload_bench(
                work, args.reload_numbers, args.rate, args.duration, args.seed + 1, args.keep
            )
        ok = True
    except BaseException:
        for log in sorted(work.rglob("*.log")):
            tail = log.read_text(errors="replace").strip().splitlines()[-5:]
            print(f"--- {log}\n" + "\n".join(tail), file=sys.stderr)
        raise
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        elif ok:
            shutil.rmtree(work, ignore_errors=True)
        else:  # keep the logs of a broken run, not the gigabytes of data
            for p in work.rglob("*"):
                if p.is_file() and p.suffix not in (".log", ".toml", ".csv", ".json"):
                    p.unlink(missing_ok=True)
            print(f"bench_blocklists: run failed; logs kept in {work}", file=sys.stderr)

    report = judge(result, args)
    result["verdicts"] = [asdict(v) for v in report.verdicts]
    print_details(result)
    print("\n" + report.table())
    write_result(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
