"""What the service needs from a subscriber store, whichever database holds
it: SQLite (store.py, disputes.py) or PostgreSQL (pg_store.py). Both raise
``StoreUnavailable`` when the database cannot take a call right now."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .model import Profile, Subscriber
from .settings import SubscriberConfig

SQLITE_FILE = "subscribers.sqlite3"
RETRY_AFTER = "5"  # seconds, in 503 answers while the store is unavailable


class StoreUnavailable(Exception):
    """The store's state, not the request's fault nor a bug: locked, full,
    unreachable, shutting down. Nothing was committed by the call that
    raised it; the caller may try again later (the API answers 503)."""


_URL_PASSWORD = re.compile(r"(?i)(postgres(?:ql)?://[^:/@\s]*:)[^@\s]*@")
_KEY_PASSWORD = re.compile(r"(?i)(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)")


def redact(text: str) -> str:
    """``text`` with any password of a libpq connection string, in either
    form (key=value or URL), replaced by ***: for logs and error messages."""
    return _KEY_PASSWORD.sub(r"\1***", _URL_PASSWORD.sub(r"\1***@", text))


class SubscriberStoreApi(Protocol):
    """Blocking calls, made from one thread at a time (the service's)."""

    def load_all(self) -> dict[int, Profile]: ...

    def last_change(self) -> int:
        """The newest change's position in the audit trail (0: none yet)."""
        ...

    def changed_since(self, after: int, limit: int) -> tuple[int, list[int]]:
        """The contract followers (other workers, other nodes) rely on:
        returns (last, numbers): the numbers changed by audit rows after
        position ``after``, at most ``limit`` rows read, and the position
        of the last row read (``after`` when there was none). Positions
        only grow, in commit order: once a row at position N is visible, no
        row before N can appear later, so a follower that calls again with
        ``last`` misses no change. A number may come back again; the caller
        reads its current value (None: deleted)."""
        ...

    def change_times(self, after: int, limit: int) -> tuple[int, dict[int, float]]:
        """As changed_since, the numbers with the time (Unix) of each one's
        newest audit row among those read, in the order first read."""
        ...

    def get(self, number: int) -> Subscriber | None: ...

    def get_many(self, numbers: list[int]) -> dict[int, Subscriber | None]: ...

    def put(self, new: Subscriber, actor: str, now: float) -> Subscriber | None: ...

    def put_many(self, subs: Iterable[Subscriber], actor: str, now: float) -> tuple[int, int]: ...

    def delete(self, number: int, actor: str, now: float) -> Subscriber | None: ...

    def audit(self, number: int, limit: int = 100) -> list[dict[str, object]]: ...

    def count(self) -> int: ...


class DisputeStoreApi(Protocol):
    def file(self, number: int, contact: str, description: str, source: str, now: float) -> int: ...

    def get(self, dispute_id: int) -> dict[str, object] | None: ...

    def after(self, dispute_id: int, limit: int = 500) -> list[dict[str, object]]:
        """The oldest ``limit`` disputes with an id above ``dispute_id``
        (the [cluster] dispute sync reads on from its cursor)."""
        ...

    def list(self, status: str | None, limit: int = 500) -> list[dict[str, object]]: ...

    def resolve(
        self, dispute_id: int, status: str, scope: str | None, note: str, actor: str, now: float
    ) -> dict[str, object] | None: ...

    def global_allow(self) -> set[int]: ...

    def filed_since(self, source: str, since: float) -> int: ...

    def by_source(self, source: str) -> int | None:
        """The id of the dispute filed from ``source`` ([cluster] replicas
        are filed from "cluster:<node>#<id>"); None when there is none."""
        ...


@dataclass(frozen=True, slots=True)
class Backend:
    """An open store: its two halves on one connection, and how to close it."""

    name: str  # "sqlite" or "postgresql"
    where: str  # the file, or the connection string without its password
    store: SubscriberStoreApi
    disputes: DisputeStoreApi
    close: Callable[[], None]
    # a driver's errors meaning "unavailable" that a store call let through
    transient: tuple[type[Exception], ...]


def sqlite_backend(db: sqlite3.Connection, path: Path) -> Backend:
    from .disputes import DisputeStore
    from .store import SubscriberStore

    return Backend(
        "sqlite", str(path), SubscriberStore(db), DisputeStore(db), db.close,
        (sqlite3.OperationalError,),
    )  # fmt: skip


def read_dsn(cfg: SubscriberConfig) -> str:
    """The connection string: ``dsn``, or the content of ``dsn_file``."""
    if cfg.dsn_file:
        try:
            return Path(cfg.dsn_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise StoreUnavailable(f"cannot read dsn_file {cfg.dsn_file}: {exc}") from None
    return cfg.dsn


def store_name(cfg: SubscriberConfig) -> str:
    """The store as start-up errors name it."""
    if cfg.backend == "sqlite":
        return str(Path(cfg.data_dir) / SQLITE_FILE)
    return "(PostgreSQL)"  # never the DSN: it may hold a password
