"""Monthly compliance reports from the decision records.

``campaigns``: suspected robocall campaigns. A call is *flagged* when it
was blocked or labelled, or scored at least ``min_score`` (an observed-only
verdict still scores). Flagged calls are grouped by the peer that sent them
and the NPA-NXX of the caller number (``+CCNNN`` outside NANP, ``withheld``
without a number), since campaigns rotate caller IDs inside one exchange
but keep the route they buy. Within one group, calls split into separate
campaigns wherever more than ``gap_minutes`` pass without a flagged call:
a campaign is a burst, and the same exchange flagged again next week is a
new one. Groups with fewer than ``min_calls`` calls are noise (one
subscriber's personal block, a neighbour's odd call) and are left out.
The top ``top`` campaigns by volume are reported: volume, distinct
callers and callees (sequential dialling shows as callees ~ volume),
first and last seen, the share blocked, and calls per day.

``peers``: per-peer evidence for a robocall mitigation report: volume,
flagged and blocked shares, the attestation mix, the share that failed our
own STIR verification, distinct callers, and the peer's top campaigns.

Reading is blocking and walks the month's day files once per report; the
distinct-caller count goes through a scratch SQLite file, so memory stays
bounded whatever the month's volume.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import re
import sqlite3
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .query import QueryError
from .store import connect, day_of, files_between, iso

MIN_SCORE = 60.0  # [reputation] label_at's default
GAP_MINUTES = 30.0
MIN_CALLS = 10
TOP = 100
PEER_CAMPAIGNS = 3  # top campaigns listed per peer
_NANP_LOW, _NANP_HIGH = 10_000_000_000, 20_000_000_000
_MONTH = re.compile(r"(\d{4})-(\d{2})")
_FLAGGED = "(action != 'pass' OR score >= ?)"


@dataclass(frozen=True, slots=True)
class Month:
    label: str  # YYYY-MM
    start: float
    end: float
    days: tuple[dt.date, ...]


def parse_month(text: str) -> Month:
    m = _MONTH.fullmatch(text.strip())
    if m is None or not 1 <= int(m.group(2)) <= 12 or int(m.group(1)) < 1970:
        raise QueryError(f"month {text!r}: expected YYYY-MM, e.g. 2025-09")
    year, month = int(m.group(1)), int(m.group(2))
    first = dt.date(year, month, 1)
    after = dt.date(year + month // 12, month % 12 + 1, 1)
    days = tuple(first + dt.timedelta(days=i) for i in range((after - first).days))
    start = dt.datetime(year, month, 1, tzinfo=dt.UTC).timestamp()
    end = dt.datetime(after.year, after.month, 1, tzinfo=dt.UTC).timestamp()
    return Month(f"{year:04d}-{month:02d}", start, end, days)


def prefix_of(key: int | None) -> str:
    """NPA-NXX of a NANP caller; ``+`` and the first five digits otherwise."""
    if key is None:
        return "withheld"
    if _NANP_LOW <= key < _NANP_HIGH:
        national = key - _NANP_LOW
        return f"{national // 10_000_000:03d}-{national // 10_000 % 1000:03d}"
    return f"+{str(key)[:5]}"


@dataclass(slots=True)
class Campaign:
    peer: str
    prefix: str
    first_seen: float
    last_seen: float
    calls: int = 0
    blocked: int = 0
    distinct_callers: int = 0
    distinct_callees: int = 0
    daily: dict[dt.date, int] = field(default_factory=dict)
    _callers: set[int] = field(default_factory=set)
    _callees: set[int] = field(default_factory=set)

    def add(self, ts: float, caller: int | None, callee: int | None, blocked: bool) -> None:
        self.last_seen = ts
        self.calls += 1
        self.blocked += blocked
        if caller is not None:
            self._callers.add(caller)
        if callee is not None:
            self._callees.add(callee)
        day = day_of(ts)
        self.daily[day] = self.daily.get(day, 0) + 1

    def close(self) -> None:
        """Keep the counts, free the sets."""
        self.distinct_callers, self.distinct_callees = len(self._callers), len(self._callees)
        self._callers, self._callees = set(), set()

    @property
    def name(self) -> str:
        return f"{self.peer} {self.prefix} from {iso(self.first_seen)}"

    @property
    def blocked_share(self) -> float:
        return self.blocked / self.calls if self.calls else 0.0


@dataclass(frozen=True, slots=True)
class CampaignReport:
    month: Month
    campaigns: list[Campaign]  # the top ones, busiest first
    flagged_calls: int
    found: int  # campaigns of at least min_calls, before the top cut
    days_read: int
    min_score: float
    gap_minutes: float
    min_calls: int


def find_campaigns(
    directory: Path,
    month: Month,
    *,
    min_score: float = MIN_SCORE,
    gap_minutes: float = GAP_MINUTES,
    min_calls: int = MIN_CALLS,
    top: int = TOP,
) -> CampaignReport:
    gap = gap_minutes * 60.0
    paths = files_between(directory, month.start, month.end)
    open_: dict[tuple[str, str], Campaign] = {}
    done: list[Campaign] = []
    flagged = 0

    def finish(c: Campaign) -> None:
        c.close()
        if c.calls >= min_calls:
            done.append(c)

    sql = (
        "SELECT ts, peer, caller_key, callee_key, action = 'block' FROM calls "
        f"WHERE ts >= ? AND ts < ? AND {_FLAGGED} ORDER BY ts"
    )
    for path in paths:  # day files in order, each in time order: one pass in time
        db = connect(path, read_only=True)
        try:
            for ts, peer, caller, callee, blocked in db.execute(
                sql, (month.start, month.end, min_score)
            ):
                flagged += 1
                key = (peer, prefix_of(caller))
                c = open_.get(key)
                if c is not None and ts - c.last_seen > gap:
                    finish(open_.pop(key))
                    c = None
                if c is None:
                    c = open_[key] = Campaign(peer, key[1], ts, ts)
                c.add(ts, caller, callee, bool(blocked))
        finally:
            db.close()
        for key in [k for k, c in open_.items() if c.last_seen < day_end(path) - gap]:
            finish(open_.pop(key))  # quiet for a gap: free its sets before the next day
    for c in open_.values():
        finish(c)
    done.sort(key=lambda c: (-c.calls, -c.distinct_callees, c.first_seen, c.peer))
    return CampaignReport(
        month, done[:top], flagged, len(done), len(paths), min_score, gap_minutes, min_calls
    )


def day_end(path: Path) -> float:
    day = dt.date.fromisoformat(path.stem.removeprefix("calls-"))
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp() + 86_400


@dataclass(slots=True)
class PeerStats:
    peer: str
    calls: int = 0
    flagged: int = 0
    blocked: int = 0
    attest: dict[str, int] = field(default_factory=dict)  # A, B, C, unsigned
    verify_failed: int = 0  # our own STIR verification said Failed
    distinct_callers: int = 0
    daily: dict[dt.date, int] = field(default_factory=dict)
    campaigns: list[Campaign] = field(default_factory=list)

    def share(self, n: int) -> float:
        return n / self.calls if self.calls else 0.0


@dataclass(frozen=True, slots=True)
class PeerReport:
    month: Month
    peers: list[PeerStats]  # busiest first
    days_read: int
    min_score: float


ATTEST_KINDS = ("A", "B", "C", "unsigned")


def peer_stats(
    directory: Path, month: Month, *, min_score: float = MIN_SCORE,
    campaigns: CampaignReport | None = None,
) -> PeerReport:  # fmt: skip
    paths = files_between(directory, month.start, month.end)
    peers: dict[str, PeerStats] = {}
    sql = (
        f"SELECT peer, count(*), sum({_FLAGGED}), sum(action = 'block'), "
        "coalesce(attest, 'unsigned'), coalesce(sum(verified LIKE '%Failed'), 0), "
        "CAST((ts - ?) / 86400 AS INTEGER) FROM calls WHERE ts >= ? AND ts < ? "
        "GROUP BY 1, 5, 7"
    )
    with tempfile.TemporaryDirectory(prefix="rs-report-") as scratch:
        seen = sqlite3.connect(Path(scratch) / "seen.sqlite", isolation_level=None, uri=True)
        seen.execute(
            "CREATE TABLE seen (peer TEXT, caller_key INTEGER, PRIMARY KEY (peer, caller_key)) "
            "WITHOUT ROWID"
        )
        try:
            for path in paths:
                db = connect(path, read_only=True)
                try:
                    rows = db.execute(sql, (min_score, month.start, month.start, month.end))
                    for peer, n, flagged, blocked, attest, failed, day_index in rows:
                        s = peers.get(peer)
                        if s is None:
                            s = peers[peer] = PeerStats(peer)
                        s.calls += n
                        s.flagged += flagged
                        s.blocked += blocked
                        s.verify_failed += failed
                        kind = attest if attest in ATTEST_KINDS else "unsigned"
                        s.attest[kind] = s.attest.get(kind, 0) + n
                        day = month.days[0] + dt.timedelta(days=day_index)
                        s.daily[day] = s.daily.get(day, 0) + n
                finally:
                    db.close()
                _add_callers(seen, path, month)
            for peer, n in seen.execute("SELECT peer, count(*) FROM seen GROUP BY peer"):
                if peer in peers:
                    peers[peer].distinct_callers = n
        finally:
            seen.close()
    if campaigns is not None:
        for c in campaigns.campaigns:
            s = peers.get(c.peer)
            if s is not None and len(s.campaigns) < PEER_CAMPAIGNS:
                s.campaigns.append(c)
    ordered = sorted(peers.values(), key=lambda s: (-s.calls, s.peer))
    return PeerReport(month, ordered, len(paths), min_score)


def _add_callers(seen: sqlite3.Connection, path: Path, month: Month) -> None:
    """The file's distinct (peer, caller) pairs into the scratch table."""
    seen.execute("ATTACH DATABASE ? AS day", (f"{path.resolve().as_uri()}?mode=ro",))
    try:
        seen.execute(
            "INSERT OR IGNORE INTO seen SELECT DISTINCT peer, caller_key FROM day.calls "
            "WHERE caller_key IS NOT NULL AND ts >= ? AND ts < ?",
            (month.start, month.end),
        )
    finally:
        with contextlib.suppress(sqlite3.Error):
            seen.execute("DETACH DATABASE day")


