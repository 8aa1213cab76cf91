"""The subscriber and dispute stores on PostgreSQL: one database shared by
several nodes. Same methods and meaning as the SQLite stores (store.py,
disputes.py): audit rows in the change's own transaction, bulk imports all
or nothing, the global allow list, disputes resolved once.

Following changes (``changed_since``): audit ids come from a bigserial, and
a sequence hands out ids when a transaction asks, not when it commits, so
two writers could commit ids out of order and a follower reading "after 7"
could pass over an 8 committed a moment after 9. Every writing transaction
therefore takes one advisory lock (AUDIT_LOCK) before its first statement
and holds it to its commit: writers take ids one transaction at a time, in
commit order, so the ids a reader can see have no later-filling holes. Rows
of a rolled-back transaction leave gaps that stay gaps. The cost is that
subscriber writes are serialised across nodes, as SQLite serialises them
across workers (BEGIN IMMEDIATE); they are operator and subscriber edits,
not per-call work. A writer waiting over lock_timeout (5 s, say behind a
big import) gets StoreUnavailable, as SQLite's busy timeout gives."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import psycopg

from .backend import Backend
from .disputes import COLUMNS, dispute_row
from .model import EMPTY, LISTS, Profile, Subscriber, build_list, profile_of
from .pg_db import LOCK_TIMEOUT, UNAVAILABLE, Conn, PgDatabase, PgUnavailable, one_line
from .store import FIELDS, field_text

AUDIT_LOCK = 0x7273_6175_6469_7400  # pg_advisory_xact_lock key: "rsaudit"
SCHEMA_LOCK = 0x7273_7363_6865_6D61  # "rsschema": nodes starting together
IMPORT_CHUNK = 20_000  # subscribers read and written per round of a bulk import
SMALL_WRITE = 100  # subscribers written with parameters; more go by COPY

TABLES = ["subscribers", "list_entries", "audit", "disputes", "global_allow"]
SCHEMA = """
CREATE TABLE IF NOT EXISTS subscribers (
    number bigint PRIMARY KEY,
    opted_in boolean NOT NULL,
    policy text NOT NULL,
    reject_anonymous boolean NOT NULL,
    created_at double precision NOT NULL,
    updated_at double precision NOT NULL
);
CREATE TABLE IF NOT EXISTS list_entries (
    number bigint NOT NULL REFERENCES subscribers (number) ON DELETE CASCADE,
    list text NOT NULL CHECK (list IN ('allow', 'block')),
    entry text NOT NULL,
    PRIMARY KEY (number, list, entry)
);
CREATE TABLE IF NOT EXISTS audit (
    id bigserial PRIMARY KEY,
    at double precision NOT NULL,
    actor text NOT NULL,
    number bigint NOT NULL,
    field text NOT NULL,
    old text,
    new text
);
CREATE INDEX IF NOT EXISTS audit_number ON audit (number, at);
CREATE TABLE IF NOT EXISTS disputes (
    id bigserial PRIMARY KEY,
    filed_at double precision NOT NULL,
    number bigint NOT NULL,
    contact text NOT NULL,
    description text NOT NULL,
    source text NOT NULL,
    status text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'allowed', 'rejected')),
    resolved_at double precision,
    resolved_by text,
    scope text,
    note text
);
CREATE INDEX IF NOT EXISTS disputes_status ON disputes (status, filed_at);
CREATE INDEX IF NOT EXISTS disputes_source ON disputes (source, filed_at);
CREATE TABLE IF NOT EXISTS global_allow (
    number bigint PRIMARY KEY,
    added_at double precision NOT NULL,
    added_by text NOT NULL,
    dispute bigint
);
"""


def open_postgresql(dsn: str, lock_timeout: int = LOCK_TIMEOUT) -> Backend:
    """Connect and create the tables if missing: StoreUnavailable when the
    server cannot be reached. ``lock_timeout``: ms a write waits for a lock."""
    db = PgDatabase(dsn, lock_timeout)
    try:
        try:
            db.write(_create_tables, lock=SCHEMA_LOCK)
        except psycopg.Error as exc:  # say, no right to create them
            raise PgUnavailable(f"cannot create the subscriber tables: {one_line(exc)}") from None
        return Backend(
            "postgresql", db.where, PgSubscriberStore(db), PgDisputeStore(db), db.close,
            UNAVAILABLE,
        )  # fmt: skip
    except BaseException:
        db.close()
        raise


def _create_tables(c: Conn) -> None:
    """Only when missing: a role with no right to create tables can use
    tables its administrator created from SCHEMA."""
    row = c.execute("SELECT count(to_regclass(t)) FROM unnest(%s::text[]) AS t", (TABLES,))
    if row.fetchone() != (len(TABLES),):
        c.execute(SCHEMA)


class PgSubscriberStore:
    def __init__(self, db: PgDatabase) -> None:
        self.db = db

    def load_all(self) -> dict[int, Profile]:
        """Every subscriber's profile, from one snapshot."""
        return self.db.read(_load_all, snapshot=True)

    def last_change(self) -> int:
        row = self.db.read(lambda c: c.execute("SELECT coalesce(max(id), 0) FROM audit").fetchone())
        return int(row[0]) if row else 0

    def changed_since(self, after: int, limit: int) -> tuple[int, list[int]]:
        """See SubscriberStoreApi.changed_since; AUDIT_LOCK (above) is what
        makes the ids commit in order."""
        last, times = self.change_times(after, limit)
        return last, list(times)

    def change_times(self, after: int, limit: int) -> tuple[int, dict[int, float]]:
        """As changed_since, with each number's newest change time among the rows read."""
        rows = self.db.read(
            lambda c: c.execute(
                "SELECT id, number, at FROM audit WHERE id > %s ORDER BY id LIMIT %s",
                (after, limit),
            ).fetchall()
        )
        times: dict[int, float] = {}
        for _, number, at in rows:
            times[int(number)] = max(times.get(int(number), float(at)), float(at))
        return (int(rows[-1][0]) if rows else after), times

    def get(self, number: int) -> Subscriber | None:
        return self.get_many([number])[number]

    def get_many(self, numbers: list[int]) -> dict[int, Subscriber | None]:
        return self.db.read(lambda c: _get_many(c, numbers))

    def put(self, new: Subscriber, actor: str, now: float) -> Subscriber | None:
        """Create or replace; returns the previous value."""

        def work(c: Conn) -> Subscriber | None:
            old = _get_many(c, [new.number])[new.number]
            _write(c, _Plan([(old, new)], actor, now))
            return old

        return self.db.write(work, lock=AUDIT_LOCK)

    def put_many(self, subs: Iterable[Subscriber], actor: str, now: float) -> tuple[int, int]:
        """A bulk import in one transaction: all rows or none. (created, updated)."""
        todo = list(subs)  # read whole first: a connection lost at once retries from the start

        def work(c: Conn) -> tuple[int, int]:
            created = updated = 0
            for start in range(0, len(todo), IMPORT_CHUNK):
                chunk = todo[start : start + IMPORT_CHUNK]
                current = _get_many(c, list({s.number for s in chunk}))
                writes: list[tuple[Subscriber | None, Subscriber]] = []
                for new in chunk:
                    old = current[new.number]  # a number twice: its earlier row is old
                    if old is None:
                        created += 1
                    elif old != new:
                        updated += 1
                    writes.append((old, new))
                    current[new.number] = new
                plan = _Plan(writes, actor, now)
                if len(plan.final) > SMALL_WRITE:
                    _write_bulk(c, plan)
                else:
                    _write(c, plan)
            return created, updated

        return self.db.write(work, lock=AUDIT_LOCK)

    def delete(self, number: int, actor: str, now: float) -> Subscriber | None:
        def work(c: Conn) -> Subscriber | None:
            old = _get_many(c, [number])[number]
            if old is not None:
                c.execute("DELETE FROM subscribers WHERE number = %s", (number,))
                _insert_audit(c, _audit_rows(number, old, None, actor, now))
            return old

        return self.db.write(work, lock=AUDIT_LOCK)

    def audit(self, number: int, limit: int = 100) -> list[dict[str, object]]:
        rows = self.db.read(
            lambda c: c.execute(
                "SELECT at, actor, field, old, new FROM audit WHERE number = %s "
                "ORDER BY id DESC LIMIT %s",
                (number, limit),
            ).fetchall()
        )
        return [
            {"at": at, "actor": actor, "field": field, "old": old, "new": new}
            for at, actor, field, old, new in rows
        ]

    def count(self) -> int:
        row = self.db.read(lambda c: c.execute("SELECT count(*) FROM subscribers").fetchone())
        return int(row[0]) if row else 0


