"""The edge to Redis ([cluster]): the only code here that does network I/O.

Three streams, each read and written by one-key commands (see keys.py):
- counter rows (journal.py): pushed about once a second, read by every
  other node and merged into its reputation counters;
- subscriber changes: a node whose store is its own (SQLite) publishes what
  its API wrote, and applies what the others publish;
- blocklist versions: a node that loads an artefact says so, and the others
  reload from their own artefact directory when theirs differs.

Redis down is a state, not an error: screening goes on with local figures,
rows wait in memory (bounded, compacted per minute) and are sent when Redis
is back, so the counters reconcile; ``rs_cluster_degraded`` shows it. A
counter batch is applied once however often it is sent (counters.py); a
subscriber change is stamped with the time of its newest audit row, so the
newest change wins even when it is published late.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from prometheus_client.registry import Collector

from ..reputation.engine import ReputationEngine
from ..subscribers.model import InvalidField, Subscriber, parse_number
from ..subscribers.service import SubscriberService, apply_changes
from . import counters, journal
from .cursors import CursorFiles
from .disputes import DisputeSync
from .keys import Keys
from .metrics import ClusterCollector
from .settings import ClusterConfig, redacted

log = logging.getLogger("robocall_shield.cluster")

READ_COUNT = 200  # entries per read
SUBSCRIBER_POLL = 0.2  # seconds between looks at the local audit trail
PUBLISH_BATCH = 500  # audit rows read per look
SUBSCRIBER_STREAM_LEN = 1_000_000  # changes kept for nodes that were away
BLOCKLIST_STREAM_LEN = 100
STAMPS = 100_000  # subscriber numbers whose last change time is remembered
RETRY = 0.5  # seconds before trying Redis again

ReloadLists = Callable[[], Awaitable[str | None]]  # reload; the version now loaded
Handler = Callable[[dict[bytes, bytes]], Awaitable[None]]


class ClusterLink:
    def __init__(
        self,
        cfg: ClusterConfig,
        engine: ReputationEngine | None,
        *,
        worker: int | None = None,
        subscribers: SubscriberService | None = None,
        lists_version: Callable[[], str | None] | None = None,
        reload_lists: ReloadLists | None = None,
        cursor_file: Path | None = None,
    ) -> None:
        self.cfg = cfg
        self.keys = Keys.of(cfg.prefix)
        self.node = cfg.node_name if worker is None else f"{cfg.node_name}/{worker}"
        # this process: a restarted node reads what its previous life sent
        self.me = f"{self.node}#{secrets.token_hex(3)}"
        self.engine: ReputationEngine | None = None
        self.attach(engine)
        self.subscribers = subscribers
        self.lists_version = lists_version
        self.reload_lists = reload_lists
        self.redis: Any = None
        self.outbox = counters.Outbox(self.me)
        self.batches = counters.Applied()  # the last batch applied per sender
        self.degraded = False
        self.down_since: float | None = None
        self.last_sync = 0.0  # time.time() of the last successful push
        self.sent_rows = self.received_rows = self.received_calls = 0
        self.dropped_rows = self.bad_entries = self.errors = self.duplicate_batches = 0
        self.published_changes = self.applied_changes = 0
        self.lists_mismatch = False
        self.announced: str | None = None
        self.wanted: str | None = None  # the version another node announced last
        # number -> (wall time, node) of its newest change: last writer wins
        self.stamps: OrderedDict[int, tuple[float, str]] = OrderedDict()
        # number -> what this node last applied from another; not re-published
        self.applied: OrderedDict[int, Subscriber | None] = OrderedDict()
        self.audit_cursor = 0  # the last local audit row published
        self.publishing = asyncio.Lock()  # one publisher of local changes at a time
        self.disputes: DisputeSync | None = None
        self.dispute_events = 0  # published and applied
        # where a node that was away resumes what it must not miss
        self.files = CursorFiles(cursor_file, self.keys)
        self._tasks: list[asyncio.Task[None]] = []

    # -- life -----------------------------------------------------------

    def attach(self, engine: ReputationEngine | None) -> None:
        """The engine whose counters are shared (a config reload may replace
        or remove it)."""
        if self.engine is not None and self.engine is not engine:
            self.outbox.add(journal.drain(self.engine))
            self.engine.journal = None
        self.engine = engine
        if engine is not None and engine.journal is None:
            engine.journal = []

    async def start(self) -> None:
        self.redis = _client(self.cfg)
        loop = asyncio.get_running_loop()
        catch_up = f"{int((time.time() - self.cfg.catch_up_seconds) * 1000)}-0"
        self._tasks.append(loop.create_task(self._push_loop()))
        self._tasks.append(
            loop.create_task(self._read_loop(self.keys.traffic, catch_up, self._on_rows))
        )
        if self.subscribers is not None:
            saved = self.files.load_audit()
            if saved is None:
                saved = await self.subscribers.run(self.subscribers.store.last_change)
            self.audit_cursor = saved
            key = self.keys.subscribers
            start = self.files.load_stream(key) or await self._newest(key)
            self._tasks.append(loop.create_task(self._publish_subscribers()))
            self._tasks.append(  # this node's own changes go out (stamped) before others' come in
                loop.create_task(self._read_loop(key, start, self._on_change, self._publish_local))
            )
            self.disputes = DisputeSync(
                self.subscribers, self.cfg.node_name, self.files.dispute_state
            )
            await self.disputes.start()
            start = self.files.load_stream(self.keys.disputes) or await self._newest(
                self.keys.disputes
            )
            self._tasks.append(loop.create_task(self._publish_disputes()))
            self._tasks.append(
                loop.create_task(self._read_loop(self.keys.disputes, start, self._on_dispute))
            )
        if self.lists_version is not None:
            self._tasks.append(loop.create_task(self._lists_loop()))
            self._tasks.append(loop.create_task(self._announce_loop()))
        log.info("cluster: node %s on %s", self.node, redacted(self.cfg.redis_url))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        # bounded: a stop must not wait on a Redis client that hangs
        if self._tasks:
            grace = self.cfg.timeout + 1
            _done, stuck = await asyncio.wait(self._tasks, timeout=grace)
            if stuck:
                log.warning("cluster: %d tasks did not stop within %.1f s", len(stuck), grace)
        if self.engine is not None:
            self.outbox.add(journal.drain(self.engine))
        if self.outbox.waiting and self.redis is not None:  # a last push, if Redis is there
            try:
                await asyncio.wait_for(self._send_pending(), self.cfg.timeout)
            except Exception:  # stopping: what could not be sent is lost, and counted
                self.dropped_rows += self.outbox.waiting
        if self.redis is not None:
            # asyncio.wait, not wait_for: wait_for would wait for a client
            # that does not take its cancellation
            closing = asyncio.ensure_future(self.redis.aclose())
            done, _ = await asyncio.wait([closing], timeout=self.cfg.timeout)
            if not done:
                closing.cancel()
                log.warning("cluster: the Redis client did not close in %.1f s", self.cfg.timeout)
            elif closing.exception() is not None:  # stopping anyway
                log.warning("cluster: closing the Redis client: %r", closing.exception())

    # -- state ----------------------------------------------------------

    def _down(self, what: str, exc: BaseException) -> None:
        self.errors += 1
        if not self.degraded:
            self.degraded = True
            self.down_since = time.time()
            log.warning("cluster: Redis unavailable (%s: %s): screening on local state", what, exc)

    def _up(self) -> None:
        if self.degraded:
            gone = time.time() - (self.down_since or time.time())
            rows = self.outbox.waiting
            log.info("cluster: Redis is back after %.1f s; sending %d rows", gone, rows)
            self.degraded = False
            self.down_since = None

    # -- counters -------------------------------------------------------

    async def _push_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.sync_interval)
            if self.engine is not None:
                self.outbox.add(journal.drain(self.engine))
            self.dropped_rows += self.outbox.bound(self.cfg.max_pending_rows)
            try:
                if self.outbox.waiting:
                    await self._send_pending()
                else:
                    await self.redis.ping()  # so a quiet node knows Redis's state too
            except Exception as exc:
                self._down("push", exc)
            else:
                self.last_sync = time.time()
                self._up()

    async def _send_pending(self) -> None:
        keep = int((time.time() - self.cfg.catch_up_seconds - 60) * 1000)
        while (batch := self.outbox.next()) is not None:
            # a timeout here may have landed all the same: the next try sends
            # the same batch, and the receivers apply it once
            await self.redis.xadd(
                self.keys.traffic, {"d": batch.data}, minid=keep, approximate=True
            )
            self.outbox.landed(batch)
            self.sent_rows += batch.rows

    async def _on_rows(self, fields: dict[bytes, bytes]) -> None:
        batch = journal.decode(fields.get(b"d", b""))
        if batch.sender == self.me or self.engine is None:
            return
        if not self.batches.fresh(batch):
            self.duplicate_batches += 1
            return
        self.received_rows += len(batch.rows)
        self.received_calls += journal.apply(self.engine, batch.rows, time.monotonic())
        self.batches.mark(batch)

    # -- reading a stream -------------------------------------------------

    async def _read_loop(
        self,
        key: str,
        start: str,
        handle: Handler,
        before: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Entries of ``key`` from ``start`` on, each to ``handle``; when
        some came, ``before`` runs first."""
        last = start
        block = int(min(1.0, self.cfg.timeout / 2) * 1000)
        while True:
            try:
                answer = await self.redis.xread({key: last}, count=READ_COUNT, block=block)
                if answer and before is not None:
                    await before()
            except Exception as exc:
                self._down(f"read {key}", exc)
                await asyncio.sleep(RETRY)
                continue
            failed = False
            for _stream, entries in answer or ():
                for entry_id, fields in entries:
                    this = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
                    try:
                        await handle(fields)
                    except (ValueError, InvalidField) as exc:
                        self.bad_entries += 1
                        log.warning("cluster: skipped entry %s of %s: %s", this, key, exc)
                    except Exception:  # the store failed: read this entry again later
                        self.errors += 1
                        log.exception("cluster: applying entry %s of %s failed", this, key)
                        failed = True
                        break
                    last = this
                    await asyncio.sleep(0)  # a catch-up of thousands of rows: let calls in
            self.files.save_stream(key, last)
            if failed:
                await asyncio.sleep(RETRY)

    # -- subscribers ------------------------------------------------------

    async def _publish_subscribers(self) -> None:
        while True:
            await asyncio.sleep(SUBSCRIBER_POLL)
            try:
                await self._publish_local()
            except Exception as exc:  # the cursor stays: published when Redis is back
                self._down("publish subscriber change", exc)
                await asyncio.sleep(RETRY)

    async def _publish_local(self) -> None:
        """Publish what this node's store took since the last look, by its
        audit trail (written through this node's API or a bulk import),
        until there is nothing more."""
        service = self.subscribers
        assert service is not None
        async with self.publishing:
            while True:
                seen, times = await service.run(
                    service.store.change_times, self.audit_cursor, PUBLISH_BATCH
                )
                for number, at in times.items():
                    await self._publish(number, service.get(number), at)
                if seen == self.audit_cursor:
                    return
                self.audit_cursor = seen
                self.files.save_audit(seen)

    async def _publish(self, number: int, sub: Subscriber | None, at: float) -> None:
        """``at``: when the change was made (its newest audit row), so a
        change published late does not win over a newer one."""
        if number in self.applied and self.applied.pop(number) == sub:
            return  # another node's change, applied here: not ours to repeat
        self._stamp(number, (at, self.node))
        doc = {"from": self.me, "node": self.node, "at": at, "number": f"+{number}"}
        doc["subscriber"] = sub.public() if sub is not None else None
        await self.redis.xadd(
            self.keys.subscribers,
            {"d": json.dumps(doc).encode()},
            maxlen=SUBSCRIBER_STREAM_LEN,
            approximate=True,
        )
        self.published_changes += 1

    async def _on_change(self, fields: dict[bytes, bytes]) -> None:
        doc = json.loads(fields.get(b"d", b"null"))
        if not isinstance(doc, dict) or not isinstance(doc.get("at"), int | float):
            raise ValueError("not a subscriber change")
        if doc.get("from") == self.me:
            return
        number = parse_number(doc.get("number"))
        stamp = (float(doc["at"]), str(doc.get("node")))
        if number in self.stamps and self.stamps[number] >= stamp:
            return  # this node holds a newer change: it wins everywhere
        body = doc.get("subscriber")
        new = None
        if body is not None:
            if not isinstance(body, dict):
                raise ValueError("subscriber is not an object")
            new = apply_changes(Subscriber(number), body)
        service = self.subscribers
        assert service is not None
        actor = f"cluster:{stamp[1]}"[:64]
        self._remember(number, new)  # before the write: its audit row must not echo
        try:
            if new is None:
                await service.delete(number, actor)
            else:
                await service.put(new, actor)
        except BaseException:
            self.applied.pop(number, None)
            raise
        self._stamp(number, stamp)
        self.applied_changes += 1

    def _stamp(self, number: int, stamp: tuple[float, str]) -> None:
        self.stamps[number] = stamp
        self.stamps.move_to_end(number)
        if len(self.stamps) > STAMPS:
            self.stamps.popitem(last=False)

    def _remember(self, number: int, sub: Subscriber | None) -> None:
        self.applied[number] = sub
        self.applied.move_to_end(number)
        if len(self.applied) > STAMPS:
            self.applied.popitem(last=False)

    async def _newest(self, key: str) -> str:
        """The stream's newest entry id: where a node with no saved cursor
        starts (a concrete id, so a read retried later misses nothing)."""
        try:
            newest = await self.redis.xrevrange(key, count=1)
        except Exception as exc:
            self._down(f"read {key}", exc)
            return f"{int(time.time() * 1000)}-0"
        if not newest:
            return "0-0"
        entry_id = newest[0][0]
        return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)

    # -- disputes ---------------------------------------------------------

    async def _publish_disputes(self) -> None:
        sync = self.disputes
        assert sync is not None
        while True:
            await asyncio.sleep(SUBSCRIBER_POLL)
            try:
                await sync.changes()
                while sync.ready:  # kept while Redis is away
                    doc = {"from": self.me, "node": self.cfg.node_name, **sync.ready[0]}
                    await self.redis.xadd(
                        self.keys.disputes,
                        {"d": json.dumps(doc).encode()},
                        maxlen=SUBSCRIBER_STREAM_LEN,
                        approximate=True,
                    )
                    sync.ready.pop(0)
                    self.dispute_events += 1
                sync.save()  # all it found is in Redis: survives a restart
            except Exception as exc:
                self._down("publish dispute", exc)
                await asyncio.sleep(RETRY)

    async def _on_dispute(self, fields: dict[bytes, bytes]) -> None:
        assert self.disputes is not None
        doc = json.loads(fields.get(b"d", b"null"))
        if not isinstance(doc, dict):
            raise ValueError("not a dispute event")
        if doc.get("from") == self.me or doc.get("node") == self.cfg.node_name:
            return
        if await self.disputes.apply(doc, str(doc.get("node"))[:64]):
            self.dispute_events += 1

    # -- blocklists -------------------------------------------------------

    async def _lists_loop(self) -> None:
        """Announce this node's artefact version; follow others' versions."""
        assert self.lists_version is not None
        last = "$"
        try:  # only the newest announcement matters to a node starting now
            newest = await self.redis.xrevrange(self.keys.blocklists, count=1)
            if newest:
                last = newest[0][0].decode()
                await self._on_version(newest[0][1])
        except Exception as exc:
            self._down("read blocklist versions", exc)
        await self._read_loop(self.keys.blocklists, last, self._on_version)

    async def _announce_loop(self) -> None:
        while True:
            try:
                await self.announce()
            except Exception as exc:  # announced when Redis is back
                self._down("announce blocklists", exc)
            await asyncio.sleep(self.cfg.sync_interval)

    async def announce(self) -> None:
        """Called after this node loaded a new artefact (and at start)."""
        assert self.lists_version is not None
        version = self.lists_version()
        if self.wanted is not None and version == self.wanted:
            self.lists_mismatch = False  # this node's directory caught up
        if version is None or version == self.announced:
            return
        doc = {"from": self.me, "node": self.node, "version": version}
        await self.redis.xadd(
            self.keys.blocklists,
            {"d": json.dumps(doc).encode()},
            maxlen=BLOCKLIST_STREAM_LEN,
            approximate=True,
        )
        self.announced = version

    async def _on_version(self, fields: dict[bytes, bytes]) -> None:
        assert self.lists_version is not None
        doc = json.loads(fields.get(b"d", b"null"))
        if not isinstance(doc, dict) or not isinstance(doc.get("version"), str):
            raise ValueError("not a blocklist announcement")
        if doc.get("from") == self.me or doc.get("node") == self.node:
            return  # this node's own, maybe from before a restart
        wanted = self.wanted = doc["version"]
        if self.lists_version() == wanted:
            self.lists_mismatch = False
            return
        now = await self.reload_lists() if self.reload_lists is not None else None
        self.lists_mismatch = now != wanted
        if self.lists_mismatch:
            log.warning(
                "cluster: node %s loaded blocklists %s; this node has %s (is the artefact "
                "directory in sync?)", doc.get("node"), wanted, now,
            )  # fmt: skip
        else:
            self.announced = now  # the same version: nothing new to announce

    # -- metrics ----------------------------------------------------------

    def collector(self) -> Collector:
        return ClusterCollector(self)


def _client(cfg: ClusterConfig) -> Any:
    password = None
    if cfg.redis_password_file:
        password = Path(cfg.redis_password_file).read_text().strip()
    options: dict[str, Any] = {
        "socket_timeout": cfg.timeout,
        "socket_connect_timeout": cfg.timeout,
        "health_check_interval": 5,
    }
    if password is not None:
        options["password"] = password
    if cfg.mode == "cluster":
        from redis.asyncio.cluster import RedisCluster

        return RedisCluster.from_url(cfg.redis_url, **options)
    from redis.asyncio import Redis

    return Redis.from_url(cfg.redis_url, **options)
