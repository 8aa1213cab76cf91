"""One PostgreSQL connection for the subscriber stores (psycopg 3), opened
again after it was lost, and the one place its errors become
``StoreUnavailable``. Blocking; used from the service's store thread."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

import psycopg
from psycopg import errors
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import TupleRow

from .backend import StoreUnavailable, redact

T = TypeVar("T")
Conn = psycopg.Connection[TupleRow]

# libpq settings unless the connection string (or PGCONNECT_TIMEOUT) says
# otherwise: fail fast rather than hang the store thread on a dead peer
DEFAULTS = {
    "application_name": "robocall-shield",
    "connect_timeout": "5",
    "keepalives_idle": "30",
    "keepalives_interval": "10",
    "keepalives_count": "3",
    "tcp_user_timeout": "30000",  # ms of unacknowledged data before the socket gives up
}
# per session: a lock held elsewhere for LOCK_TIMEOUT ms is "unavailable", as
# SQLite's busy_timeout; no statement or abandoned transaction holds locks long
LOCK_TIMEOUT = 5000
SESSION = (
    "SET lock_timeout = {lock}; SET statement_timeout = 60000; "
    "SET idle_in_transaction_session_timeout = 60000"
)
# the store's state rather than a bug: connection lost, locks, timeouts,
# disk full, shutting down (OperationalError), a read-only standby
UNAVAILABLE: tuple[type[Exception], ...] = (
    psycopg.OperationalError,
    errors.ReadOnlySqlTransaction,
    errors.IdleInTransactionSessionTimeout,
)


class PgUnavailable(StoreUnavailable):
    pass


def one_line(exc: BaseException) -> str:
    return redact(" ".join(str(exc).split()))


class PgDatabase:
    def __init__(self, dsn: str, lock_timeout: int = LOCK_TIMEOUT) -> None:
        self.dsn = dsn
        self.session = SESSION.format(lock=int(lock_timeout))
        self.where = redact(dsn)
        try:
            info = conninfo_to_dict(dsn)
        except psycopg.Error:  # libpq's words may quote a piece of the password
            raise PgUnavailable("the PostgreSQL connection string is not valid") from None
        extra = {k: v for k, v in DEFAULTS.items() if k not in info}
        if "PGCONNECT_TIMEOUT" in os.environ:
            extra.pop("connect_timeout", None)
        self.conninfo = make_conninfo(dsn, **extra)
        self.conn: Conn | None = None
        self.connection()  # now: an unreachable server stops start-up with a clear error

    def connection(self) -> Conn:
        if self.conn is None or self.conn.closed:
            try:
                conn = psycopg.connect(self.conninfo, autocommit=True)
            except psycopg.Error as exc:
                raise PgUnavailable(f"cannot connect to PostgreSQL: {one_line(exc)}") from None
            try:
                conn.execute(self.session)
            except psycopg.Error as exc:
                conn.close()
                raise PgUnavailable(f"PostgreSQL: {one_line(exc)}") from None
            self.conn = conn
        return self.conn

    def read(self, work: Callable[[Conn], T], snapshot: bool = False) -> T:
        """Reads, retried once on a new connection when the old one turns
        out to have died while idle (a restarted server, a dropped link).
        ``snapshot``: several statements that must agree with each other."""
        begin = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY" if snapshot else None
        return self._call(work, begin, lock=None, idempotent=True)

    def write(self, work: Callable[[Conn], T], lock: int | None = None) -> T:
        """One transaction: all of ``work`` or none of it. ``lock``: an
        advisory lock taken first and held to the commit."""
        return self._call(work, "BEGIN", lock, idempotent=False)

    def _call(
        self, work: Callable[[Conn], T], begin: str | None, lock: int | None, idempotent: bool
    ) -> T:
        for attempt in (1, 2):
            reused = self.conn is not None and not self.conn.closed
            conn = self.connection()
            began = False
            try:
                if begin is not None:
                    conn.execute(begin)
                    began = True
                if lock is not None:
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock,))
                result = work(conn)
                if begin is not None:
                    # a connection lost here leaves the outcome unknown:
                    # unavailable, and the caller's retry writes the same again
                    conn.execute("COMMIT")
                return result
            except BaseException as exc:
                lost = self._abandon(conn, began)
                if not isinstance(exc, UNAVAILABLE):
                    raise
                # nothing of this call reached the database: safe to send again
                if attempt == 1 and reused and lost and (idempotent or not began):
                    continue
                raise PgUnavailable(f"PostgreSQL: {one_line(exc)}") from exc
        raise AssertionError("unreachable")

    def _abandon(self, conn: Conn, began: bool) -> bool:
        """Roll back after a failure; True when the connection is gone."""
        failed = False
        if began and not (conn.broken or conn.closed):
            try:
                conn.execute("ROLLBACK")
            except psycopg.Error:
                failed = True  # in a state of its own: do not reuse it
        if failed or conn.broken or conn.closed:
            conn.close()
            self.conn = None
            return True
        return False

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