class PgDisputeStore:
    def __init__(self, db: PgDatabase) -> None:
        self.db = db

    def file(self, number: int, contact: str, description: str, source: str, now: float) -> int:
        row = self.db.write(
            lambda c: c.execute(
                "INSERT INTO disputes (filed_at, number, contact, description, source) "
                "VALUES (%s, %s, %s, %s, %s) RETURNING id",
                (now, number, contact, description, source),
            ).fetchone()
        )
        assert row is not None  # INSERT ... RETURNING gives its row
        return int(row[0])

    def get(self, dispute_id: int) -> dict[str, object] | None:
        return self.db.read(lambda c: _dispute(c, dispute_id))

    def after(self, dispute_id: int, limit: int = 500) -> list[dict[str, object]]:
        """The oldest ``limit`` disputes with an id above ``dispute_id``."""
        query = f"SELECT {COLUMNS} FROM disputes WHERE id > %s ORDER BY id LIMIT %s"
        rows = self.db.read(lambda c: c.execute(query, (dispute_id, limit)).fetchall())
        return [dispute_row(r) for r in rows]

    def list(self, status: str | None, limit: int = 500) -> list[dict[str, object]]:
        if status is None:
            query = f"SELECT {COLUMNS} FROM disputes ORDER BY id DESC LIMIT %s"
            args: tuple[Any, ...] = (limit,)
        else:
            query = f"SELECT {COLUMNS} FROM disputes WHERE status = %s ORDER BY id LIMIT %s"
            args = (status, limit)
        rows = self.db.read(lambda c: c.execute(query, args).fetchall())
        return [dispute_row(r) for r in rows]

    def resolve(
        self, dispute_id: int, status: str, scope: str | None, note: str, actor: str, now: float
    ) -> dict[str, object] | None:
        """Close an open dispute; None when it is not open (or not there).
        Two nodes resolving it at once: the second waits for the first's
        row lock, then finds it no longer open."""

        def work(c: Conn) -> dict[str, object] | None:
            row = c.execute(
                "UPDATE disputes SET status = %s, resolved_at = %s, resolved_by = %s, "
                "scope = %s, note = %s WHERE id = %s AND status = 'open' RETURNING number",
                (status, now, actor, scope, note, dispute_id),
            ).fetchone()
            if row is None:
                return None
            if status == "allowed" and scope == "global":
                c.execute(
                    "INSERT INTO global_allow (number, added_at, added_by, dispute) "
                    "VALUES (%s, %s, %s, %s) ON CONFLICT (number) DO UPDATE SET "
                    "added_at = excluded.added_at, added_by = excluded.added_by, "
                    "dispute = excluded.dispute",
                    (row[0], now, actor, dispute_id),
                )
            return _dispute(c, dispute_id)

        return self.db.write(work)

    def global_allow(self) -> set[int]:
        rows = self.db.read(lambda c: c.execute("SELECT number FROM global_allow").fetchall())
        return {int(n) for (n,) in rows}

    def by_source(self, source: str) -> int | None:
        row = self.db.read(
            lambda c: c.execute(
                "SELECT min(id) FROM disputes WHERE source = %s", (source,)
            ).fetchone()
        )
        return int(row[0]) if row and row[0] is not None else None

    def filed_since(self, source: str, since: float) -> int:
        row = self.db.read(
            lambda c: c.execute(
                "SELECT count(*) FROM disputes WHERE source = %s AND filed_at >= %s",
                (source, since),
            ).fetchone()
        )
        return int(row[0]) if row else 0


