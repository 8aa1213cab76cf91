"""Traceback: which upstream peer sent a caller's calls in a time range.

What an Industry Traceback Group request asks a gateway provider: for a
caller number and a window, the peer(s) the calls came from, how many from
each, first and last seen, and sample records (with the source address and
the PASSporT's origid, which name the upstream and the originating carrier).
Shared by ``robocall-shield traceback`` and ``GET /admin/traceback``.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..sip.numbers import e164_key
from .store import COLUMNS, Record, connect, files_between, iso, read_records

SAMPLES = 20  # records shown per peer
MAX_WINDOW_DAYS = 400
FORMATS = ("json", "csv")


class QueryError(ValueError):
    """Bad input to a query; the message says what and how to fix it."""


def parse_caller(text: str) -> int:
    """The E.164 key of a caller given in any NANP or '+' form."""
    key = e164_key(text.strip()) if text else None
    if key is None:
        raise QueryError(
            f"caller {text!r} is not a telephone number (use E.164 like +12125550142, "
            "or a 10- or 11-digit NANP number)"
        )
    return key


_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def parse_time(text: str, what: str, *, end: bool = False) -> float:
    """Unix time of an ISO 8601 date or date-time (no zone: UTC). A plain
    date as the end of a range means the end of that day, so
    ``--from 2025-09-01 --to 2025-09-01`` is that whole day."""
    value = text.strip()
    try:
        if _DATE.fullmatch(value):
            day = dt.date.fromisoformat(value)
            start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
            return (start + dt.timedelta(days=1) if end else start).timestamp()
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise QueryError(
            f"{what} {text!r} is not an ISO 8601 date or time (e.g. 2025-09-01 or "
            "2025-09-01T14:30:00Z)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def parse_window(start: str, end: str) -> tuple[float, float]:
    t1, t2 = parse_time(start, "from"), parse_time(end, "to", end=True)
    if t2 <= t1:
        raise QueryError(f"'to' ({end}) must be after 'from' ({start})")
    if t2 - t1 > MAX_WINDOW_DAYS * 86_400:
        raise QueryError(f"the window is over {MAX_WINDOW_DAYS} days; ask for less")
    return t1, t2


@dataclass(slots=True)
class PeerTrace:
    peer: str
    calls: int
    first_seen: float
    last_seen: float
    sources: dict[str, int] = field(default_factory=dict)
    actions: dict[str, int] = field(default_factory=dict)
    origids: dict[str, int] = field(default_factory=dict)
    samples: list[Record] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "peer": self.peer,
            "calls": self.calls,
            "first_seen": iso(self.first_seen),
            "last_seen": iso(self.last_seen),
            "sources": self.sources,
            "actions": self.actions,
            "origids": self.origids,
            "samples": [r.as_dict() for r in self.samples],
        }


@dataclass(slots=True)
class Traceback:
    caller_key: int
    start: float
    end: float
    peers: list[PeerTrace]
    days_searched: int

    @property
    def total(self) -> int:
        return sum(p.calls for p in self.peers)

    def as_dict(self) -> dict[str, object]:
        return {
            "caller": f"+{self.caller_key}",
            "from": iso(self.start),
            "to": iso(self.end),
            "total_calls": self.total,
            "days_searched": self.days_searched,
            "peers": [p.as_dict() for p in self.peers],
        }


_WHERE = "caller_key = ? AND ts >= ? AND ts < ?"


def traceback(directory: Path, caller_key: int, start: float, end: float) -> Traceback:
    """Per peer, busiest first: counts, first/last seen, source addresses,
    actions and origids, and up to ``SAMPLES`` records (the earliest)."""
    paths = files_between(directory, start, end)
    peers: dict[str, PeerTrace] = {}
    args = (caller_key, start, end)
    for path in paths:
        db = connect(path, read_only=True)
        try:
            rows = db.execute(
                "SELECT peer, source, action, origid, count(*), min(ts), max(ts) FROM calls "
                f"WHERE {_WHERE} GROUP BY peer, source, action, origid",
                args,
            ).fetchall()
        finally:
            db.close()
        for peer, source, action, origid, n, first, last in rows:
            trace = peers.get(peer)
            if trace is None:
                trace = peers[peer] = PeerTrace(peer, 0, first, last)
            trace.calls += n
            trace.first_seen = min(trace.first_seen, first)
            trace.last_seen = max(trace.last_seen, last)
            _count(trace.sources, source, n)
            _count(trace.actions, action, n)
            if origid is not None:
                _count(trace.origids, origid, n)
    for trace in peers.values():
        where = f"{_WHERE} AND peer = ?"
        trace.samples = read_records(paths, where, (*args, trace.peer), SAMPLES)
    ordered = sorted(peers.values(), key=lambda t: (-t.calls, t.peer))
    return Traceback(caller_key, start, end, ordered, len(paths))


def _count(counts: dict[str, int], key: str, n: int) -> None:
    counts[key] = counts.get(key, 0) + n


def render_json(result: Traceback) -> str:
    return json.dumps(result.as_dict(), indent=2) + "\n"


CSV_COLUMNS = ("peer", "peer_calls", "peer_first_seen", "peer_last_seen", "time", *COLUMNS)


def render_csv(result: Traceback) -> str:
    """One row per sample record, led by its peer's totals."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for trace in result.peers:
        head = (trace.peer, trace.calls, iso(trace.first_seen), iso(trace.last_seen))
        for r in trace.samples:
            values = [getattr(r, c) for c in COLUMNS]
            values[COLUMNS.index("reasons")] = ",".join(r.reasons)
            writer.writerow((*head, iso(r.ts), *("" if v is None else v for v in values)))
    return out.getvalue()


def render(result: Traceback, fmt: str) -> str:
    if fmt not in FORMATS:
        raise QueryError(f"format {fmt!r}: expected json or csv")
    return render_json(result) if fmt == "json" else render_csv(result)
