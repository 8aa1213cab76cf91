"""Decision records on disk: one SQLite file per UTC day.

``<dir>/calls-YYYY-MM-DD.sqlite`` holds the calls screened that day (by the
record's Unix time, in UTC), so retention deletes whole files and a query
for a time range opens only the days it covers. Files are in WAL mode:
readers (traceback, reports) never block the writer, and the workers of
one node can each write to the same day file (busy timeout).

Everything here blocks: it runs on the recorder's writer thread or in a
command, never on the event loop.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime as dt
import errno
import json
import logging
import os
import re
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..events import Screened
from ..sqlite_wal import use_wal

log = logging.getLogger("robocall_shield.records")

DAY = 86_400
BUSY_TIMEOUT = 10.0  # seconds a writer or reader waits on another's lock
_NAME = re.compile(r"calls-(\d{4}-\d{2}-\d{2})\.sqlite")
MAX_PAYLOAD = 3072  # base64 characters of a PASSporT payload worth decoding

COLUMNS = (
    "ts",  # Unix seconds (wall clock) the call was screened
    "call_id",
    "method",  # INVITE or MESSAGE
    "caller",  # digits as received (None: withheld)
    "caller_key",  # E.164 integer of the caller, for traceback in any form
    "callee",
    "callee_key",
    "source",  # the address the request came from
    "peer",  # its [[peers]] name, or "unknown"
    "attest",  # the PASSporT attest claim (A/B/C), as signed
    "verified",  # our own STIR verification result (verstat), when [stir] is on
    "verstat",  # the verification result an upstream put on the caller
    "origid",  # the PASSporT origid claim: the originating carrier's trace id
    "action",  # pass, label or block: what was done
    "score",
    "reasons",  # comma-separated tags
    "decided_by",  # the check that decided
)
Row = tuple[
    float, str, str, str | None, int | None, str | None, int | None, str, str,
    str | None, str | None, str | None, str | None, str, float, str, str | None,
]  # fmt: skip

_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    ts REAL NOT NULL, call_id TEXT NOT NULL, method TEXT NOT NULL,
    caller TEXT, caller_key INTEGER, callee TEXT, callee_key INTEGER,
    source TEXT NOT NULL, peer TEXT NOT NULL,
    attest TEXT, verified TEXT, verstat TEXT, origid TEXT,
    action TEXT NOT NULL, score REAL NOT NULL, reasons TEXT NOT NULL, decided_by TEXT
);
CREATE INDEX IF NOT EXISTS calls_caller_ts ON calls (caller_key, ts);
CREATE INDEX IF NOT EXISTS calls_peer_ts ON calls (peer, ts);
"""
_INSERT = f"INSERT INTO calls ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"


def day_of(ts: float) -> dt.date:
    return dt.datetime.fromtimestamp(ts, dt.UTC).date()


def day_start(day: dt.date) -> float:
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp()


def file_name(day: dt.date) -> str:
    return f"calls-{day.isoformat()}.sqlite"


def day_files(directory: Path) -> dict[dt.date, Path]:
    """The day files in ``directory``, by day; other files are ignored."""
    out: dict[dt.date, Path] = {}
    with contextlib.suppress(FileNotFoundError):
        for path in directory.iterdir():
            m = _NAME.fullmatch(path.name)
            if m is None:
                continue
            with contextlib.suppress(ValueError):  # calls-2025-02-30.sqlite: not ours
                out[dt.date.fromisoformat(m.group(1))] = path
    return dict(sorted(out.items()))


def files_between(directory: Path, start: float, end: float) -> list[Path]:
    """Day files that may hold records with ``start <= ts < end``, in order."""
    if end <= start:
        return []
    first, last = day_of(start), day_of(end - 1e-6)
    return [p for d, p in day_files(directory).items() if first <= d <= last]


def row_of(ev: Screened, wall_time: float, peer: str) -> Row:
    """One record; runs on the writer thread (origid decoding included)."""
    call, verdict = ev.call, ev.screening.verdict
    return (
        wall_time, _text(call.call_id), call.method, _opt(call.caller), call.caller_key,
        _opt(call.callee), call.callee_key, call.source, peer, _opt(call.attest), call.verified,
        _opt(call.verstat), _opt(origid_of(call.identity)) if call.identity else None,
        ev.action.value, float(verdict.score), ",".join(verdict.reasons),
        ev.screening.decided_by,
    )  # fmt: skip


def _text(value: str) -> str:
    """Wire text as SQLite can store it: bytes that were not UTF-8 come off
    the parser as lone surrogates, which sqlite3 refuses (the whole batch
    with them); they become U+FFFD."""
    if value.isascii():
        return value
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _opt(value: str | None) -> str | None:
    return None if value is None else _text(value)