# -- on one connection, inside the caller's transaction or read ---------------


def _dispute(c: Conn, dispute_id: int) -> dict[str, object] | None:
    row = c.execute(f"SELECT {COLUMNS} FROM disputes WHERE id = %s", (dispute_id,)).fetchone()
    return dispute_row(row) if row else None


def _load_all(c: Conn) -> dict[int, Profile]:
    lists: dict[tuple[int, str], list[str]] = {}
    for number, name, entry in c.execute("SELECT number, list, entry FROM list_entries"):
        lists.setdefault((number, name), []).append(entry)
    out: dict[int, Profile] = {}
    rows = c.execute("SELECT number, opted_in, policy, reject_anonymous FROM subscribers")
    for number, opted_in, policy, reject in rows:
        allow, block = lists.get((number, "allow")), lists.get((number, "block"))
        out[number] = profile_of(  # interned when both lists are empty
            opted_in,
            policy,
            reject,
            build_list(allow) if allow else EMPTY,
            build_list(block) if block else EMPTY,
        )
    return out


def _get_many(c: Conn, numbers: list[int]) -> dict[int, Subscriber | None]:
    """Each number's subscriber (None: not there), from one statement."""
    found: dict[int, tuple[bool, str, bool]] = {}
    lists: dict[tuple[int, str], list[str]] = {}
    for number, opted_in, policy, reject, name, entry in c.execute(
        "SELECT s.number, s.opted_in, s.policy, s.reject_anonymous, e.list, e.entry "
        "FROM subscribers s LEFT JOIN list_entries e ON e.number = s.number "
        "WHERE s.number = ANY(%s::bigint[])",
        (numbers,),
    ):
        found[number] = (opted_in, policy, reject)
        if name is not None:
            lists.setdefault((number, name), []).append(entry)
    out: dict[int, Subscriber | None] = dict.fromkeys(numbers)
    for number, (opted_in, policy, reject) in found.items():
        out[number] = Subscriber(
            number,
            opted_in,
            policy,
            reject,
            build_list(lists.get((number, "allow"), [])),
            build_list(lists.get((number, "block"), [])),
        )
    return out


