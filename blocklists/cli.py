"""``robocall-shield blocklist build|verify|lookup``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from proxy.sip.numbers import digits_of, e164_key

from .build import BuildError, build
from .nanp import invalid_caller
from .sources import Flag, parse_source
from .store import Artefact, ArtefactError

SHOW_PROBLEMS = 20


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("blocklist", help="build, verify and query blocklist artefacts")
    bsub = p.add_subparsers(dest="blocklist_command", required=True)
    b = bsub.add_parser("build", help="build a versioned artefact from list sources")
    b.add_argument(
        "sources",
        nargs="+",
        metavar="KIND:PATH",
        help="ftc:, list:, block:, allow:, dno: or prefix: followed by a file path; "
        "dnc: alone builds a National Do Not Call artefact for [telemarketing] dnc_dir",
    )
    b.add_argument("-o", "--output", required=True, type=Path, help="artefact directory")
    b.add_argument("--fp-rate", type=float, help="Bloom false-positive rate (default: config)")
    b.add_argument("--config", help="TOML file whose [blocklists] fp_rate applies")
    v = bsub.add_parser("verify", help="check an artefact's checksums and structure")
    v.add_argument("directory", type=Path)
    q = bsub.add_parser("lookup", help="look numbers up in an artefact")
    q.add_argument("directory", type=Path)
    q.add_argument("numbers", nargs="+")


def run(args: argparse.Namespace, fp_rate: float) -> int:
    if args.blocklist_command == "build":
        return _build(args, args.fp_rate if args.fp_rate is not None else fp_rate)
    try:
        # lookup is an operator's quick question; verify re-reads every byte
        artefact = Artefact.load(args.directory, verify=args.blocklist_command == "verify")
    except ArtefactError as exc:
        print(f"robocall-shield: artefact error: {exc}", file=sys.stderr)
        return 1
    if args.blocklist_command == "verify":
        c = artefact.counts
        print(
            f"{args.directory}: version {artefact.version} ok: {c.get('numbers', 0)} numbers, "
            f"{c.get('allow', 0)} allowed, {c.get('prefix_rules', 0)} prefix rules"
        )
        return 0
    for text in args.numbers:
        digits = digits_of(text)
        key = e164_key(text)
        if key is None:
            verdict = "invalid number" if invalid_caller(digits, None) else "not a number"
            print(f"{text}: {verdict}")
            continue
        entry = artefact.lookup(key)
        parts = [f"+{key}"]
        parts.append(
            f"listed {Flag(entry.flags)!r} complaints={entry.complaints}" if entry else "not listed"
        )
        if artefact.allowed(key):
            parts.append("allowed")
        rule = artefact.prefix_action(key)
        if rule:
            parts.append(f"prefix +{rule[0]} {rule[1]}")
        if invalid_caller(digits, key):
            parts.append("invalid NANP number")
        print(": ".join(parts[:1]) + ": " + ", ".join(parts[1:]))
    return 0


def _build(args: argparse.Namespace, fp_rate: float) -> int:
    if not 0 < fp_rate < 0.5:
        print(
            f"robocall-shield: --fp-rate must be between 0 and 0.5, got {fp_rate}", file=sys.stderr
        )
        return 2
    try:
        sources = [parse_source(s) for s in args.sources]
        result = build(sources, args.output, fp_rate)
    except (ValueError, BuildError) as exc:
        print(f"robocall-shield: blocklist build: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"robocall-shield: blocklist build: {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 1
    m = result.manifest
    for report in result.reports:
        src = report.source
        print(
            f"{src.kind.value}:{src.path}: {report.rows} rows, {report.entries} entries, "
            f"{report.skipped} skipped, {report.problem_count} malformed"
        )
        for problem in report.problems[:SHOW_PROBLEMS]:
            print(f"  {problem}", file=sys.stderr)
        if report.problem_count > SHOW_PROBLEMS:
            print(
                f"  ... {report.problem_count - SHOW_PROBLEMS} more in "
                f"{args.output}/{result.version}/problems.tsv",
                file=sys.stderr,
            )
    c = m["counts"]
    print(
        f"built {args.output}/{result.version}: {c['numbers']} numbers, {c['allow']} allowed, "
        f"{c['prefix_rules']} prefix rules, {c['problems']} malformed rows, "
        f"{m['build_seconds']} s"
    )
    return 0
