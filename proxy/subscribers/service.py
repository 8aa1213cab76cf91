"""The subscriber service on the event loop: an in-memory index the
screening check reads, and writes that go to SQLite on one worker thread
first and reach the index only once committed."""

from __future__ import annotations

import asyncio
import csv
import io
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from .model import (
    LISTS,
    MAX_LIST_ENTRIES,
    POLICIES,
    InvalidField,
    Subscriber,
    build_list,
    parse_entry,
    parse_number,
)
from .store import SubscriberStore, connect

T = TypeVar("T")
CSV_COLUMNS = ("number", "opted_in", "policy", "reject_anonymous", "allow", "block")
MAX_IMPORT_ROWS = 1_000_000


class SubscriberService:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.db = connect(path)
        self.store = SubscriberStore(self.db)
        self.index: dict[int, Subscriber] = self.store.load_all()
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="subscriber-store")

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._writer, fn, *args)

    def get(self, number: int) -> Subscriber | None:
        return self.index.get(number)

    async def put(self, new: Subscriber, actor: str) -> Subscriber | None:
        old = await self._run(self.store.put, new, actor, time.time())
        self.index[new.number] = new
        return old

    async def update(self, number: int, changes: dict[str, Any], actor: str) -> Subscriber:
        """Apply validated field changes to an existing subscriber."""
        current = self.index.get(number)
        if current is None:
            raise KeyError(number)
        new = apply_changes(current, changes)
        await self.put(new, actor)
        return new

    async def delete(self, number: int, actor: str) -> Subscriber | None:
        old = await self._run(self.store.delete, number, actor, time.time())
        self.index.pop(number, None)
        return old

    async def audit(self, number: int) -> list[dict[str, object]]:
        return await self._run(self.store.audit, number)

    async def import_csv(self, text: str, actor: str) -> tuple[int, int]:
        subs = parse_csv(text)
        created, updated = await self._run(self.store.put_many, subs, actor, time.time())
        for sub in subs:
            self.index[sub.number] = sub
        return created, updated

    def export_csv(self) -> str:
        out = io.StringIO()
        w = csv.writer(out, lineterminator="\n")
        w.writerow(CSV_COLUMNS)
        for number in sorted(self.index):
            s = self.index[number]
            w.writerow(
                [
                    f"+{s.number}",
                    str(s.opted_in).lower(),
                    s.policy,
                    str(s.reject_anonymous).lower(),
                    " ".join(s.allow.entries()),
                    " ".join(s.block.entries()),
                ]
            )
        return out.getvalue()

    def by_policy(self) -> dict[str, int]:
        """Opted-in subscribers per policy, and those not opted in."""
        counts = Counter(s.policy if s.opted_in else "not-opted-in" for s in self.index.values())
        return {p: counts.get(p, 0) for p in (*POLICIES, "not-opted-in")}

    def close(self) -> None:
        self._writer.shutdown(wait=True)
        self.db.close()


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
    """All rows or an error naming the line and column; later rows for the
    same number replace earlier ones."""
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None or tuple(h.strip() for h in header) != CSV_COLUMNS:
        raise InvalidField("csv", f"line 1: expected the header {','.join(CSV_COLUMNS)}")
    subs: dict[int, Subscriber] = {}
    for line, row in enumerate(reader, start=2):
        if not row:
            continue
        if len(subs) >= MAX_IMPORT_ROWS:
            raise InvalidField("csv", f"more than {MAX_IMPORT_ROWS} rows; split the file")
        if len(row) != len(CSV_COLUMNS):
            raise InvalidField("csv", f"line {line}: expected {len(CSV_COLUMNS)} columns")
        try:
            number = parse_number(row[0], "number")
            sub = apply_changes(
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
        subs[number] = sub
    return list(subs.values())


def _flag(text: str, field: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise InvalidField(field, f"expected true or false, got {text[:20]!r}")
