"""Operator overrides of peer actions and their audit trail, in one small
SQLite file beside the subscriber store ([peer_policy] store).

SQLite rather than a JSONL file: an override and its audit row are written
in one transaction, so neither exists without the other after a crash (a
torn last line would need repair, and "what is in force" would be a replay
of the whole history); a peer's audit rows are read by index; and the
workers of one host share the file, following its changes the way they
follow the subscriber store. Synchronous, so callers run it on a thread.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from ..sqlite_wal import use_wal
from .actions import Override, Setting

SCHEMA = """
CREATE TABLE IF NOT EXISTS peer_override (
    peer TEXT PRIMARY KEY,
    action TEXT NOT NULL,
    throttle_cps REAL NOT NULL,
    reason TEXT NOT NULL,
    actor TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS peer_action_audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    peer TEXT NOT NULL,
    actor TEXT NOT NULL,
    client TEXT NOT NULL,
    kind TEXT NOT NULL,
    old_action TEXT NOT NULL,
    old_throttle_cps REAL NOT NULL,
    new_action TEXT NOT NULL,
    new_throttle_cps REAL NOT NULL,
    effective TEXT NOT NULL,
    reason TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS peer_action_audit_by_peer ON peer_action_audit (peer, id);
"""
BUSY_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class AuditRow:
    id: int
    at: float
    peer: str
    actor: str
    client: str
    kind: str  # "set" or "clear"
    old: Setting  # the peer's own action before: override, else configured
    new: Setting  # ... and after
    effective: str  # the effective action that resulted, as text
    reason: str

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "at": self.at,
            "peer": self.peer,
            "actor": self.actor,
            "client": self.client,
            "kind": self.kind,
            "old": {"action": self.old.action, "throttle_cps": self.old.throttle_cps},
            "new": {"action": self.new.action, "throttle_cps": self.new.throttle_cps},
            "effective": self.effective,
            "reason": self.reason,
        }


class PeerStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._open()) as db, db:
            db.executescript(SCHEMA)

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT)
        use_wal(db, BUSY_TIMEOUT)  # workers open a new file together
        db.execute("PRAGMA synchronous=FULL")  # an acknowledged change survives a power cut
        return db

    def overrides(self) -> dict[str, Override]:
        with closing(self._open()) as db:
            rows = db.execute(
                "SELECT peer, action, throttle_cps, reason, actor, at FROM peer_override"
            ).fetchall()
        return {
            str(peer): Override(
                Setting(str(action), float(cps)), str(reason), str(actor), float(at)
            )
            for peer, action, cps, reason, actor, at in rows
        }

    def version(self) -> int:
        """The newest audit row's id: it changes with every write."""
        with closing(self._open()) as db:
            (newest,) = db.execute("SELECT coalesce(max(id), 0) FROM peer_action_audit").fetchone()
        return int(newest)

    def record(
        self,
        peer: str,
        override: Override | None,
        old: Setting,
        new: Setting,
        effective: str,
        client: str,
        actor: str,
        reason: str,
        at: float,
    ) -> AuditRow:
        """Set (or, with ``override`` None, clear) a peer's override and
        append its audit row, in one transaction."""
        kind = "clear" if override is None else "set"
        with closing(self._open()) as db, db:
            if override is None:
                db.execute("DELETE FROM peer_override WHERE peer = ?", (peer,))
            else:
                s = override.setting
                db.execute(
                    "INSERT OR REPLACE INTO peer_override VALUES (?, ?, ?, ?, ?, ?)",
                    (peer, s.action, s.throttle_cps, reason, actor, at),
                )
            cur = db.execute(
                "INSERT INTO peer_action_audit (at, peer, actor, client, kind, old_action, "
                "old_throttle_cps, new_action, new_throttle_cps, effective, reason) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (at, peer, actor, client, kind, old.action, old.throttle_cps, new.action,
                 new.throttle_cps, effective, reason),
            )  # fmt: skip
            row_id = int(cur.lastrowid or 0)
        return AuditRow(row_id, at, peer, actor, client, kind, old, new, effective, reason)

    def audit(self, peer: str, limit: int = 100, before: int | None = None) -> list[AuditRow]:
        """A peer's audit rows, newest first."""
        with closing(self._open()) as db:
            rows = db.execute(
                "SELECT id, at, peer, actor, client, kind, old_action, old_throttle_cps, "
                "new_action, new_throttle_cps, effective, reason FROM peer_action_audit "
                "WHERE peer = ? AND id < ? ORDER BY id DESC LIMIT ?",
                (peer, before if before is not None else 1 << 62, limit),
            ).fetchall()
        return [_audit_row(r) for r in rows]


def _audit_row(r: tuple[object, ...]) -> AuditRow:
    return AuditRow(
        id=int(str(r[0])),
        at=float(str(r[1])),
        peer=str(r[2]),
        actor=str(r[3]),
        client=str(r[4]),
        kind=str(r[5]),
        old=Setting(str(r[6]), float(str(r[7]))),
        new=Setting(str(r[8]), float(str(r[9]))),
        effective=str(r[10]),
        reason=str(r[11]),
    )
