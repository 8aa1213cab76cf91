"""Workers opening a new SQLite file together (start-up, a new day's
decision records): the switch to WAL must not fail one of them as locked."""

from __future__ import annotations

import multiprocessing
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from proxy.gateway.store import PeerStore
from proxy.records.store import connect as records_connect
from proxy.sqlite_wal import use_wal
from proxy.subscribers.store import connect as subscribers_connect

ROUNDS, PROCESSES = 12, 3


def _peer_store(path: Path) -> None:
    PeerStore(path).overrides()


def _records(path: Path) -> None:
    records_connect(path).close()


def _subscribers(path: Path) -> None:
    subscribers_connect(path).close()


def _open_together(opener: Callable[[Path], None], path: Path, barrier: object, out: object) -> None:
    barrier.wait()  # type: ignore[attr-defined]
    try:
        opener(path)
        out.put("ok")  # type: ignore[attr-defined]
    except Exception as exc:  # reported to the test, whatever it is
        out.put(repr(exc))  # type: ignore[attr-defined]


@pytest.mark.parametrize("opener", [_peer_store, _records, _subscribers])
def test_processes_opening_a_new_file_at_once_all_succeed(
    opener: Callable[[Path], None], tmp_path: Path
) -> None:
    # Before use_wal, PeerStore failed about one open in five here.
    ctx = multiprocessing.get_context("fork")
    results: list[str] = []
    for i in range(ROUNDS):
        path = tmp_path / f"new-{i}.sqlite3"
        barrier, out = ctx.Barrier(PROCESSES), ctx.Queue()
        procs = [
            ctx.Process(target=_open_together, args=(opener, path, barrier, out))
            for _ in range(PROCESSES)
        ]
        for p in procs:
            p.start()
        for p in procs:
            p.join(30)
        results += [out.get(timeout=10) for _ in procs]
        with sqlite3.connect(path) as db:
            assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert [r for r in results if r != "ok"] == []


def test_a_lock_held_past_the_wait_is_still_an_error_and_then_it_switches(
    tmp_path: Path,
) -> None:
    path = tmp_path / "held.sqlite3"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (a INTEGER)")
    holder.execute("BEGIN EXCLUSIVE")
    other = sqlite3.connect(path, timeout=0.05, isolation_level=None)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        use_wal(other, 0.2)
    holder.execute("COMMIT")
    use_wal(other, 0.2)
    assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    holder.close()
    other.close()


def test_other_errors_are_not_retried(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "x.sqlite3")
    db.close()
    with pytest.raises(sqlite3.ProgrammingError):
        use_wal(db, 5.0)  # a closed connection: raised at once, not after 5 s
