"""``robocall-shield blocklist build``: sources in, one versioned artefact out.

Layout of an artefact directory::

    manifest.json          the current version; replaced atomically
    <version>/bloom.bin    rbloom filter over every listed number (hash: int)
    <version>/keys.u64     sorted, unique E.164 keys, little-endian uint64
    <version>/flags.u8     per key: source flags (sources.Flag)
    <version>/complaints.u32, first_seen.u16, last_seen.u16
                           per key: FTC complaint count and call days
    <version>/allow.u64    sorted operator allow list
    <version>/prefixes.json  prefix and range rules
    <version>/problems.tsv every malformed row: file, line, reason
"""

from __future__ import annotations

import datetime
import hashlib
import json
import operator
import os
import re
import shutil
import tempfile
import time
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rbloom import Bloom

from .sources import (
    KIND_FLAG,
    Flag,
    Kind,
    PrefixRule,
    Report,
    Source,
    read_ftc,
    read_numbers,
    read_prefixes,
)

FORMAT = 1
# The key itself is the hash: deterministic across processes (so the filter
# can be saved) and the cheapest callable rbloom can call back (operator.index
# measured 35 ns faster per lookup than int, same values).
BLOOM_HASH = operator.index
NO_DAY = 0xFFFF
KEEP_VERSIONS = 3
BLOOM_CHUNK = 1 << 20
# The files a loader needs, each listed with its sha256 in the manifest.
ARTEFACT_FILES = (
    "bloom.bin",
    "keys.u64",
    "flags.u8",
    "complaints.u32",
    "first_seen.u16",
    "last_seen.u16",
    "allow.u64",
    "prefixes.json",
)


class BuildError(Exception):
    """A build that cannot produce a trustworthy artefact (a missing source)."""


@dataclass(frozen=True, slots=True)
class BuildResult:
    version: str
    manifest: dict[str, Any]
    reports: tuple[Report, ...]


def build(
    sources: list[Source], out: Path, fp_rate: float = 0.001, keep: int = KEEP_VERSIONS
) -> BuildResult:
    started = time.monotonic()
    for src in sources:
        if not src.path.is_file():
            raise BuildError(f"{src.kind.value}:{src.path}: no such file")
    if 0 < sum(src.kind is Kind.DNC for src in sources) < len(sources):
        raise BuildError("dnc: sources build a National DNC artefact of their own: no other kinds")
    keys, flags, counts, days = array("Q"), array("B"), array("I"), array("H")
    allow, rules = array("Q"), list[PrefixRule]()
    reports: list[Report] = []
    version = _version(sources)
    out.mkdir(parents=True, exist_ok=True)
    _clear_stale(out)
    staging = out / f".{version}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    problems = (staging / "problems.tsv").open("w", encoding="utf-8")
    problems.write("file\tline\treason\n")
    for src in sources:
        report = Report(src, sink=problems)
        reports.append(report)
        if src.kind is Kind.FTC:
            for c in read_ftc(report):
                keys.append(c.key)
                flags.append(Flag.FTC | (Flag.ROBOCALL if c.robocall else 0))
                counts.append(1)
                days.append(c.day)
        elif src.kind is Kind.ALLOW:
            for chunk in read_numbers(report):
                allow.extend(chunk)
        elif src.kind is Kind.PREFIX:
            rules.extend(read_prefixes(report))
        else:
            before = len(keys)
            for chunk in read_numbers(report):
                keys.extend(chunk)
            added = len(keys) - before
            flags.frombytes(bytes([KIND_FLAG[src.kind]]) * added)
            counts.frombytes(bytes(4 * added))
            days.frombytes(b"\xff\xff" * added)

    _report_conflicts(rules, reports)
    problems.close()
    table = _aggregate(keys, flags, counts, days)
    allow_keys = np.unique(np.frombuffer(allow, dtype=np.uint64))
    names = _write(staging, table, allow_keys, rules, fp_rate)
    final = out / version
    shutil.rmtree(final, ignore_errors=True)
    staging.rename(final)

    manifest: dict[str, Any] = {
        "format": FORMAT,
        "version": version,
        "built_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "built_at_epoch": round(time.time(), 3),
        "build_seconds": round(time.monotonic() - started, 3),
        "fp_rate": fp_rate,
        "hash_func": "int",
        "counts": {
            "numbers": len(table[0]),
            "allow": len(allow_keys),
            "prefix_rules": len(rules),
            "problems": sum(r.problem_count for r in reports),
        },
        "sources": [
            {
                "kind": r.source.kind.value,
                "path": str(r.source.path),
                "sha256": sha256_file(r.source.path),
                "rows": r.rows,
                "entries": r.entries,
                "skipped": r.skipped,
                "problems": r.problem_count,
            }
            for r in reports
        ],
        "files": {
            name: {"path": f"{version}/{name}", "sha256": sha256_file(final / name)}
            for name in names
        },
    }
    fd, tmp = tempfile.mkstemp(dir=out, prefix=".manifest.", suffix=".tmp")  # builds may overlap
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, out / "manifest.json")  # the atomic switch to the new version
    _prune(out, version, keep)
    return BuildResult(version, manifest, tuple(reports))