# -- rendering ----------------------------------------------------------------


def _pct(share: float) -> str:
    return f"{100 * share:.1f}%"


def _md_table(head: Iterable[str], rows: Iterable[Iterable[object]]) -> list[str]:
    head = list(head)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |" for row in rows]
    return lines


CAMPAIGN_COLUMNS = (
    "rank", "peer", "caller_prefix", "calls", "distinct_callers", "distinct_callees",
    "first_seen", "last_seen", "blocked_share",
)  # fmt: skip


def campaign_rows(report: CampaignReport) -> list[tuple[object, ...]]:
    return [
        (i, c.peer, c.prefix, c.calls, c.distinct_callers, c.distinct_callees,
         iso(c.first_seen), iso(c.last_seen), round(c.blocked_share, 4))
        for i, c in enumerate(report.campaigns, 1)
    ]  # fmt: skip


def campaigns_markdown(report: CampaignReport) -> str:
    r = report
    lines = [
        f"# Suspected robocall campaigns, {r.month.label}",
        "",
        f"Flagged calls (blocked, labelled, or scored {r.min_score:g} or more): "
        f"{r.flagged_calls:,}, from {r.days_read} day file(s). A campaign is flagged calls "
        f"from one peer with callers in one NPA-NXX, no gap over {r.gap_minutes:g} minutes, "
        f"at least {r.min_calls} calls; {r.found:,} found, the top {len(r.campaigns)} below.",
        "",
    ]
    if not r.campaigns:
        return "\n".join([*lines, "No campaign found.", ""])
    rows = [(*row[:-1], _pct(c.blocked_share)) for row, c in zip(campaign_rows(r), r.campaigns,
                                                                   strict=True)]  # fmt: skip
    head = ("#", "Peer", "Caller NPA-NXX", "Calls", "Distinct callers", "Distinct callees",
            "First seen (UTC)", "Last seen (UTC)", "Blocked")  # fmt: skip
    return "\n".join([*lines, *_md_table(head, rows), ""])


