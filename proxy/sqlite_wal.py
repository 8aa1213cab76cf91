"""Switching a SQLite file to WAL when several processes open it at once.

The switch takes an exclusive lock, and SQLite answers "database is locked"
at once instead of calling the busy handler while another connection holds
the file: workers opening a new file together (at start, or a new day's
decision records at midnight) fail that way. The switch is retried for a
bounded time; a file already in WAL answers at once.
"""

from __future__ import annotations

import sqlite3
import time

RETRY_SECONDS = 0.01


def use_wal(db: sqlite3.Connection, wait: float) -> None:
    """``PRAGMA journal_mode = WAL``, retried for up to ``wait`` seconds
    while the file is locked; other errors, and a lock held past ``wait``,
    are raised."""
    deadline = time.monotonic() + wait
    while True:
        try:
            db.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(RETRY_SECONDS)