def origid_of(identity: str) -> str | None:
    """The ``origid`` claim of the first full-form PASSporT in an Identity
    header, read without verifying it (a record keeps what was claimed).
    Junk of any kind gives None, never an exception. Lenient on purpose:
    the strict parse (stir.passport) costs four times as much, and a token
    it would refuse still names its origid for a traceback."""
    token = identity.split(",", 1)[0].split(";", 1)[0].strip()
    parts = token.split(".")
    if len(parts) != 3 or not parts[1] or len(parts[1]) > MAX_PAYLOAD:
        return None  # not a JWS, or the compact form, which carries no claims
    try:
        raw = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        claims = json.loads(raw)
    except (binascii.Error, ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    origid = claims.get("origid") if isinstance(claims, dict) else None
    return origid[:128] if isinstance(origid, str) and origid else None


def connect(path: Path, *, read_only: bool = False) -> sqlite3.Connection:
    if read_only:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True,
                             timeout=BUSY_TIMEOUT, check_same_thread=False)  # fmt: skip
        db.execute("PRAGMA query_only = ON")
        return db
    db = sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None)
    use_wal(db, BUSY_TIMEOUT)  # the workers open a new day file together
    db.execute("PRAGMA synchronous = NORMAL")  # WAL: a crash loses at most the last commits
    db.executescript(_SCHEMA)
    return db


class DayWriter:
    """The writer thread's side: inserts rows into their day files, keeping
    the files it wrote to last open."""

    OPEN_FILES = 2  # today and, around midnight, yesterday

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        if not os.access(directory, os.W_OK | os.X_OK):  # found at start, not at the first call
            raise PermissionError(errno.EACCES, "not writable", str(directory))
        self._open: dict[dt.date, sqlite3.Connection] = {}

    def insert(self, rows: Sequence[Row]) -> int:
        """Each day's rows in one transaction with one executemany. Returns
        how many rows were refused (a day file that cannot be opened or
        written loses its own rows, not the other days')."""
        by_day: dict[dt.date, list[Row]] = {}
        for row in rows:
            by_day.setdefault(day_of(row[0]), []).append(row)
        refused = 0
        for day, day_rows in by_day.items():
            try:
                db = self._db(day)
                with db:  # a transaction: committed, or rolled back on an error
                    db.execute("BEGIN")
                    db.executemany(_INSERT, day_rows)
            except (sqlite3.Error, OSError, ValueError) as exc:  # ValueError: unstorable text
                self._open.pop(day, None)
                refused += len(day_rows)
                log.error("decision records: %d for %s not written: %s", len(day_rows), day, exc)
        return refused

    def _db(self, day: dt.date) -> sqlite3.Connection:
        db = self._open.pop(day, None)
        if db is None:
            db = connect(self.directory / file_name(day))
            while len(self._open) >= self.OPEN_FILES:
                self._open.pop(next(iter(self._open))).close()
        self._open[day] = db  # most recently used last
        return db

    def sweep(self, today: dt.date, retention_days: int) -> list[Path]:
        """Delete the day files older than ``retention_days`` (today counts
        as one), with their WAL and shared-memory files."""
        oldest_kept = today - dt.timedelta(days=retention_days - 1)
        gone: list[Path] = []
        for day, path in day_files(self.directory).items():
            if day >= oldest_kept:
                break
            db = self._open.pop(day, None)
            if db is not None:
                db.close()
            for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
            gone.append(path)
        return gone

    def close(self) -> None:
        for db in self._open.values():
            db.close()
        self._open.clear()


@dataclass(frozen=True, slots=True)
class Record:
    """One stored decision, as queries return it."""

    ts: float
    call_id: str
    method: str
    caller: str | None
    caller_key: int | None
    callee: str | None
    callee_key: int | None
    source: str
    peer: str
    attest: str | None
    verified: str | None
    verstat: str | None
    origid: str | None
    action: str
    score: float
    reasons: tuple[str, ...]
    decided_by: str | None

    @classmethod
    def from_row(cls, row: Sequence[object]) -> Record:
        values = list(row)
        reasons = str(values[15])
        values[15] = tuple(reasons.split(",")) if reasons else ()
        return cls(*values)  # type: ignore[arg-type]

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "time": iso(self.ts),
            **{c: getattr(self, c) for c in COLUMNS},
        }
        out["caller_e164"] = f"+{self.caller_key}" if self.caller_key else None
        out["reasons"] = list(self.reasons)
        return out


SELECT = f"SELECT {', '.join(COLUMNS)} FROM calls"


def read_records(
    paths: Iterable[Path], where: str, args: Sequence[object], limit: int | None = None
) -> list[Record]:
    """Records matching ``where``, file by file in the files' order, each
    file's in time order; at most ``limit`` in all."""
    sql = f"{SELECT} WHERE {where} ORDER BY ts"
    out: list[Record] = []
    for path in paths:
        left = None if limit is None else limit - len(out)
        if left is not None and left <= 0:
            break
        db = connect(path, read_only=True)
        try:
            rows = db.execute(sql + (f" LIMIT {left}" if left else ""), args).fetchall()
        finally:
            db.close()
        out.extend(Record.from_row(row) for row in rows)
    return out


def iso(ts: float) -> str:
    """UTC ISO 8601 with a Z, to the second."""
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
