"""What only several connections to one subscriber store show, on SQLite
and on a real PostgreSQL server (tests/pg_server.py): a change made through
one node reaches another by ``changed_since``, followers miss no change
when writers overlap, a dropped connection is opened again without losing
or half-writing anything, and an unreachable store is a 503 with
Retry-After on the API and the public pages. The store cases both backends
share (audit, transactions, imports, disputes) run on each backend in
test_subscribers.py."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import psycopg
import pytest
from prometheus_client import CollectorRegistry

from proxy.admin import AdminApi
from proxy.config import ConfigError, parse_config
from proxy.routing import SwitchPool
from proxy.subscribers.api import SubscriberApi
from proxy.subscribers.backend import StoreUnavailable, redact
from proxy.subscribers.links import LinkSigner
from proxy.subscribers.model import Subscriber, build_list
from proxy.subscribers.pages import Pages
from proxy.subscribers.pg_store import PgSubscriberStore, open_postgresql
from proxy.subscribers.service import SubscriberService
from tests.pg_server import BACKENDS, PgCluster, StorePlace, shared_cluster, store_place
from tests.test_server import free_port
from tests.test_subscriber_api import TOKEN, Reply, http

ALICE, BOB, CALLER = 13125550187, 16465550199, 12125550142
HEADER = "number,opted_in,policy,reject_anonymous,allow,block"


@pytest.fixture(params=BACKENDS)
def place(request: pytest.FixtureRequest, tmp_path: Path) -> StorePlace:
    return store_place(request.param, tmp_path, request.config)


@pytest.fixture
def pg_place(request: pytest.FixtureRequest, tmp_path: Path) -> StorePlace:
    return store_place("postgresql", tmp_path, request.config)


@pytest.fixture
def cluster(pytestconfig: pytest.Config) -> PgCluster:
    return shared_cluster(pytestconfig)


def pg_store(service: SubscriberService) -> PgSubscriberStore:
    assert isinstance(service.store, PgSubscriberStore)
    return service.store


def backend_pid(service: SubscriberService) -> int:
    conn = pg_store(service).db.conn
    assert conn is not None
    return int(conn.info.backend_pid)


def wait_until(what: str, done: Any, seconds: float = 10.0) -> None:
    """Poll ``done()`` every 10 ms, at most ``seconds``."""
    for _ in range(int(seconds * 100)):
        if done():
            return
        time.sleep(0.01)
    raise AssertionError(f"still not {what} after {seconds} s")


# -- two nodes on one store ----------------------------------------------------


async def test_change_times_give_each_number_its_newest_change(place: StorePlace) -> None:
    """What the cluster link stamps a published change with: the time of the
    number's newest audit row read, in the order changed_since gives."""
    first, second = place.open(), place.open()
    try:
        mark = second.store.last_change()
        assert second.store.change_times(mark, 100) == (mark, {})
        await first.put(Subscriber(ALICE, opted_in=True), "a")
        await first.put(Subscriber(BOB), "a")
        await first.update(ALICE, {"policy": "off"}, "a")
        last, times = second.store.change_times(mark, 100)
        assert second.store.changed_since(mark, 100) == (last, list(times)) == (last, [ALICE, BOB])
        newest = {n: (await first.audit(n))[0]["at"] for n in (ALICE, BOB)}
        assert times == newest and times[ALICE] > times[BOB]
        first_row, part = second.store.change_times(mark, 1)  # ALICE's first row only
        assert mark < first_row < last and list(part) == [ALICE] and part[ALICE] < times[ALICE]
    finally:
        first.close()
        second.close()


