"""The Redis edge of [cluster], against a real redis-server on loopback:
counters merge across nodes (each batch once), subscriber changes spread
within a second (the newest change wins, however late it is published),
blocklist versions are followed, and Redis going away, even with a restart
before it is back, is survived and reconciled."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import NamedTuple

import pytest

from proxy.cluster import disputes as disputes_module
from proxy.cluster import journal
from proxy.cluster.disputes import DisputeSync
from proxy.cluster.link import ClusterLink
from proxy.cluster.settings import ClusterConfig
from proxy.reputation.engine import ReputationEngine
from proxy.reputation.settings import ReputationConfig
from proxy.subscribers.model import Subscriber
from proxy.subscribers.service import SubscriberService
from tests.redis_server import RedisServer, free_port
from tests.test_cluster_journal import CALLER, facts

FAST = 0.2  # sync interval in these tests, seconds


@pytest.fixture
async def redis(tmp_path: Path) -> AsyncIterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.kill()


def cfg(redis: RedisServer, node: str) -> ClusterConfig:
    return ClusterConfig(
        enabled=True, redis_url=redis.url, node=node, sync_interval=FAST, timeout=1.0
    )


def new_engine() -> ReputationEngine:
    e = ReputationEngine(ReputationConfig())
    e.wall_offset = time.time() - time.monotonic()
    return e


async def until(check: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {seconds} s")
        await asyncio.sleep(0.05)


def hour_calls(e: ReputationEngine) -> int:
    t = e.callers.get(int(CALLER))
    return 0 if t is None else t.h_cur + t.h_prev


async def test_counters_merge_and_reconcile_after_redis_was_down(redis: RedisServer) -> None:
    a_engine, b_engine = new_engine(), new_engine()
    a = ClusterLink(cfg(redis, "a"), a_engine)
    b = ClusterLink(cfg(redis, "b"), b_engine)
    await a.start()
    await b.start()
    try:
        for n in range(30):
            a_engine.record(facts(n, time.monotonic()))
        for n in range(30, 50):
            b_engine.record(facts(n, time.monotonic()))
        await until(lambda: hour_calls(a_engine) == 50 and hour_calls(b_engine) == 50)

        redis.kill()  # mid-run: both go on alone
        await until(lambda: a.degraded and b.degraded)
        for n in range(50, 70):
            a_engine.record(facts(n, time.monotonic()))
        await asyncio.sleep(3 * FAST)
        assert hour_calls(a_engine) == 70 and hour_calls(b_engine) == 50
        assert a.outbox.waiting  # kept for later, not lost

        redis.start()  # the same address, empty
        await until(lambda: not a.degraded and not b.degraded, 10)
        await until(lambda: hour_calls(b_engine) == 70, 10)  # reconciled
        assert hour_calls(a_engine) == 70  # its own calls are not counted twice
        assert a.dropped_rows == 0 and a.errors > 0
        text = b"".join(m.name.encode() for m in a.collector().collect())
        assert b"rs_cluster_degraded" in text
    finally:
        await a.close()
        await b.close()


async def test_a_node_that_starts_later_catches_up(redis: RedisServer) -> None:
    a_engine = new_engine()
    a = ClusterLink(cfg(redis, "a"), a_engine)
    await a.start()
    try:
        for n in range(12):
            a_engine.record(facts(n, time.monotonic()))
        await until(lambda: a.sent_rows > 0)
        late = new_engine()
        c = ClusterLink(cfg(redis, "c"), late)
        await c.start()
        try:
            await until(lambda: hour_calls(late) == 12)
        finally:
            await c.close()
    finally:
        await a.close()


async def test_subscriber_changes_spread_within_a_second(
    redis: RedisServer, tmp_path: Path
) -> None:
    sa = SubscriberService(tmp_path / "a" / "subscribers.sqlite3")
    sb = SubscriberService(tmp_path / "b" / "subscribers.sqlite3")
    a = ClusterLink(cfg(redis, "a"), None, subscribers=sa, cursor_file=tmp_path / "a.cursor")
    b = ClusterLink(cfg(redis, "b"), None, subscribers=sb, cursor_file=tmp_path / "b.cursor")
    await a.start()
    await b.start()
    number = 12125550142
    try:
        opted = Subscriber(number, opted_in=True, policy="block-all-suspected")
        t0 = time.monotonic()
        await sa.put(opted, "api")
        await until(lambda: sb.get(number) == opted, 1.0)
        assert time.monotonic() - t0 < 1.0
        assert (await sb.audit(number))[0]["actor"] == "cluster:a"

        await sb.put(Subscriber(number, opted_in=False), "api")  # b changes it back
        await until(lambda: sa.get(number) == Subscriber(number, opted_in=False))
        await sa.delete(number, "api")
        await until(lambda: sb.get(number) is None)
        await asyncio.sleep(5 * FAST)  # no echo brings anything back
        assert sa.get(number) is None and sb.get(number) is None
        assert a.published_changes == 2 and b.published_changes == 1
        assert (tmp_path / "b.cursor").read_text().count("-") == 1
    finally:
        await a.close()
        await b.close()
        sa.close()
        sb.close()


async def test_a_junk_entry_is_skipped_and_counted(redis: RedisServer, tmp_path: Path) -> None:
    sb = SubscriberService(tmp_path / "b" / "subscribers.sqlite3")
    b = ClusterLink(cfg(redis, "b"), new_engine(), subscribers=sb)
    await b.start()
    try:
        await asyncio.sleep(2 * FAST)
        from redis.asyncio import Redis

        r = Redis.from_url(redis.url)
        await r.xadd(b.keys.traffic, {"d": b"junk"})
        await r.xadd(b.keys.subscribers, {"d": b'{"at": 1, "number": "+1", "subscriber": null}'})
        await r.aclose()
        await until(lambda: b.bad_entries == 2)
        assert not b.degraded
    finally:
        await b.close()
        sb.close()


async def test_blocklist_versions_are_followed(redis: RedisServer) -> None:
    versions = {"a": "v1", "b": "v1"}
    reloads: list[str] = []
    disk_b = {"version": "v1"}  # what node b's artefact directory holds

    async def reload_b() -> str | None:
        reloads.append("b")
        versions["b"] = disk_b["version"]
        return versions["b"]

    async def reload_a() -> str | None:
        return versions["a"]

    a = ClusterLink(
        cfg(redis, "a"), None, lists_version=lambda: versions["a"], reload_lists=reload_a
    )
    b = ClusterLink(
        cfg(redis, "b"), None, lists_version=lambda: versions["b"], reload_lists=reload_b
    )
    await a.start()
    await b.start()
    try:
        await asyncio.sleep(3 * FAST)
        assert reloads == []  # the same version everywhere: nothing to do
        disk_b["version"] = "v2"
        versions["a"] = "v2"  # a loaded v2
        await until(lambda: versions["b"] == "v2")
        assert not b.lists_mismatch
        versions["a"] = "v3"  # b's directory was not updated
        await until(lambda: b.lists_mismatch)
        assert versions["b"] == "v2"
    finally:
        await a.close()
        await b.close()


async def test_on_a_redis_cluster(tmp_path: Path) -> None:
    """mode = "cluster": every command touches one hash-tagged key, so it
    works on Redis Cluster; the three streams land on different slots."""
    from tests.redis_server import RedisCluster

    servers = RedisCluster(tmp_path / "rc")
    servers.start()
    try:

        def conf(node: str) -> ClusterConfig:
            return ClusterConfig(
                enabled=True, redis_url=servers.url, mode="cluster", node=node,
                sync_interval=FAST, timeout=1.0,
            )  # fmt: skip

        a_engine, b_engine = new_engine(), new_engine()
        sa = SubscriberService(tmp_path / "a" / "subscribers.sqlite3")
        sb = SubscriberService(tmp_path / "b" / "subscribers.sqlite3")
        a = ClusterLink(conf("a"), a_engine, subscribers=sa)
        b = ClusterLink(conf("b"), b_engine, subscribers=sb)
        await a.start()
        await b.start()
        try:
            for n in range(25):
                a_engine.record(facts(n, time.monotonic()))
            await until(lambda: hour_calls(b_engine) == 25)
            opted = Subscriber(12125550142, opted_in=True)
            await sa.put(opted, "api")
            await until(lambda: sb.get(12125550142) == opted, 2.0)
            assert not a.degraded and not b.degraded and a.errors == 0
        finally:
            await a.close()
            await b.close()
            sa.close()
            sb.close()
    finally:
        servers.kill()


class SqliteNodes(NamedTuple):
    sa: SubscriberService
    sb: SubscriberService
    a: ClusterLink
    b: ClusterLink
    a_cursor: Path


async def sqlite_nodes(redis: RedisServer, tmp_path: Path) -> SqliteNodes:
    """Nodes a and b, each with its own SQLite store and cursor files, their
    links started."""
    sa = SubscriberService(tmp_path / "a" / "subscribers.sqlite3")
    sb = SubscriberService(tmp_path / "b" / "subscribers.sqlite3")
    a_cursor = tmp_path / "a-subscribers.cursor"
    a = ClusterLink(cfg(redis, "a"), None, subscribers=sa, cursor_file=a_cursor)
    b = ClusterLink(
        cfg(redis, "b"), None, subscribers=sb, cursor_file=tmp_path / "b-subscribers.cursor"
    )
    await a.start()
    await b.start()
    return SqliteNodes(sa, sb, a, b, a_cursor)


async def test_the_dispute_queue_is_shared_between_sqlite_nodes(
    redis: RedisServer, tmp_path: Path
) -> None:
    sa, sb, a, b, _ = await sqlite_nodes(redis, tmp_path)
    caller, other = 12025550199, 12025550188
    try:
        # filed on b's redress page: in a's queue too
        on_b = await sb.file_dispute(
            caller, "ops@example.com", "pharmacy reminders", "203.0.113.9", time.time()
        )
        await until(lambda: len(sa.open) == 1)
        (on_a,) = sa.open
        copy = await sa.run(sa.disputes.get, on_a)
        assert copy is not None and copy["number"] == f"+{caller}"
        assert copy["source"] == f"cluster:b#{on_b}"

        # resolved on a (allowed for everyone): closed on b, the caller allowed there
        assert await sa.resolve_dispute(on_a, "allow", None, "verified", "ops") is not None
        await until(lambda: on_b not in sb.open and caller in sb.global_allow)
        closed = await sb.run(sb.disputes.get, on_b)
        assert closed is not None and closed["status"] == "allowed" and closed["scope"] == "global"
        assert closed["resolved_by"] == "cluster:a"

        # the other way round, rejected
        on_a2 = await sa.file_dispute(
            other, "x@example.com", "robocalls?", "203.0.113.7", time.time()
        )
        await until(lambda: len(sb.open) == 1)
        (copy_b,) = sb.open
        assert await sb.resolve_dispute(copy_b, "reject", None, "campaign", "ops") is not None
        await until(lambda: on_a2 not in sa.open)
        rejected = await sa.run(sa.disputes.get, on_a2)
        assert rejected is not None and rejected["status"] == "rejected"
        assert other not in sa.global_allow

        await asyncio.sleep(5 * FAST)  # nothing comes back as a second copy
        assert len(await sa.run(sa.disputes.list, None, 100)) == 2
        assert len(await sb.run(sb.disputes.list, None, 100)) == 2
        assert (tmp_path / "b-disputes.cursor").exists()
    finally:
        await a.close()
        await b.close()
        sa.close()
        sb.close()


async def test_a_redis_that_never_answers_degrades_and_stops_in_bounded_time(
    tmp_path: Path,
) -> None:
    """A hung Redis (the port accepts, nothing ever answers): the node goes
    degraded, keeps its rows, and its stop is not held by the client."""
    accepted: list[asyncio.StreamWriter] = []

    async def swallow(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        accepted.append(w)

    silent = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    engine = new_engine()
    service = SubscriberService(tmp_path / "subscribers.sqlite3")
    link = ClusterLink(
        ClusterConfig(
            enabled=True, redis_url=f"redis://127.0.0.1:{port}/0", node="a",
            sync_interval=FAST, timeout=0.5,
        ),
        engine, subscribers=service,
    )  # fmt: skip
    try:
        await link.start()
        engine.record(facts(0, time.monotonic()))
        await until(lambda: link.degraded, 5.0)
        assert accepted, "the client never reached the silent server"
        started = time.monotonic()
        await link.close()
        assert time.monotonic() - started < 5.0
        assert link.outbox.waiting or link.dropped_rows, "the unsent row vanished uncounted"
    finally:
        service.close()
        for w in accepted:
            w.close()
        silent.close()
        await silent.wait_closed()


async def test_a_counter_batch_sent_twice_is_applied_once(redis: RedisServer) -> None:
    """An XADD that timed out after Redis took it: the retry sends the same
    batch, and the other nodes count its calls once."""
    from redis.asyncio import Redis

    a_engine, b_engine = new_engine(), new_engine()
    quiet = ClusterConfig(  # a's push loop stays out of the way: the test sends
        enabled=True, redis_url=redis.url, node="a", sync_interval=3600, timeout=1.0
    )
    a = ClusterLink(quiet, a_engine)
    b = ClusterLink(cfg(redis, "b"), b_engine)
    await a.start()
    await b.start()
    raw = Redis.from_url(redis.url)
    try:
        for n in range(3):
            a_engine.record(facts(n, time.monotonic()))
        a.outbox.add(journal.drain(a_engine))
        batch = a.outbox.next()
        assert batch is not None and batch.seq == 1
        await raw.xadd(a.keys.traffic, {"d": batch.data})  # landed; a never heard so
        assert a.outbox.inflight is batch
        await a._send_pending()  # the retry
        assert a.outbox.inflight is None and a.outbox.waiting == 0
        await until(lambda: hour_calls(b_engine) == 3)

        for n in range(3, 5):  # the next batch, after the repeat in the stream
            a_engine.record(facts(n, time.monotonic()))
        a.outbox.add(journal.drain(a_engine))
        await a._send_pending()
        await until(lambda: hour_calls(b_engine) == 5)
        assert b.duplicate_batches == 1

        other = journal.Batch("c#1", 1, ((int(CALLER), int(time.time()), 4, 1, 0, 0, 0, 0),))
        await raw.xadd(a.keys.traffic, {"d": journal.encode(other)})  # another sender's 1
        await until(lambda: hour_calls(b_engine) == 9)
        assert b.duplicate_batches == 1 and b.bad_entries == 0
    finally:
        await raw.aclose()
        await a.close()
        await b.close()


async def test_disputes_filed_and_resolved_while_redis_was_away_survive_a_restart(
    redis: RedisServer, tmp_path: Path
) -> None:
    """Node a files one dispute and resolves another while Redis is down,
    and restarts before Redis is back: b still learns both."""
    state = tmp_path / "a-dispute-state.json"
    sa, sb, a, b, a_cursor = await sqlite_nodes(redis, tmp_path)
    restarted: ClusterLink | None = None
    try:
        first = await sa.file_dispute(
            12025550199, "ops@example.com", "pharmacy reminders", "203.0.113.9", time.time()
        )
        await until(lambda: len(sb.open) == 1)
        (first_on_b,) = sb.open
        await until(lambda: state.exists() and json.loads(state.read_text())["cursor"] == first)

        redis.kill()
        later = await sa.file_dispute(
            12025550188, "x@example.com", "robocalls?", "203.0.113.7", time.time()
        )
        assert await sa.resolve_dispute(first, "reject", None, "campaign", "ops") is not None
        assert a.disputes is not None
        await until(lambda: len(a.disputes.ready) == 2)  # found, not sent
        await a.close()
        saved = json.loads(state.read_text())
        assert saved["cursor"] == first and saved["open"] == {str(first): f"a#{first}"}

        redis.start()  # the same address, empty
        restarted = ClusterLink(cfg(redis, "a"), None, subscribers=sa, cursor_file=a_cursor)
        await restarted.start()
        await until(lambda: first_on_b not in sb.open and len(sb.open) == 1, 10)
        resolved = await sb.run(sb.disputes.get, first_on_b)
        assert resolved is not None and resolved["status"] == "rejected"
        copy = await sb.run(sb.disputes.by_source, f"cluster:a#{later}")
        assert copy is not None and sb.open.keys() == {copy}
        await until(lambda: json.loads(state.read_text())["cursor"] == later)
        assert json.loads(state.read_text())["open"] == {str(later): f"a#{later}"}
    finally:
        if restarted is not None:
            await restarted.close()
        await a.close()
        await b.close()
        sa.close()
        sb.close()


async def test_an_unreadable_dispute_state_starts_from_now_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    service = SubscriberService(tmp_path / "subscribers.sqlite3")
    try:
        newest = await service.file_dispute(
            12025550199, "ops@example.com", "reminders", "203.0.113.9", time.time()
        )
        state = tmp_path / "dispute-state.json"
        state.write_text('{"v": 1, "cursor": "seven"')
        sync = DisputeSync(service, "a", state)
        with caplog.at_level(logging.WARNING, "robocall_shield.cluster"):
            await sync.start()
        assert "unreadable dispute state" in caplog.text
        assert sync.cursor == newest and sync.open == {newest: f"a#{newest}"}
        await sync.changes()
        assert sync.ready == []  # the store's disputes count as published, as before
        sync.save()
        assert json.loads(state.read_text())["cursor"] == newest
    finally:
        service.close()



async def test_more_disputes_than_one_poll_reads_are_all_published(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A long outage may pile up more disputes than one poll reads: they
    are published over several polls, oldest first, none skipped."""
    monkeypatch.setattr(disputes_module, "POLL_LIMIT", 3)
    service = SubscriberService(tmp_path / "subscribers.sqlite3")
    try:
        sync = DisputeSync(service, "a", tmp_path / "dispute-state.json")
        await sync.start()
        ids = [
            await service.file_dispute(
                12025550100 + i, "ops@example.com", f"d{i}", "203.0.113.9", time.time()
            )
            for i in range(8)
        ]
        for _ in range(3):  # 3 + 3 + 2
            await sync.changes()
        assert [e["origin"] for e in sync.ready] == [f"a#{i}" for i in ids]
        await sync.changes()
        assert len(sync.ready) == len(ids)  # nothing twice
    finally:
        service.close()