AuditRow = tuple[float, str, int, str, str | None, str | None]


class _Plan:
    """What writing each (old, new) in order comes to: the final value per
    number, the (number, list) pairs to write again, the audit rows."""

    def __init__(
        self, writes: list[tuple[Subscriber | None, Subscriber]], actor: str, now: float
    ) -> None:
        self.now = now
        self.final: dict[int, Subscriber] = {}
        rewrite: dict[tuple[int, str], None] = {}  # ordered, without repeats
        self.audit: list[AuditRow] = []
        for old, new in writes:
            if old == new:
                continue
            self.final[new.number] = new
            for name in LISTS:
                if old is None or getattr(old, name) != getattr(new, name):
                    rewrite[(new.number, name)] = None
            self.audit += _audit_rows(new.number, old, new, actor, now)
        self.rewrite = list(rewrite)

    def entries(self) -> list[tuple[int, str, str]]:
        return [
            (n, name, e) for n, name in self.rewrite for e in getattr(self.final[n], name).entries()
        ]


UPSERT = (
    "ON CONFLICT (number) DO UPDATE SET opted_in = excluded.opted_in, "
    "policy = excluded.policy, reject_anonymous = excluded.reject_anonymous, "
    "updated_at = excluded.updated_at"
)


def _write(c: Conn, plan: _Plan) -> None:
    """A few subscribers, in four statements."""
    if not plan.final:
        return
    subs = list(plan.final.values())
    c.execute(
        "INSERT INTO subscribers (number, opted_in, policy, reject_anonymous, created_at, "
        "updated_at) SELECT n, o, p, r, %s, %s FROM unnest(%s::bigint[], %s::boolean[], "
        "%s::text[], %s::boolean[]) AS t (n, o, p, r) " + UPSERT,
        (
            plan.now,
            plan.now,
            [s.number for s in subs],
            [s.opted_in for s in subs],
            [s.policy for s in subs],
            [s.reject_anonymous for s in subs],
        ),
    )
    c.execute(
        "DELETE FROM list_entries e USING unnest(%s::bigint[], %s::text[]) AS t (n, l) "
        "WHERE e.number = t.n AND e.list = t.l",
        ([n for n, _ in plan.rewrite], [name for _, name in plan.rewrite]),
    )
    entries = plan.entries()
    if entries:
        c.execute(
            "INSERT INTO list_entries (number, list, entry) "
            "SELECT * FROM unnest(%s::bigint[], %s::text[], %s::text[])",
            tuple(list(column) for column in zip(*entries, strict=True)),
        )
    _insert_audit(c, plan.audit)


