"""Where the time of one ``blocklist build`` goes, phase by phase.

Runs the real ``blocklists.build.build`` once, in this process, with timing
wrappers around the module-level names it calls (the source readers,
``_aggregate``, ``_write``, ``Bloom``, ``sha256_file``, ``_prune``); nothing
in blocklists/ is changed. Prints and writes one JSON object of seconds per
phase. Used by bench_blocklists.py when the build misses its target (or on
``--phases``); it can also be run by hand::

    .venv/bin/python loadtest/build_phases.py list:numbers.txt -o /tmp/art [--json out.json]

Phases:
  read+parse       the source reader generators, the array appends included
  aggregate        sort by key, one row per number (numpy argsort, reduceat)
  write tables     the rest of _write: keys/side tables to disk, prefixes, problems
  bloom tolist     numpy chunk -> Python list before each Bloom.update
  bloom insert     Bloom.update (rbloom; hash_func=int)
  bloom save       Bloom.save
  sha256 source    hashing the source files for the manifest
  sha256 outputs   hashing every artefact file for the manifest
  prune            removing old versions
  other            the remainder of build(): staging, manifest, flags/count arrays
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import blocklists.build as build_mod
from blocklists.sources import Report, parse_source

PHASES = (
    "read+parse",
    "aggregate",
    "write tables",
    "bloom tolist",
    "bloom insert",
    "bloom save",
    "sha256 source",
    "sha256 outputs",
    "prune",
)


class PhaseClock:
    """Seconds per phase, filled in by the wrappers below."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = dict.fromkeys(PHASES, 0.0)
        self.bytes_hashed: dict[str, int] = {"sha256 source": 0, "sha256 outputs": 0}
        self.last_bloom_event = 0.0

    def add(self, phase: str, seconds: float) -> None:
        self.seconds[phase] = self.seconds.get(phase, 0.0) + seconds


def instrument(clock: PhaseClock, out: Path) -> None:
    """Replace the names build() looks up in its module by timed versions."""
    names: dict[str, Any] = vars(build_mod)

    def timed_reader(
        real: Callable[[Report], Iterator[Any]],
    ) -> Callable[[Report], Iterator[Any]]:
        def reader(report: Report) -> Iterator[Any]:
            t0 = time.perf_counter()
            yield from real(report)
            clock.add("read+parse", time.perf_counter() - t0)

        return reader

    for name in ("read_numbers", "read_ftc", "read_prefixes"):
        if name in names:
            names[name] = timed_reader(names[name])

    def timed(phase: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return real(*args, **kwargs)
            finally:
                clock.add(phase, time.perf_counter() - t0)

        return wrapper

    real_write = names["_write"]
    names["_aggregate"] = timed("aggregate", names["_aggregate"])
    names["_prune"] = timed("prune", names["_prune"])

    def write(*args: Any, **kwargs: Any) -> Any:
        # The Bloom phases are timed inside; "write tables" is what remains.
        before = sum(clock.seconds[p] for p in ("bloom tolist", "bloom insert", "bloom save"))
        t0 = time.perf_counter()
        try:
            return real_write(*args, **kwargs)
        finally:
            after = sum(clock.seconds[p] for p in ("bloom tolist", "bloom insert", "bloom save"))
            clock.add("write tables", time.perf_counter() - t0 - (after - before))

    names["_write"] = write

    real_bloom = names["Bloom"]

    class TimedBloom:
        """Stands in for rbloom.Bloom inside _write; times each call."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.bloom = real_bloom(*args, **kwargs)
            clock.last_bloom_event = time.perf_counter()

        def update(self, items: Iterable[int]) -> None:
            t0 = time.perf_counter()
            # Since the previous Bloom call, _write only sliced a chunk and
            # made it a list: that interval is the conversion.
            clock.add("bloom tolist", t0 - clock.last_bloom_event)
            self.bloom.update(items)
            clock.last_bloom_event = time.perf_counter()
            clock.add("bloom insert", clock.last_bloom_event - t0)

        def save(self, path: str) -> None:
            t0 = time.perf_counter()
            self.bloom.save(path)
            clock.add("bloom save", time.perf_counter() - t0)

    names["Bloom"] = TimedBloom
    real_sha = names["sha256_file"]
    out_dir = out.resolve()

    def sha256_file(path: Path) -> str:
        phase = "sha256 outputs" if out_dir in path.resolve().parents else "sha256 source"
        t0 = time.perf_counter()
        try:
            return str(real_sha(path))
        finally:
            clock.add(phase, time.perf_counter() - t0)
            clock.bytes_hashed[phase] += path.stat().st_size

    names["sha256_file"] = sha256_file


def profile_build(specs: list[str], out: Path, fp_rate: float) -> dict[str, Any]:
    clock = PhaseClock()
    instrument(clock, out)
    sources = [parse_source(s) for s in specs]
    t0 = time.perf_counter()
    result = build_mod.build(sources, out, fp_rate)
    total = time.perf_counter() - t0
    phases = {k: round(v, 3) for k, v in clock.seconds.items()}
    phases["other"] = round(total - sum(clock.seconds.values()), 3)
    return {
        "build_seconds": round(total, 3),
        "numbers": result.manifest["counts"]["numbers"],
        "version": result.version,
        "phases_s": phases,
        "bytes_hashed": clock.bytes_hashed,
        "note": "one in-process build with timing wrappers; wrapper overhead is negligible "
        "(one call per source, per table and per 1M-key Bloom chunk)",
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sources", nargs="+", metavar="KIND:PATH")
    ap.add_argument("-o", "--output", required=True, type=Path)
    ap.add_argument("--fp-rate", type=float, default=0.001)
    ap.add_argument("--json", type=Path, help="also write the result here")
    args = ap.parse_args(argv)
    started = time.perf_counter()
    result = profile_build(args.sources, args.output, args.fp_rate)
    result["process_seconds_after_imports"] = round(time.perf_counter() - started, 3)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