async def _change_while_away(
    redis: RedisServer, tmp_path: Path
) -> tuple[SubscriberService, SubscriberService, ClusterLink, Path]:
    """Nodes a and b in step, then a's link closed: a starts a link that
    cannot reach Redis (``away``) for the test's changes."""
    sa, sb, a, b, a_cursor = await sqlite_nodes(redis, tmp_path)
    start = Subscriber(NUMBER, opted_in=True)
    await sa.put(start, "api")
    await until(lambda: sb.get(NUMBER) == start)
    await a.close()
    return sa, sb, b, a_cursor


NUMBER = 12125550142
MINE = Subscriber(NUMBER, opted_in=False)
THEIRS = Subscriber(NUMBER, opted_in=True, policy="block-all-suspected")


def away_link(service: SubscriberService, cursor: Path) -> ClusterLink:
    dead = ClusterConfig(  # nothing listens there
        enabled=True, redis_url=f"redis://127.0.0.1:{free_port()}/0", node="a",
        sync_interval=FAST, timeout=0.5,
    )  # fmt: skip
    return ClusterLink(dead, None, subscribers=service, cursor_file=cursor)


async def test_a_change_published_late_loses_to_a_newer_one(
    redis: RedisServer, tmp_path: Path
) -> None:
    """a changes a number while away from Redis (t1); b changes it (t2 > t1)
    and publishes; when a is back, b's change wins on both nodes."""
    sa, sb, b, a_cursor = await _change_while_away(redis, tmp_path)
    back: ClusterLink | None = None
    try:
        away = away_link(sa, a_cursor)
        await away.start()
        await sa.put(MINE, "api")
        await until(lambda: away.degraded)
        await away.close()
        changed_at = (await sa.audit(NUMBER))[0]["at"]
        await sb.put(THEIRS, "api")
        await until(lambda: b.published_changes == 1)

        back = ClusterLink(cfg(redis, "a"), None, subscribers=sa, cursor_file=a_cursor)
        await back.start()
        await until(lambda: sa.get(NUMBER) == THEIRS and back.published_changes == 1)
        await asyncio.sleep(5 * FAST)  # nothing brings a's older change back
        assert sa.get(NUMBER) == THEIRS and sb.get(NUMBER) == THEIRS
        published = [
            json.loads(fields[b"d"])
            for _id, fields in await back.redis.xrange(back.keys.subscribers)
        ]
        (late,) = [d for d in published if d["from"] == back.me]
        assert late["at"] == changed_at  # stamped when made, not when published
    finally:
        if back is not None:
            await back.close()
        await b.close()
        sa.close()
        sb.close()


async def test_a_newer_change_made_while_away_wins_when_back(
    redis: RedisServer, tmp_path: Path
) -> None:
    """b changes a number and publishes (t1); a, away from Redis, changes it
    later (t2); when a is back, a's change wins on both nodes, even though a
    reads b's change before it publishes its own."""
    sa, sb, b, a_cursor = await _change_while_away(redis, tmp_path)
    back: ClusterLink | None = None
    try:
        await sb.put(THEIRS, "api")
        await until(lambda: b.published_changes == 1)
        away = away_link(sa, a_cursor)
        await away.start()
        await sa.put(MINE, "api")
        await until(lambda: away.degraded)
        await away.close()

        back = ClusterLink(cfg(redis, "a"), None, subscribers=sa, cursor_file=a_cursor)
        await back.start()
        await until(lambda: sb.get(NUMBER) == MINE)
        await asyncio.sleep(5 * FAST)
        assert sa.get(NUMBER) == MINE and sb.get(NUMBER) == MINE
    finally:
        if back is not None:
            await back.close()
        await b.close()
        sa.close()
        sb.close()