async def test_a_change_on_one_node_reaches_the_other(place: StorePlace) -> None:
    first, second = place.open(), place.open()
    try:
        assert first.store.changed_since(0, 100) == (0, [])
        mark = second.store.last_change()
        await first.put(Subscriber(ALICE, opted_in=True, block=build_list([f"+{CALLER}"])), "a")
        await first.put(Subscriber(BOB), "a")
        # the other node's own connection sees the committed change
        last, numbers = second.store.changed_since(mark, 100)
        assert numbers == [ALICE, BOB] and last > mark
        assert second.store.changed_since(last, 100) == (last, [])
        assert second.get(ALICE) is None  # not until it follows
        assert await second.follow() == 2
        assert second.index == first.index and second.by_policy() == first.by_policy()
        # replace, delete and a dispute allowed for everyone, all followed
        await first.update(ALICE, {"policy": "off"}, "a")
        await first.delete(BOB, "a")
        dispute = await first.file_dispute(CALLER, "c@example.com", "x", "10.0.0.1", 1.0)
        await first.resolve_dispute(dispute, "allow", None, "", "a")
        assert await second.follow() == 2
        assert second.get(BOB) is None and second.get(ALICE) == first.get(ALICE)
        assert second.index == first.index and second.global_allow == {CALLER}
        # a limit reads the trail in parts, in order, and misses nothing
        await first.import_csv(
            HEADER + "".join(f"\n+1212555{i:04d},true,label,false,," for i in range(30)), "csv"
        )
        after, seen = second.seen_change, []
        for _ in range(200):  # 150 audit rows, 7 at a time
            after, numbers = second.store.changed_since(after, 7)
            if not numbers:
                break
            seen += numbers
        assert list(dict.fromkeys(seen)) == [12125550000 + i for i in range(30)]
        assert await second.follow() == 30 and second.index == first.index
    finally:
        first.close()
        second.close()


def test_followers_miss_no_change_while_a_writer_is_mid_transaction(
    pg_place: StorePlace, cluster: PgCluster
) -> None:
    """A writer that has taken an audit id but not committed holds the
    audit lock: no other node can commit a later id meanwhile, so a
    follower that reads past the later id cannot skip the earlier one."""
    slow, quick, follower = pg_place.open(), pg_place.open(lock_timeout=300), pg_place.open()
    test = psycopg.connect(pg_place.dsn, autocommit=True)  # the tables' schema first
    try:
        # pause the slow writer inside its transaction, after it took its ids
        test.execute(
            "CREATE FUNCTION pause() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"IF NEW.number = {ALICE} THEN PERFORM pg_advisory_xact_lock(4242); END IF; "
            "RETURN NEW; END $$"
        )
        test.execute(
            "CREATE TRIGGER pause BEFORE INSERT ON audit FOR EACH ROW EXECUTE FUNCTION pause()"
        )
        mark = follower.store.last_change()
        test.execute("BEGIN")
        test.execute("SELECT pg_advisory_xact_lock(4242)")
        slow_pid = backend_pid(slow)
        done: list[object] = []
        writer = threading.Thread(
            target=lambda: done.append(slow.store.put(Subscriber(ALICE), "slow", 1.0))
        )
        writer.start()

        def waiting() -> bool:
            row = test.execute(
                "SELECT count(*) FROM pg_locks WHERE pid = %s AND NOT granted", (slow_pid,)
            ).fetchone()
            return row == (1,)

        wait_until("blocked inside its transaction", waiting)
        # the slow writer holds ids it has not committed: the quick one must wait
        with pytest.raises(StoreUnavailable, match="lock timeout"):
            quick.store.put(Subscriber(BOB), "quick", 2.0)
        assert follower.store.changed_since(mark, 100) == (mark, [])
        test.execute("COMMIT")  # the slow writer goes on and commits
        writer.join(10)
        assert done == [None] and not writer.is_alive()
        assert quick.store.put(Subscriber(BOB), "quick", 3.0) is None
        last, numbers = follower.store.changed_since(mark, 100)
        assert numbers == [ALICE, BOB]
        rows = test.execute("SELECT id, actor FROM audit WHERE id > %s ORDER BY id", (mark,))
        actors = [actor for _, actor in rows.fetchall()]
        assert actors == ["slow"] * 5 + ["quick"] * 5
        assert follower.store.changed_since(last, 100) == (last, [])
    finally:
        with contextlib.suppress(psycopg.Error):
            test.execute("ROLLBACK")
        test.close()
        for svc in (slow, quick, follower):
            svc.close()


def test_overlapping_writers_on_two_nodes_and_a_follower_miss_nothing(
    pg_place: StorePlace,
) -> None:
    nodes = [pg_place.open(), pg_place.open()]
    follower = pg_place.open()
    per_node = 150
    stop = threading.Event()
    told: list[int] = []
    errors: list[BaseException] = []

    def write(node: int) -> None:
        try:
            for i in range(per_node):
                number = 12125550000 + node * 1000 + i
                nodes[node].store.put(Subscriber(number), f"node{node}", float(i))
        except BaseException as exc:
            errors.append(exc)

    def follow() -> None:
        after = follower.store.last_change()
        for _ in range(20_000):  # bounded: also stops when told to
            after, numbers = follower.store.changed_since(after, 5)
            told.extend(numbers)
            if stop.is_set() and not numbers:
                return
            if not numbers:
                time.sleep(0.001)

    threads = [threading.Thread(target=write, args=(n,)) for n in (0, 1)]
    reader = threading.Thread(target=follow)
    try:
        reader.start()
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        stop.set()
        reader.join(60)
        assert not errors and not reader.is_alive()
        written = {12125550000 + n * 1000 + i for n in (0, 1) for i in range(per_node)}
        assert set(told) == written and len(told) == len(written)
    finally:
        stop.set()
        for svc in (*nodes, follower):
            svc.close()


