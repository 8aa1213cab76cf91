"""Redress (FCC call-blocking orders): a caller who thinks they were wrongly
blocked files a dispute; the operator allows the number (for one subscriber
or for everyone) or rejects the dispute. Filed and resolved timestamps show
each one was answered within 24 hours."""

from __future__ import annotations

import sqlite3

from .store import guarded

SCHEMA = """
CREATE TABLE IF NOT EXISTS disputes (
    id INTEGER PRIMARY KEY,
    filed_at REAL NOT NULL,
    number INTEGER NOT NULL,
    contact TEXT NOT NULL,
    description TEXT NOT NULL,
    source TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'allowed', 'rejected')),
    resolved_at REAL,
    resolved_by TEXT,
    scope TEXT,
    note TEXT
);
CREATE INDEX IF NOT EXISTS disputes_status ON disputes (status, filed_at);
CREATE TABLE IF NOT EXISTS global_allow (
    number INTEGER PRIMARY KEY,
    added_at REAL NOT NULL,
    added_by TEXT NOT NULL,
    dispute INTEGER
);
"""
STATUSES = ("open", "allowed", "rejected")
COLUMNS = (
    "id, filed_at, number, contact, description, source, status, resolved_at, resolved_by, "
    "scope, note"
)


def dispute_row(r: tuple[object, ...]) -> dict[str, object]:
    d = dict(zip([c.strip() for c in COLUMNS.split(",")], r, strict=True))
    d["number"] = f"+{d['number']}"
    return d


class DisputeStore:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        db.executescript(SCHEMA)

    @guarded
    def file(self, number: int, contact: str, description: str, source: str, now: float) -> int:
        cur = self.db.execute(
            "INSERT INTO disputes (filed_at, number, contact, description, source) "
            "VALUES (?, ?, ?, ?, ?)",
            (now, number, contact, description, source),
        )
        return int(cur.lastrowid or 0)

    @guarded
    def get(self, dispute_id: int) -> dict[str, object] | None:
        r = self.db.execute(f"SELECT {COLUMNS} FROM disputes WHERE id = ?", (dispute_id,))
        row = r.fetchone()
        return dispute_row(row) if row else None

    @guarded
    def after(self, dispute_id: int, limit: int = 500) -> list[dict[str, object]]:
        """The oldest ``limit`` disputes with an id above ``dispute_id``."""
        rows = self.db.execute(
            f"SELECT {COLUMNS} FROM disputes WHERE id > ? ORDER BY id LIMIT ?",
            (dispute_id, limit),
        )
        return [dispute_row(r) for r in rows]

    @guarded
    def list(self, status: str | None, limit: int = 500) -> list[dict[str, object]]:
        if status is None:
            rows = self.db.execute(
                f"SELECT {COLUMNS} FROM disputes ORDER BY id DESC LIMIT ?", (limit,)
            )
        else:
            rows = self.db.execute(
                f"SELECT {COLUMNS} FROM disputes WHERE status = ? ORDER BY id LIMIT ?",
                (status, limit),
            )
        return [dispute_row(r) for r in rows]

    @guarded
    def resolve(
        self, dispute_id: int, status: str, scope: str | None, note: str, actor: str, now: float
    ) -> dict[str, object] | None:
        """Close an open dispute; None when it is not open (or not there)."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            cur = self.db.execute(
                "UPDATE disputes SET status = ?, resolved_at = ?, resolved_by = ?, scope = ?, "
                "note = ? WHERE id = ? AND status = 'open'",
                (status, now, actor, scope, note, dispute_id),
            )
            if cur.rowcount == 1 and status == "allowed" and scope == "global":
                number = self.db.execute(
                    "SELECT number FROM disputes WHERE id = ?", (dispute_id,)
                ).fetchone()[0]
                self.db.execute(
                    "INSERT OR REPLACE INTO global_allow (number, added_at, added_by, dispute) "
                    "VALUES (?, ?, ?, ?)",
                    (number, now, actor, dispute_id),
                )
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return self.get(dispute_id) if cur.rowcount == 1 else None

    @guarded
    def global_allow(self) -> set[int]:
        return {n for (n,) in self.db.execute("SELECT number FROM global_allow")}

    @guarded
    def by_source(self, source: str) -> int | None:
        row = self.db.execute(
            "SELECT min(id) FROM disputes WHERE source = ?", (source,)
        ).fetchone()
        return int(row[0]) if row and row[0] is not None else None

    @guarded
    def filed_since(self, source: str, since: float) -> int:
        return int(
            self.db.execute(
                "SELECT count(*) FROM disputes WHERE source = ? AND filed_at >= ?",
                (source, since),
            ).fetchone()[0]
        )
