"""The subscriber service on the event loop: an in-memory index the
screening check reads, and writes that go to the store (SQLite, or
PostgreSQL shared by several nodes) on one worker thread first and reach
the index only once committed."""

from __future__ import annotations

import asyncio
import csv
import io
import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from .backend import SQLITE_FILE, Backend, StoreUnavailable, read_dsn, redact, sqlite_backend
from .model import (
    LISTS,
    MAX_LIST_ENTRIES,
    POLICIES,
    InvalidField,
    Profile,
    Subscriber,
    build_list,
    parse_entry,
    parse_number,
)
from .settings import SubscriberConfig
from .store import connect

T = TypeVar("T")
CSV_COLUMNS = ("number", "opted_in", "policy", "reject_anonymous", "allow", "block")
MAX_IMPORT_ROWS = 1_000_000
FOLLOW_BATCH = 20_000  # audit rows per follow(); a big import is taken in over several


class SubscriberService:
    def __init__(self, where: Path | Backend) -> None:
        """``where``: the SQLite file, or an open store (see ``from_config``)."""
        self.path: Path | None = None  # the SQLite file
        self.db: sqlite3.Connection | None = None  # SQLite's connection
        if isinstance(where, Path):
            self.path, self.db = where, connect(where)
            try:
                where = sqlite_backend(self.db, where)
            except BaseException:
                self.db.close()
                raise
        self.backend = where
        try:
            self._load()
        except BaseException:
            where.close()
            raise
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="subscriber-store")
        self.editing = asyncio.Lock()  # one read-modify-write of a subscriber at a time

    @classmethod
    def from_config(cls, cfg: SubscriberConfig) -> SubscriberService:
        """The store ``[subscribers] backend`` names. StoreUnavailable (or
        sqlite3.Error) when it cannot be opened."""
        if cfg.backend == "postgresql":
            from .pg_store import open_postgresql

            return cls(open_postgresql(read_dsn(cfg)))
        return cls(Path(cfg.data_dir) / SQLITE_FILE)

    def _load(self) -> None:
        self.store = self.backend.store
        self.disputes = self.backend.disputes
        # where follow() starts: read before the index, so a change committed
        # in between is read again rather than missed
        self.seen_change = self.store.last_change()
        self.index: dict[int, Profile] = self.store.load_all()
        self.counts = Counter(_bucket(p) for p in self.index.values())  # kept per write
        # callers allowed for everyone after a dispute: read by the screening check
        self.global_allow: set[int] = self.disputes.global_allow()
        # filing time per open dispute, for the metrics (never a query per scrape)
        self.open: dict[int, float] = {
            int(str(d["id"])): float(str(d["filed_at"])) for d in self.disputes.list("open", 10**9)
        }

    @property
    def where(self) -> str:
        """The store, for messages: a file, or a connection string without its password."""
        return f"{self.backend.name} {self.backend.where}"

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking store call on the store's own thread. A store that
        cannot take it raises StoreUnavailable."""
        try:
            return await asyncio.get_running_loop().run_in_executor(self._writer, fn, *args)
        except StoreUnavailable:
            raise
        except self.backend.transient as exc:  # a driver's error a store call let through
            raise StoreUnavailable(redact(str(exc))) from exc

    _run = run

    def get(self, number: int) -> Subscriber | None:
        p = self.index.get(number)
        return Subscriber.of(number, p) if p is not None else None

    async def put(self, new: Subscriber, actor: str) -> Subscriber | None:
        old = await self._run(self.store.put, new, actor, time.time())
        self._set(new)
        return old

    def _set(self, new: Subscriber) -> None:
        old = self.index.get(new.number)
        if old is not None:
            self.counts[_bucket(old)] -= 1
        p = self.index[new.number] = new.profile()
        self.counts[_bucket(p)] += 1

    async def edit(
        self, number: int, changes: Callable[[Subscriber], dict[str, Any]], actor: str
    ) -> Subscriber:
        """Read, change and write one subscriber with no other edit in
        between: two edits at once (the portal and the self-service page)
        must not overwrite each other with what they each read."""
        async with self.editing:
            current = self.get(number)
            if current is None:
                raise KeyError(number)
            new = apply_changes(current, changes(current))
            await self.put(new, actor)
            return new

    async def update(self, number: int, changes: dict[str, Any], actor: str) -> Subscriber:
        """Apply validated field changes to an existing subscriber."""
        return await self.edit(number, lambda _: changes, actor)

    async def delete(self, number: int, actor: str) -> Subscriber | None:
        old = await self._run(self.store.delete, number, actor, time.time())
        gone = self.index.pop(number, None)
        if gone is not None:
            self.counts[_bucket(gone)] -= 1
        return old

    async def audit(self, number: int) -> list[dict[str, object]]:
        return await self._run(self.store.audit, number)

    async def import_csv(self, text: str, actor: str) -> tuple[int, int]:
        subs = await self.run(parse_csv, text)  # seconds for a big file: not on the loop
        async with self.editing:
            created, updated = await self.run(self.store.put_many, subs, actor, time.time())
            for sub in subs:
                self._set(sub)
        return created, updated

    async def file_dispute(
        self, number: int, contact: str, description: str, source: str, now: float
    ) -> int:
        dispute_id = await self.run(self.disputes.file, number, contact, description, source, now)
        self.open[dispute_id] = now
        return dispute_id

    async def resolve_dispute(
        self, dispute_id: int, decision: str, subscriber: int | None, note: str, actor: str
    ) -> dict[str, object] | None:
        """Allow (globally, or on one subscriber's allow list) or reject."""
        now = time.time()
        if decision == "reject":
            rejected = await self.run(
                self.disputes.resolve, dispute_id, "rejected", None, note, actor, now
            )
            if rejected is not None:
                self.open.pop(dispute_id, None)
            return rejected
        scope = "global" if subscriber is None else f"+{subscriber}"
        item = await self.run(self.disputes.get, dispute_id)
        if item is None or item["status"] != "open":
            return None
        caller = parse_number(str(item["number"]))
        if subscriber is not None:
            async with self.editing:
                current = self.get(subscriber) or Subscriber(subscriber)
                if not current.allow.matches(caller):
                    entries = [*current.allow.entries(), f"+{caller}"]
                    if len(entries) > MAX_LIST_ENTRIES:
                        raise InvalidField("scope", f"+{subscriber}'s allow list is full")
                    await self.put(replace(current, allow=build_list(entries)), actor)
        result = await self.run(
            self.disputes.resolve, dispute_id, "allowed", scope, note, actor, now
        )
        if result is not None:
            self.open.pop(dispute_id, None)
            if subscriber is None:
                self.global_allow.add(caller)
        return result

    async def follow(self) -> int:
        """Take in what another process (the worker serving the API) wrote to
        the store since the last call, by its audit trail: the index and the
        global allow list. Returns how many subscribers changed."""
        seen, numbers = await self.run(self.store.changed_since, self.seen_change, FOLLOW_BATCH)
        fresh = await self.run(self.store.get_many, numbers)
        for number, sub in fresh.items():  # applied on the loop, between two calls
            if sub is None:
                gone = self.index.pop(number, None)
                if gone is not None:
                    self.counts[_bucket(gone)] -= 1
            else:
                self._set(sub)
        self.seen_change = seen
        allowed = await self.run(self.disputes.global_allow)
        if allowed != self.global_allow:  # the check holds this set: change it in place
            self.global_allow.intersection_update(allowed)
            self.global_allow.update(allowed)
        return len(fresh)

    async def export_csv(self) -> str:
        """Formatted off the loop, from a snapshot taken on it."""
        return await self.run(_format_csv, list(self.index.items()))

    def by_policy(self) -> dict[str, int]:
        """Opted-in subscribers per policy, and those not opted in."""
        return {p: self.counts.get(p, 0) for p in (*POLICIES, "not-opted-in")}

    def close(self) -> None:
        self._writer.shutdown(wait=True)
        self.backend.close()


def _format_csv(items: list[tuple[int, Profile]]) -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for number, s in sorted(items, key=lambda item: item[0]):
        w.writerow(
            [
                f"+{number}",
                str(s.opted_in).lower(),
                s.policy,
                str(s.reject_anonymous).lower(),
                " ".join(s.allow.entries()),
                " ".join(s.block.entries()),
            ]
        )
    return out.getvalue()


def _bucket(s: Profile) -> str:
    return s.policy if s.opted_in else "not-opted-in"


def apply_changes(current: Subscriber, changes: dict[str, Any]) -> Subscriber:
    """Validate a JSON object of changes; the first bad field raises."""
    if not isinstance(changes, dict):
        raise InvalidField("body", "expected a JSON object")
    fields: dict[str, Any] = {}
    for name, value in changes.items():
        if name in ("opted_in", "reject_anonymous"):
            if not isinstance(value, bool):
                raise InvalidField(name, "expected true or false")
            fields[name] = value
        elif name == "policy":
            if value not in POLICIES:
                raise InvalidField(name, f"expected one of {', '.join(POLICIES)}")
            fields[name] = value
        elif name in LISTS:
            if not isinstance(value, list) or len(value) > MAX_LIST_ENTRIES:
                raise InvalidField(name, f"expected a list of at most {MAX_LIST_ENTRIES} entries")
            for i, entry in enumerate(value):
                parse_entry(entry, f"{name}[{i}]")
            fields[name] = build_list(value)
        elif name == "number":
            if parse_number(value) != current.number:
                raise InvalidField(name, "a subscriber's number cannot change; delete and create")
        else:
            raise InvalidField(name, "unknown field")
    return replace(current, **fields)


def parse_csv(text: str) -> list[Subscriber]:
    """All rows or an error naming the line (in the file, counting lines
    inside quoted cells) and column; later rows for one number replace
    earlier ones."""
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader, None)
        if header is None or tuple(h.strip() for h in header) != CSV_COLUMNS:
            raise InvalidField("csv", f"line 1: expected the header {','.join(CSV_COLUMNS)}")
        subs: dict[int, Subscriber] = {}
        for row in reader:
            line = reader.line_num
            if not row:
                continue
            if len(subs) >= MAX_IMPORT_ROWS:
                raise InvalidField("csv", f"more than {MAX_IMPORT_ROWS} rows; split the file")
            if len(row) != len(CSV_COLUMNS):
                raise InvalidField("csv", f"line {line}: expected {len(CSV_COLUMNS)} columns")
            sub = _csv_row(row, line)
            subs[sub.number] = sub
    except csv.Error as exc:  # a bare CR in a field, a field over the csv module's limit
        raise InvalidField("csv", f"line {reader.line_num}: unreadable CSV: {exc}") from None
    return list(subs.values())


def _csv_row(row: list[str], line: int) -> Subscriber:
    try:
        number = parse_number(row[0], "number")
        return apply_changes(
            Subscriber(number),
            {
                "opted_in": _flag(row[1], "opted_in"),
                "policy": row[2].strip(),
                "reject_anonymous": _flag(row[3], "reject_anonymous"),
                "allow": row[4].split(),
                "block": row[5].split(),
            },
        )
    except InvalidField as exc:
        raise InvalidField(f"csv line {line}: {exc.field}", exc.problem) from None


def _flag(text: str, field: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise InvalidField(field, f"expected true or false, got {text[:20]!r}")