def _write_bulk(c: Conn, plan: _Plan) -> None:
    """Many subscribers: COPY (formatted in C) into temporary tables and the
    tables themselves; array parameters would be formatted in Python."""
    c.execute(
        "CREATE TEMPORARY TABLE IF NOT EXISTS import_subscribers (number bigint, "
        "opted_in boolean, policy text, reject_anonymous boolean) ON COMMIT DROP; "
        "CREATE TEMPORARY TABLE IF NOT EXISTS import_lists (number bigint, list text) "
        "ON COMMIT DROP; TRUNCATE import_subscribers, import_lists"
    )
    cur = c.cursor()
    with cur.copy("COPY import_subscribers FROM STDIN") as copy:
        for s in plan.final.values():
            copy.write_row((s.number, s.opted_in, s.policy, s.reject_anonymous))
    c.execute(
        "INSERT INTO subscribers (number, opted_in, policy, reject_anonymous, created_at, "
        "updated_at) SELECT number, opted_in, policy, reject_anonymous, %s, %s "
        "FROM import_subscribers " + UPSERT,
        (plan.now, plan.now),
    )
    with cur.copy("COPY import_lists FROM STDIN") as copy:
        for row in plan.rewrite:
            copy.write_row(row)
    c.execute(
        "DELETE FROM list_entries e USING import_lists t "
        "WHERE e.number = t.number AND e.list = t.list"
    )
    with cur.copy("COPY list_entries (number, list, entry) FROM STDIN") as copy:
        for entry in plan.entries():
            copy.write_row(entry)
    with cur.copy("COPY audit (at, actor, number, field, old, new) FROM STDIN") as copy:
        for audit in plan.audit:  # ids follow the order of the rows
            copy.write_row(audit)


def _audit_rows(
    number: int, old: Subscriber | None, new: Subscriber | None, actor: str, now: float
) -> list[AuditRow]:
    rows: list[AuditRow] = []
    for field in FIELDS:
        before, after = field_text(old, field), field_text(new, field)
        if before != after:
            rows.append((now, actor, number, field, before, after))
    return rows


def _insert_audit(c: Conn, rows: list[AuditRow]) -> None:
    """In the order given: ids follow it (ORDER BY the arrays' ordinality)."""
    if rows:
        c.execute(
            "INSERT INTO audit (at, actor, number, field, old, new) "
            "SELECT at, actor, number, field, old, new FROM unnest(%s::float8[], %s::text[], "
            "%s::bigint[], %s::text[], %s::text[], %s::text[]) WITH ORDINALITY "
            "AS t (at, actor, number, field, old, new, i) ORDER BY i",
            tuple(list(column) for column in zip(*rows, strict=True)),
        )