# -- lost connections ------------------------------------------------------------


def terminate(cluster: PgCluster, pid: int) -> None:
    with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
        row = admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()
        assert row == (True,)
        # pg_terminate_backend only signals: wait until that backend is gone
        wait_until(
            "gone",
            lambda: (
                admin.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)
                ).fetchone()
                == (0,)
            ),
        )


async def test_a_dropped_connection_is_opened_again_and_loses_nothing(
    pg_place: StorePlace, cluster: PgCluster
) -> None:
    service = pg_place.open()
    try:
        alice = Subscriber(ALICE, opted_in=True, allow=build_list(["+1800*"]))
        await service.put(alice, "api")
        before = backend_pid(service)
        terminate(cluster, before)
        assert service.store.get(ALICE) == alice  # a read on a new connection
        assert backend_pid(service) != before
        terminate(cluster, backend_pid(service))
        await service.update(ALICE, {"policy": "off"}, "api")  # a write, too
        terminate(cluster, backend_pid(service))
        assert await service.import_csv(f"{HEADER}\n+{BOB},true,label,false,,\n", "csv") == (1, 0)
        index = dict(service.index)
    finally:
        service.close()
    again = pg_place.open()  # a restart: everything acknowledged is there
    try:
        assert again.index == index and again.get(ALICE) == Subscriber(
            ALICE, opted_in=True, policy="off", allow=build_list(["+1800*"])
        )
        assert len(again.store.audit(ALICE)) == 6
    finally:
        again.close()


async def test_a_connection_lost_mid_import_commits_nothing(pg_place: StorePlace) -> None:
    service = pg_place.open()
    try:
        await service.put(Subscriber(ALICE), "api")
        with psycopg.connect(pg_place.dsn, autocommit=True) as conn:  # dies at CALLER's row
            conn.execute(
                "CREATE FUNCTION die() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                f"IF NEW.number = {CALLER} THEN PERFORM pg_terminate_backend(pg_backend_pid()); "
                "PERFORM pg_sleep(5); END IF; RETURN NEW; END $$"
            )
            conn.execute(
                "CREATE TRIGGER die BEFORE INSERT ON subscribers FOR EACH ROW "
                "EXECUTE FUNCTION die()"
            )
        text = f"{HEADER}\n+{BOB},true,off,false,,\n+{CALLER},true,off,false,,\n"
        with pytest.raises(StoreUnavailable, match="PostgreSQL"):
            await service.import_csv(text, "csv")
        assert service.get(BOB) is None and set(service.index) == {ALICE}
        with psycopg.connect(pg_place.dsn, autocommit=True) as conn:
            conn.execute("DROP TRIGGER die ON subscribers")
        assert service.store.count() == 1 and service.store.get(BOB) is None  # nothing half-done
        assert await service.import_csv(text, "csv") == (2, 0)  # on a new connection
        assert service.store.count() == 3
    finally:
        service.close()


def test_an_unreachable_server_is_store_unavailable_and_the_password_stays_out() -> None:
    dsn = f"host=127.0.0.1 port={free_port()} dbname=x user=shield password=hunter2-secret"
    with pytest.raises(StoreUnavailable) as info:
        open_postgresql(dsn)
    assert "cannot connect to PostgreSQL" in str(info.value)
    assert "hunter2" not in str(info.value) and "hunter2" not in repr(info.value.__cause__)
    with pytest.raises(StoreUnavailable, match="connection string is not valid") as info:
        open_postgresql("host=db password=hunter2 port")  # a dsn_file changed after start-up
    assert "hunter2" not in str(info.value) and info.value.__cause__ is None


