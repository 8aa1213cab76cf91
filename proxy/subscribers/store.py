"""The subscriber store: SQLite in WAL mode under the data directory.

Blocking calls; the service runs them on one worker thread, never on the
event loop and never per INVITE. Every change writes an audit row per field
(who, when, old, new) in the same transaction as the change itself.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import ParamSpec, TypeVar

from ..sqlite_wal import use_wal
from .backend import StoreUnavailable
from .model import EMPTY, LISTS, PersonalList, Profile, Subscriber, build_list, profile_of

SCHEMA = """
CREATE TABLE IF NOT EXISTS subscribers (
    number INTEGER PRIMARY KEY,
    opted_in INTEGER NOT NULL,
    policy TEXT NOT NULL,
    reject_anonymous INTEGER NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS list_entries (
    number INTEGER NOT NULL REFERENCES subscribers(number) ON DELETE CASCADE,
    list TEXT NOT NULL CHECK (list IN ('allow', 'block')),
    entry TEXT NOT NULL,
    PRIMARY KEY (number, list, entry)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    actor TEXT NOT NULL,
    number INTEGER NOT NULL,
    field TEXT NOT NULL,
    old TEXT,
    new TEXT
);
CREATE INDEX IF NOT EXISTS audit_number ON audit (number, at);
"""
FIELDS = ("opted_in", "policy", "reject_anonymous", "allow", "block")
P = ParamSpec("P")
R = TypeVar("R")


class SqliteUnavailable(StoreUnavailable, sqlite3.OperationalError):
    """Locked, full, an I/O error. Still an OperationalError, so code that
    was written for SQLite alone catches it as before."""


def guarded(method: Callable[P, R]) -> Callable[P, R]:
    """SQLite's OperationalError out of a store call as SqliteUnavailable."""

    @functools.wraps(method)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except SqliteUnavailable:
            raise
        except sqlite3.OperationalError as exc:
            raise SqliteUnavailable(str(exc)) from exc

    return call


def connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    use_wal(db, 5.0)
    db.execute("PRAGMA synchronous=NORMAL")  # WAL: durable at checkpoint, never corrupt
    db.execute("PRAGMA foreign_keys=ON")
    db.execute("PRAGMA busy_timeout=5000")
    return db


def field_text(sub: Subscriber | None, field: str) -> str | None:
    """A field as the audit trail writes it (None: no subscriber)."""
    if sub is None:
        return None
    value = getattr(sub, field)
    if isinstance(value, PersonalList):
        return ",".join(value.entries())
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class SubscriberStore:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        db.executescript(SCHEMA)

    @guarded
    def load_all(self) -> dict[int, Profile]:
        """Every subscriber's profile, for the in-memory index (start-up)."""
        lists: dict[tuple[int, str], list[str]] = {}
        for number, name, entry in self.db.execute("SELECT number, list, entry FROM list_entries"):
            lists.setdefault((number, name), []).append(entry)
        rows = self.db.execute("SELECT number, opted_in, policy, reject_anonymous FROM subscribers")
        plain: dict[tuple[int, str, int], Profile] = {}
        out: dict[int, Profile] = {}
        for number, opted_in, policy, reject in rows:
            if lists and ((number, "allow") in lists or (number, "block") in lists):
                allow, block = lists.get((number, "allow")), lists.get((number, "block"))
                out[number] = profile_of(
                    bool(opted_in),
                    policy,
                    bool(reject),
                    build_list(allow) if allow else EMPTY,
                    build_list(block) if block else EMPTY,
                )
                continue
            key = (opted_in, policy, reject)
            p = plain.get(key)
            if p is None:
                p = plain[key] = profile_of(bool(opted_in), policy, bool(reject))
            out[number] = p
        return out

    @guarded
    def last_change(self) -> int:
        """The newest audit row: where a reader of later changes starts."""
        return int(self.db.execute("SELECT coalesce(max(id), 0) FROM audit").fetchone()[0])

    @guarded
    def changed_since(self, after: int, limit: int) -> tuple[int, list[int]]:
        """Numbers changed after audit row ``after`` (at most ``limit`` rows
        read), and the last row read."""
        last, times = self.change_times(after, limit)
        return last, list(times)

    @guarded
    def change_times(self, after: int, limit: int) -> tuple[int, dict[int, float]]:
        """As changed_since, with each number's newest change time among the rows read."""
        rows = self.db.execute(
            "SELECT id, number, at FROM audit WHERE id > ? ORDER BY id LIMIT ?", (after, limit)
        ).fetchall()
        times: dict[int, float] = {}
        for _, number, at in rows:
            times[number] = max(times.get(number, at), at)
        return (rows[-1][0] if rows else after), times

    @guarded
    def get(self, number: int) -> Subscriber | None:
        row = self.db.execute(
            "SELECT opted_in, policy, reject_anonymous FROM subscribers WHERE number = ?",
            (number,),
        ).fetchone()
        if row is None:
            return None
        lists = {name: [] for name in LISTS}  # type: dict[str, list[str]]
        for name, entry in self.db.execute(
            "SELECT list, entry FROM list_entries WHERE number = ?", (number,)
        ):
            lists[name].append(entry)
        return Subscriber(
            number,
            bool(row[0]),
            row[1],
            bool(row[2]),
            build_list(lists["allow"]),
            build_list(lists["block"]),
        )

    @guarded
    def get_many(self, numbers: list[int]) -> dict[int, Subscriber | None]:
        return {n: self.get(n) for n in numbers}

    @guarded
    def put(self, new: Subscriber, actor: str, now: float) -> Subscriber | None:
        """Create or replace; returns the previous value."""
        with self._transaction():
            old = self.get(new.number)
            self._write(old, new, actor, now)
        return old

    @guarded
    def put_many(self, subs: Iterable[Subscriber], actor: str, now: float) -> tuple[int, int]:
        """A bulk import in one transaction: all rows or none. (created, updated)."""
        created = updated = 0
        with self._transaction():
            for new in subs:
                old = self.get(new.number)
                if old is None:
                    created += 1
                elif old != new:
                    updated += 1
                self._write(old, new, actor, now)
        return created, updated

    @guarded
    def delete(self, number: int, actor: str, now: float) -> Subscriber | None:
        with self._transaction():
            old = self.get(number)
            if old is not None:
                self.db.execute("DELETE FROM subscribers WHERE number = ?", (number,))
                self._audit(number, old, None, actor, now)
        return old

    @guarded
    def audit(self, number: int, limit: int = 100) -> list[dict[str, object]]:
        rows = self.db.execute(
            "SELECT at, actor, field, old, new FROM audit WHERE number = ? "
            "ORDER BY id DESC LIMIT ?",
            (number, limit),
        )
        return [
            {"at": at, "actor": actor, "field": field, "old": old, "new": new}
            for at, actor, field, old, new in rows
        ]

    @guarded
    def count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM subscribers").fetchone()[0])

    # -- internals -------------------------------------------------------

    def _write(self, old: Subscriber | None, new: Subscriber, actor: str, now: float) -> None:
        if old == new:
            return
        self.db.execute(
            "INSERT INTO subscribers (number, opted_in, policy, reject_anonymous, created_at, "
            "updated_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (number) DO UPDATE SET "
            "opted_in = excluded.opted_in, policy = excluded.policy, "
            "reject_anonymous = excluded.reject_anonymous, updated_at = excluded.updated_at",
            (new.number, new.opted_in, new.policy, new.reject_anonymous, now, now),
        )
        for name in LISTS:
            if old is None or getattr(old, name) != getattr(new, name):
                self.db.execute(
                    "DELETE FROM list_entries WHERE number = ? AND list = ?", (new.number, name)
                )
                self.db.executemany(
                    "INSERT INTO list_entries (number, list, entry) VALUES (?, ?, ?)",
                    [(new.number, name, e) for e in getattr(new, name).entries()],
                )
        self._audit(new.number, old, new, actor, now)

    def _audit(
        self, number: int, old: Subscriber | None, new: Subscriber | None, actor: str, now: float
    ) -> None:
        rows = [
            (now, actor, number, field, field_text(old, field), field_text(new, field))
            for field in FIELDS
            if field_text(old, field) != field_text(new, field)
        ]
        self.db.executemany(
            "INSERT INTO audit (at, actor, number, field, old, new) VALUES (?, ?, ?, ?, ?, ?)",
            rows,
        )

    def _transaction(self) -> _Transaction:
        return _Transaction(self.db)


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, exc: object, tb: object) -> None:
        self.db.execute("COMMIT" if kind is None else "ROLLBACK")
