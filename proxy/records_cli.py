"""`robocall-shield traceback` and `robocall-shield report`: read the
decision records ([records] dir) for traceback requests and the monthly
campaign and peer reports. Exit codes: 0 done, 1 the records could not be
read, 2 bad input (a message says which)."""

from __future__ import annotations

import argparse
import sqlite3
import sys
from pathlib import Path
from typing import Any

from .config import Config
from .records.charts import ChartsUnavailable, daily_chart
from .records.query import FORMATS, QueryError, parse_caller, parse_window, render, traceback
from .records.reports import (
    CAMPAIGN_COLUMNS,
    GAP_MINUTES,
    MIN_CALLS,
    MIN_SCORE,
    PEER_COLUMNS,
    TOP,
    CampaignReport,
    PeerReport,
    campaign_rows,
    campaigns_markdown,
    find_campaigns,
    parse_month,
    peer_rows,
    peer_stats,
    peers_markdown,
    write_csv,
)
from .records.store import iso

COMMANDS = ("traceback", "report")


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "traceback", help="which peers sent a caller's calls (answers an ITG traceback request)"
    )
    p.add_argument("--caller", required=True, help="caller number, E.164 or any NANP form")
    p.add_argument("--from", dest="start", required=True, metavar="T1",
                   help="ISO 8601 date or time, UTC unless it says otherwise")  # fmt: skip
    p.add_argument("--to", dest="end", required=True, metavar="T2",
                   help="ISO 8601 date (inclusive: the whole day) or time (exclusive)")  # fmt: skip
    p.add_argument("--format", choices=FORMATS, default="json")
    _source_args(p)

    r = sub.add_parser("report", help="monthly campaign or per-peer report from the records")
    kinds = r.add_subparsers(dest="report", required=True)
    for name, text in (
        ("campaigns", "top suspected robocall campaigns (Markdown, CSV, PNG)"),
        ("peers", "per-peer evidence for a mitigation report (Markdown, CSV, PNG)"),
    ):
        k = kinds.add_parser(name, help=text)
        k.add_argument("--month", required=True, help="YYYY-MM (UTC)")
        k.add_argument("-o", "--output", default=".", metavar="DIR", help="where to write")
        k.add_argument("--min-score", type=float, default=MIN_SCORE,
                       help=f"score that flags a passed call (default {MIN_SCORE:g})")
        k.add_argument("--gap-minutes", type=float, default=GAP_MINUTES,
                       help="quiet time that ends a campaign (default %(default)s)")  # fmt: skip
        k.add_argument("--min-calls", type=int, default=MIN_CALLS,
                       help="fewest calls that make a campaign (default %(default)s)")  # fmt: skip
        k.add_argument("--top", type=int, default=TOP, help="campaigns listed (default 100)")
        _source_args(k)


def _source_args(p: argparse.ArgumentParser) -> None:
    source = p.add_mutually_exclusive_group()
    source.add_argument("--config", help="TOML file; its [records] dir is read")
    source.add_argument("--records-dir", metavar="DIR", help="the records directory itself")


def run(args: argparse.Namespace, cfg: Config) -> int:
    name = f"robocall-shield {args.command}"
    directory = Path(args.records_dir or cfg.records.dir)
    try:
        if not directory.is_dir():
            raise QueryError(f"no records directory {str(directory)!r} (see [records] dir)")
        if args.command == "traceback":
            return _traceback(args, directory)
        return _report(args, directory, name)
    except QueryError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 2
    except (sqlite3.Error, OSError) as exc:
        print(f"{name}: cannot read the records in {directory}: {exc}", file=sys.stderr)
        return 1


def _traceback(args: argparse.Namespace, directory: Path) -> int:
    key = parse_caller(args.caller)
    start, end = parse_window(args.start, args.end)
    sys.stdout.write(render(traceback(directory, key, start, end), args.format))
    return 0


def _report(args: argparse.Namespace, directory: Path, name: str) -> int:
    month = parse_month(args.month)
    if args.min_calls < 1 or args.top < 1 or args.gap_minutes <= 0:
        raise QueryError("--min-calls and --top must be at least 1, --gap-minutes above 0")
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    campaigns = find_campaigns(
        directory, month, min_score=args.min_score, gap_minutes=args.gap_minutes,
        min_calls=args.min_calls, top=args.top,
    )  # fmt: skip
    peers: PeerReport | None = None
    if args.report == "campaigns":
        written = write_campaigns(campaigns, out)
    else:
        peers = peer_stats(directory, month, min_score=args.min_score, campaigns=campaigns)
        written = write_peers(peers, out)
    try:
        written.append(_chart(args.report, campaigns, peers, out))
    except ChartsUnavailable as exc:  # the tables are written all the same
        print(f"{name}: no chart: {exc}", file=sys.stderr)
    for path in written:
        print(path)
    return 0


def write_campaigns(report: CampaignReport, out: Path) -> list[Path]:
    md, table = (out / f"campaigns-{report.month.label}.{ext}" for ext in ("md", "csv"))
    md.write_text(campaigns_markdown(report), encoding="utf-8")
    write_csv(table, CAMPAIGN_COLUMNS, campaign_rows(report))
    return [md, table]


def write_peers(report: PeerReport, out: Path) -> list[Path]:
    md, table = (out / f"peers-{report.month.label}.{ext}" for ext in ("md", "csv"))
    md.write_text(peers_markdown(report), encoding="utf-8")
    write_csv(table, PEER_COLUMNS, peer_rows(report))
    return [md, table]


def _chart(kind: str, campaigns: CampaignReport, peers: PeerReport | None, out: Path) -> Path:
    month = campaigns.month
    path = out / f"{kind}-{month.label}.png"
    if peers is None:
        series = [(f"#{i} {c.peer} {c.prefix} from {iso(c.first_seen)[5:10]}", c.daily)
                  for i, c in enumerate(campaigns.campaigns, 1)]  # fmt: skip
        title = f"Daily flagged calls of the top campaigns, {month.label}"
    else:
        series = [(s.peer, s.daily) for s in peers.peers]
        title = f"Daily calls per peer, {month.label}"
    daily_chart(path, title, month.days, series)
    return path