def test_a_role_that_may_not_create_tables_uses_the_tables_made_for_it(
    cluster: PgCluster,
) -> None:
    schema, role = cluster.new_schema(), f"app_{cluster.new_schema()}"
    dsn = cluster.dsn(schema).replace("user=shield", f"user={role}")
    dsn = dsn.replace(f"password={cluster.password}", "password=app-secret")
    with psycopg.connect(cluster.dsn(schema), autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'app-secret'")
        admin.execute(f"GRANT USAGE ON SCHEMA {schema} TO {role}")
        with pytest.raises(StoreUnavailable, match="cannot create the subscriber tables"):
            open_postgresql(dsn)  # nothing there, and no right to create it
        open_postgresql(cluster.dsn(schema)).close()  # the administrator creates them
        admin.execute(
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {role}; "
            f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA {schema} TO {role}"
        )
    service = SubscriberService(open_postgresql(dsn))
    try:
        service.store.put(Subscriber(ALICE), "api", 1.0)
        assert service.store.get(ALICE) == Subscriber(ALICE)
        assert service.disputes.file(CALLER, "a", "b", "10.0.0.1", 1.0) == 1
    finally:
        service.close()


def test_redact_hides_passwords_in_both_connection_string_forms() -> None:
    assert redact("host=db password=s3cret user=u") == "host=db password=*** user=u"
    assert redact("host=db password = 'a b\\' c' port=5") == "host=db password = *** port=5"
    assert redact("postgresql://user:s3cret@db:5432/x") == "postgresql://user:***@db:5432/x"
    assert redact("postgres://u@db/x?password=s3cret") == "postgres://u@db/x?password=***"
    assert redact("database is locked") == "database is locked"


def test_from_config_picks_the_backend_and_takes_the_password_from_the_environment(
    tmp_path: Path, cluster: PgCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    schema = cluster.new_schema()
    dsn_file = tmp_path / "dsn"
    dsn_file.write_text(cluster.dsn(schema, password=False) + "\n")
    cfg = parse_config({"subscribers": {"backend": "postgresql", "dsn_file": str(dsn_file)}})
    assert str(dsn_file) in repr(cfg.subscribers) and "dsn=" not in repr(cfg.subscribers)
    monkeypatch.setenv("PGPASSWORD", "wrong")
    with pytest.raises(StoreUnavailable, match="password authentication failed"):
        SubscriberService.from_config(cfg.subscribers)
    monkeypatch.setenv("PGPASSWORD", cluster.password)
    service = SubscriberService.from_config(cfg.subscribers)
    try:
        assert service.backend.name == "postgresql" and cluster.password not in service.where
        service.store.put(Subscriber(ALICE), "api", 1.0)
    finally:
        service.close()
    with psycopg.connect(cluster.dsn(schema), autocommit=True) as conn:
        assert conn.execute("SELECT number FROM subscribers").fetchall() == [(ALICE,)]
    # a password in the dsn itself works too, and is not shown
    cfg = parse_config({"subscribers": {"backend": "postgresql", "dsn": cluster.dsn(schema)}})
    assert cluster.password not in repr(cfg) and cluster.password not in str(cfg)
    monkeypatch.delenv("PGPASSWORD")
    service = SubscriberService.from_config(cfg.subscribers)
    try:
        assert service.get(ALICE) == Subscriber(ALICE) and cluster.password not in service.where
    finally:
        service.close()
    local = SubscriberService.from_config(
        parse_config({"subscribers": {"data_dir": str(tmp_path / "d")}}).subscribers
    )
    try:
        assert (
            local.backend.name == "sqlite" and local.path == tmp_path / "d" / "subscribers.sqlite3"
        )
    finally:
        local.close()


def test_config_errors_never_quote_the_connection_string(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(
            {"subscribers": {"backend": "postgresql", "dsn": "host=db password=hunter2 port"}}
        )
    assert info.value.key == "subscribers.dsn" and "hunter2" not in str(info.value)


# -- the store unavailable: the API and the public pages -----------------------


@contextlib.contextmanager
def unavailable(
    place: StorePlace, service: SubscriberService, cluster: PgCluster | None
) -> Iterator[None]:
    """SQLite: another process holds the write lock. PostgreSQL: the server
    is stopped. Either way it comes back at the end."""
    if place.backend == "sqlite":
        assert service.db is not None
        service.db.execute("PRAGMA busy_timeout=200")
        other = sqlite3.connect(place.path, isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            other.execute("ROLLBACK")
            other.close()
        return
    assert cluster is not None
    cluster.stop()
    try:
        yield
    finally:
        cluster.start()


class Site:
    """The subscriber API and the pages on a real admin server on loopback."""

    def __init__(self, port: int, signer: LinkSigner) -> None:
        self.port, self.signer = port, signer

    async def api(self, method: str, path: str, body: Any = b"") -> Reply:
        return await http(self.port, method, f"/api/v1{path}", body)

    async def form(self, path: str, form: dict[str, str]) -> Reply:
        return await http(
            self.port, "POST", path, urlencode(form), token=None,
            ctype="application/x-www-form-urlencoded",
        )  # fmt: skip


@contextlib.asynccontextmanager
async def site(service: SubscriberService) -> AsyncIterator[Site]:
    cfg = parse_config({})
    api = AdminApi(
        SwitchPool(cfg.switches, cfg.routing), CollectorRegistry(), lambda: True, token=TOKEN
    )
    signer = LinkSigner(b"k" * 32, "http://127.0.0.1", 3600)
    SubscriberApi(service, signer).register(api)
    Pages(service, signer, 100).register(api)
    server = await api.start("127.0.0.1", 0)
    try:
        yield Site(int(server.sockets[0].getsockname()[1]), signer)
    finally:
        server.close()
        await server.wait_closed()


def is_503_page(reply: Reply) -> None:
    assert reply.status == 503, reply
    assert reply.headers["retry-after"] == "5"
    assert reply.headers["content-type"] == "text/html; charset=utf-8"
    assert "id=unavailable>" in reply.text and "try again in a few minutes" in reply.text
    assert "PostgreSQL" not in reply.text and "locked" not in reply.text  # no internals


async def test_an_unavailable_store_is_a_503_on_the_api_and_the_pages(
    place: StorePlace, request: pytest.FixtureRequest
) -> None:
    cluster = shared_cluster(request.config) if place.backend == "postgresql" else None
    service = place.open()
    try:
        async with site(service) as web:
            assert (
                await web.api("PUT", f"/subscribers/+{ALICE}", {"opted_in": True})
            ).status == 201
            url, _ = web.signer.link(ALICE, time.time())
            token = url.partition("?t=")[2]
            settings = {"t": token, "opted_in": "on", "policy": "off", "allow": "", "block": ""}
            dispute = {"number": f"+{CALLER}", "contact": "a@example.com", "description": "me"}
            with unavailable(place, service, cluster):
                reply = await web.api("PATCH", f"/subscribers/+{ALICE}", {"policy": "off"})
                assert reply.status == 503 and reply.headers["retry-after"] == "5"
                assert "subscriber store is unavailable" in reply.json()["error"]
                # reads: SQLite in WAL mode reads beside a writer's lock
                listed = await web.api("GET", "/disputes")
                assert listed.status == (200 if place.backend == "sqlite" else 503)
                # what is in memory is still served, and unchanged
                got = await web.api("GET", f"/subscribers/+{ALICE}")
                assert got.status == 200 and got.json()["policy"] == "label"
                is_503_page(await web.form("/redress", dispute))
                is_503_page(await web.form("/self-service", settings))
                assert service.get(ALICE) == Subscriber(ALICE, opted_in=True)
                assert service.open == {}
            # back: the same requests go through (PostgreSQL: on a new connection)
            reply = await web.api("PATCH", f"/subscribers/+{ALICE}", {"policy": "off"})
            assert reply.status == 200 and reply.json()["policy"] == "off"
            assert (await web.form("/redress", dispute)).status == 200
            assert (await web.form("/self-service", settings)).status == 200
            assert len(service.open) == 1
    finally:
        service.close()
    again = place.open()
    try:
        assert again.get(ALICE) == Subscriber(ALICE, opted_in=True, policy="off")
        assert len(again.open) == 1
    finally:
        again.close()


async def test_the_service_reports_an_unavailable_store_from_any_call(
    pg_place: StorePlace, cluster: PgCluster
) -> None:
    service = pg_place.open()
    try:
        cluster.stop()
        try:
            calls: list[Callable[[], Awaitable[object]]] = [
                lambda: service.put(Subscriber(ALICE), "api"),
                service.follow,
                lambda: service.audit(ALICE),
                lambda: service.file_dispute(CALLER, "a", "b", "10.0.0.1", 1.0),
            ]
            for call in calls:
                with pytest.raises(StoreUnavailable, match="PostgreSQL"):
                    await asyncio.wait_for(call(), 30)
        finally:
            cluster.start()
        assert await service.follow() == 0 and service.index == {}
    finally:
        service.close()