PEER_COLUMNS = (
    "peer", "calls", "flagged_share", "blocked_share", "attest_a", "attest_b", "attest_c",
    "unsigned", "verify_failed_share", "distinct_callers", "top_campaigns",
)  # fmt: skip


def peer_rows(report: PeerReport) -> list[tuple[object, ...]]:
    out: list[tuple[object, ...]] = []
    for s in report.peers:
        mix = [round(s.share(s.attest.get(k, 0)), 4) for k in ATTEST_KINDS]
        names = "; ".join(f"{c.prefix} ({c.calls} calls from {iso(c.first_seen)[:10]})"
                          for c in s.campaigns)  # fmt: skip
        flagged, blocked = round(s.share(s.flagged), 4), round(s.share(s.blocked), 4)
        failed = round(s.share(s.verify_failed), 4)
        out.append((s.peer, s.calls, flagged, blocked, *mix, failed, s.distinct_callers, names))
    return out


def peers_markdown(report: PeerReport) -> str:
    lines = [
        f"# Per-peer evidence for the robocall mitigation report, {report.month.label}",
        "",
        f"Calls screened per upstream peer, from {report.days_read} day file(s). Flagged: "
        f"blocked, labelled, or scored {report.min_score:g} or more. Attestation is the "
        "PASSporT's attest claim; verify failed is our own STIR verification.",
        "",
    ]
    if not report.peers:
        return "\n".join([*lines, "No calls recorded in this month.", ""])
    rows = []
    for row in peer_rows(report):
        shares = [_pct(float(v)) for v in row[2:9]]  # type: ignore[arg-type]
        rows.append((row[0], f"{row[1]:,}", *shares, f"{row[9]:,}", row[10] or "none"))
    head = ("Peer", "Calls", "Flagged", "Blocked", "A", "B", "C", "Unsigned", "Verify failed",
            "Distinct callers", "Top campaigns (caller NPA-NXX)")  # fmt: skip
    return "\n".join([*lines, *_md_table(head, rows), ""])


def write_csv(path: Path, head: Iterable[str], rows: Iterable[Iterable[object]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(list(head))
        writer.writerows(rows)