Table = tuple[
    "np.ndarray[Any, Any]",
    "np.ndarray[Any, Any]",
    "np.ndarray[Any, Any]",
    "np.ndarray[Any, Any]",
    "np.ndarray[Any, Any]",
]


def _aggregate(keys: array[int], flags: array[int], counts: array[int], days: array[int]) -> Table:
    """One row per number: flags OR-ed, complaints summed, first/last day."""
    k = np.frombuffer(keys, dtype=np.uint64)
    if not len(k):
        empty = np.empty(0, dtype=np.uint64)
        return (
            empty,
            empty.astype(np.uint8),
            empty.astype(np.uint32),
            empty.astype(np.uint16),
            empty.astype(np.uint16),
        )
    order = np.argsort(k, kind="stable")
    k = k[order]
    f = np.frombuffer(flags, dtype=np.uint8)[order]
    c = np.frombuffer(counts, dtype=np.uint32)[order]
    d = np.frombuffer(days, dtype=np.uint16)[order]
    del order
    starts = np.flatnonzero(np.concatenate(([True], k[1:] != k[:-1])))
    out_keys = k[starts]
    out_flags = np.bitwise_or.reduceat(f, starts)
    out_counts = np.minimum(np.add.reduceat(c.astype(np.uint64), starts), 2**32 - 1)
    first = np.minimum.reduceat(d, starts)
    last = np.maximum.reduceat(np.where(d == NO_DAY, 0, d).astype(np.uint16), starts)
    return out_keys, out_flags, out_counts.astype(np.uint32), first, last


def _write(
    directory: Path,
    table: Table,
    allow: np.ndarray[Any, Any],
    rules: list[PrefixRule],
    fp_rate: float,
) -> list[str]:
    keys, flags, counts, first, last = table
    for name, arr, dtype in (
        ("keys.u64", keys, "<u8"),
        ("flags.u8", flags, "u1"),
        ("complaints.u32", counts, "<u4"),
        ("first_seen.u16", first, "<u2"),
        ("last_seen.u16", last, "<u2"),
        ("allow.u64", allow, "<u8"),
    ):
        arr.astype(dtype, copy=False).tofile(directory / name)
    bloom = Bloom(max(len(keys), 1), fp_rate, hash_func=BLOOM_HASH)
    for start in range(0, len(keys), BLOOM_CHUNK):
        bloom.update(keys[start : start + BLOOM_CHUNK].tolist())
    bloom.save(str(directory / "bloom.bin"))
    (directory / "prefixes.json").write_text(
        json.dumps([[r.prefix, r.action] for r in rules]) + "\n", encoding="utf-8"
    )
    return [*ARTEFACT_FILES, "problems.tsv"]


VERSION = re.compile(r"\d{8}T\d{6}\.\d{3}Z-[0-9a-f]{8}")


def _version(sources: list[Source]) -> str:
    now = datetime.datetime.now(datetime.UTC)
    stamp = now.strftime("%Y%m%dT%H%M%S.") + f"{now.microsecond // 1000:03d}"
    digest = hashlib.sha256()
    for s in sources:
        digest.update(
            f"{s.kind.value}:{s.path}:{s.path.stat().st_size}:{s.path.stat().st_mtime_ns}".encode()
        )
    return f"{stamp}Z-{digest.hexdigest()[:8]}"


def _report_conflicts(rules: list[PrefixRule], reports: list[Report]) -> None:
    """The same prefix with two actions: the last one wins, but say so."""
    seen: dict[str, str] = {}
    for rule in rules:
        if seen.get(rule.prefix, rule.action) != rule.action:
            report = next(r for r in reports if r.source.kind is Kind.PREFIX)
            report.problem(0, f"+{rule.prefix}: {rule.action} overrides {seen[rule.prefix]}")
        seen[rule.prefix] = rule.action


def _clear_stale(out: Path, age: float = 3600.0) -> None:
    """Remove what builds that died (disk full, killed) left behind."""
    now = time.time()
    for p in out.iterdir():
        if p.name.startswith(".") and p.name.endswith(".tmp") and now - p.stat().st_mtime > age:
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)


def _prune(out: Path, current: str, keep: int) -> None:
    """Delete all but the newest ``keep`` versions; nothing else in ``out``."""
    versions = sorted(
        (p for p in out.iterdir() if p.is_dir() and VERSION.fullmatch(p.name)),
        key=lambda p: (p.stat().st_mtime_ns, p.name),
    )
    for old in versions[:-keep]:
        if old.name != current:
            shutil.rmtree(old, ignore_errors=True)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
