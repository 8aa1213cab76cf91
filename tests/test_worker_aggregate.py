"""With several workers, /admin/peers and /admin/reputation/<n> answer for
the whole node: the first worker sums its siblings' raw counts (peer slots,
a number's traffic buckets) before computing any share or score, so the
answer is the one a single worker fed every call would give."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from proxy.events import Address, CallOutcome, Event, Screened
from proxy.gateway.stats import PeerStats, decode_raw, encode_raw
from proxy.gateway.store import PeerStore
from proxy.peers import PeerDirectory
from proxy.reputation import ReputationEngine, pooled
from proxy.reputation.explain import explain_number, explain_pooled
from proxy.server import Worker
from proxy.sip.identity import CallFacts
from proxy.supervisor import RestartCounts, WorkerRole
from proxy.worker_commands import link_commands
from proxy.worker_link import ASK_TIMEOUT, ask, gather_from_siblings, serve_link
from tests.conftest import make_config, make_core
from tests.sipmsg import request
from tests.test_reputation import answered_call, facts, rcfg, rejected_call
from tests.test_workers import Proxy, invite, udp_socket, wait_for

BLOCKED = "+12125550100"
CALLER, CALLER_KEY = "+12125550142", 12125550142
CARRIER, GATEWAY = "198.51.100.10", "203.0.113.9"


# -- peer statistics: summed slot by slot -------------------------------------


def peer_config() -> Any:
    return make_config(
        screening={"block": [BLOCKED]},
        peers=[
            {"name": "carrier-a", "addresses": ["198.51.100.0/24"]},
            {"name": "gateway-b", "addresses": ["203.0.113.0/24"]},
        ],
    )


def screened_call(core: Any, n: int, source: str, caller: str, now: float) -> Screened:
    data = request(caller=caller, branch=f"z9hG4bK-agg-{n}", call_id=f"agg-{n}@h")
    events = core.receive_datagram(data, Address(source, 5060, "udp"), now)
    return next(e for e in events if isinstance(e, Screened))


def peer_traffic() -> list[tuple[float, Event]]:
    """Calls and outcomes over a day: minute and hour slots shared by both
    workers, slots only one has, and a minute slot one worker reused an hour
    later (its older occupant must not be summed in)."""
    core = make_core(peer_config())
    out: list[tuple[float, Event]] = []
    times = [60.0, 61.5, 3660.0, 3661.0, 50_000.0, 86_000.0, 86_000.5, 86_100.0]
    times += [86_200.0 + 7 * i for i in range(12)]
    for n, t in enumerate(times):
        source = CARRIER if n % 3 else GATEWAY
        caller = BLOCKED if n % 4 == 0 else f"+1202555{1000 + n:04d}"
        out.append((t, screened_call(core, n, source, caller, t)))
        if n % 4:
            answered = n % 2 == 1
            out.append((t + 1, CallOutcome(source, answered=answered)))
            if answered:  # durations exact in binary: the sums cannot differ by rounding
                out.append((t + 30, CallOutcome(source, duration=4.0 + 8.5 * (n % 3))))
    return out


def test_summed_peer_slots_equal_one_worker_fed_every_call() -> None:
    directory = PeerDirectory(peer_config().peers)
    workers = [PeerStats(directory), PeerStats(directory), PeerStats(directory)]
    alone = PeerStats(directory)
    for i, (t, ev) in enumerate(peer_traffic()):
        workers[i % 3].observe(ev, t)
        alone.observe(ev, t)
    now = 86_400.0
    siblings = [decode_raw(encode_raw(w.raw(now))) for w in workers[1:]]
    node = workers[0].combined(siblings, now)
    for name in directory.names:
        assert node.summary(name, now) == alone.summary(name, now), name
    day = node.summary("carrier-a", now)["24h"]
    assert isinstance(day, dict) and day["calls"] > 0 and day["asr"] is not None
    # the first worker's own figures are left as they were
    assert workers[0].summary("carrier-a", now) != alone.summary("carrier-a", now)


def test_shares_come_from_summed_counts_not_averaged() -> None:
    directory = PeerDirectory(peer_config().peers)
    core = make_core(peer_config())
    first, second = PeerStats(directory), PeerStats(directory)
    first.observe(screened_call(core, 1, CARRIER, BLOCKED, 10.0), 10.0)  # 1 of 1 flagged
    for n in range(2, 5):  # 0 of 3 flagged
        second.observe(screened_call(core, n, CARRIER, f"+120255510{n:02d}", 10.0), 10.0)
    node = first.combined([second.raw(12.0)], 12.0).summary("carrier-a", 12.0)["5m"]
    assert isinstance(node, dict)
    assert node["calls"] == 4 and node["flagged"] == 1
    assert node["flagged_share"] == 0.25, "an average of the two workers' shares would be 0.5"


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b'{"v": 2, "peers": {}}',
        b'{"v": 1, "peers": []}',
        b'{"v": 1, "peers": {"carrier-a": {"minutes": []}}}',
        b'{"v": 1, "peers": {"carrier-a": {"minutes": [[1, [1]]], "hours": []}}}',
        b'{"v": 1, "peers": {"carrier-a": {"minutes": [[-1, [0,0,0,0,0,0,0,0,0,0,0,0,0,0,0]]],'
        b' "hours": []}}}',
        b'{"v": 1, "peers": {"carrier-a": {"minutes": [[1, [0,0,0,0,0,0,0,0,0,0,0,0,0,0,-3]]],'
        b' "hours": []}}}',
        b'{"v": 1, "peers": {"carrier-a": {"minutes": [[1, [0,0,0,0,0,0,0,0,0,0,0,0,0,0,1e400]]],'
        b' "hours": []}}}',
        b'{"v": 1, "peers": {"carrier-a": {"minutes": [[1, [true,0,0,0,0,0,0,0,0,0,0,0,0,0,0]]],'
        b' "hours": []}}}',
    ],
)
def test_a_malformed_sibling_answer_is_refused_whole(data: bytes) -> None:
    with pytest.raises(ValueError):
        decode_raw(data)


def test_a_peer_the_first_worker_does_not_declare_is_left_out() -> None:
    directory = PeerDirectory(peer_config().peers)
    raw = {"renamed": ([(0, [1.0] * 15)], [])}
    node = PeerStats(directory).combined([raw], 30.0)
    assert "renamed" not in node.rings
    assert all(node.summary(n, 30.0)["5m"]["calls"] == 0 for n in directory.names)  # type: ignore[index]


# -- a number's traffic: summed bucket by bucket ------------------------------


def caller_calls() -> list[tuple[CallFacts, str]]:
    """Calls of CALLER and of 24 neighbours in its thousands-block, across
    an hour boundary, ending with a burst across a second boundary (so one
    worker's last second is the other's previous one). Callees far apart:
    near-sequential dialling is found per worker, in its own calls."""
    out: list[tuple[CallFacts, str]] = []
    for i in range(40):
        callee = f"+1312555{1000 + 97 * i:04d}"
        out.append((facts(CALLER, callee, t=3000.0 + 20 * i), "short" if i % 3 else "rejected"))
    for i in range(24):
        neighbour = f"+121255501{i:02d}"
        out.append((facts(neighbour, f"+1415555{2000 + i:04d}", t=3500.0 + 9 * i), "short"))
    for i in range(10):
        out.append((facts(CALLER, f"+1617555{3000 + 13 * i:04d}", t=3898.6 + 0.15 * i), "open"))
    return sorted(out, key=lambda c: c[0].received)


def feed(engine: ReputationEngine, call: CallFacts, how: str) -> None:
    if how == "short":
        answered_call(engine, call, duration=2.0)
    elif how == "rejected":
        rejected_call(engine, call)
    else:
        engine.record(call)


@pytest.mark.parametrize("now", [3899.95, 3900.4, 5000.0, 7300.0])
def test_pooled_counters_score_as_one_engine_fed_every_call(now: float) -> None:
    workers = [ReputationEngine(rcfg()) for _ in range(3)]
    alone = ReputationEngine(rcfg())
    for i, (call, how) in enumerate(caller_calls()):
        feed(workers[i % 3], call, how)
        feed(alone, call, how)
    others = [
        pooled.decode(pooled.encode(pooled.number_traffic(w, CALLER_KEY))) for w in workers[1:]
    ]
    status, node = explain_pooled(workers[0], CALLER, others, now)
    assert (status, node) == explain_number(alone, CALLER, now)
    if now < 4000:
        fired = {s["signal"] for s in node["signals"]}
        assert {"call-rate", "fan-out", "short-calls", "snowshoe"} <= fired, fired
        assert node["traffic"]["calls_last_hour"] > 40
    status, own = explain_number(workers[0], CALLER, now)
    if now < 5000:
        assert own["score"] < node["score"], "one worker alone sees too little traffic"


def test_pooling_a_number_no_worker_has_seen() -> None:
    engine, other = ReputationEngine(rcfg()), ReputationEngine(rcfg())
    feed(other, facts("+12125550777", t=10.0), "open")  # same block, another number
    answer = pooled.decode(pooled.encode(pooled.number_traffic(other, CALLER_KEY)))
    assert answer.caller is None and answer.range is not None
    status, body = explain_pooled(engine, CALLER, [answer], 11.0)
    assert status == 200 and body["traffic"] is None
    assert body["thousands_block"]["calls_last_hour"] == 1.0
    assert explain_pooled(engine, "not-a-number", [answer], 11.0)[0] == 400


@pytest.mark.parametrize(
    "data",
    [
        b"[]",
        b'{"v": 1, "caller": null}',
        b'{"v": 1, "caller": null, "range": null, "more": 1}',
        b'{"v": 1, "caller": [1, 2], "range": null}',
        b'{"v": 1, "caller": [1,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,-1], "range": null}',
        b'{"v": 1, "caller": [1,0,0,0,0,0,0,1.5,0,0,0,0,0,0,0,0,0,0,0], "range": null}',
        # a callee bitmap wider than the table's
        b'{"v": 1, "caller": [1,0,0,0,0,0,0,%d,0,0,0,0,0,0,0,0,0,0,0], "range": null}' % (1 << 256),
    ],
)
def test_a_malformed_number_traffic_answer_is_refused(data: bytes) -> None:
    with pytest.raises(ValueError):
        pooled.decode(data)


# -- the link: a command with an argument --------------------------------------


@pytest.fixture
def runtime_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="rs-agg-"))  # short: a Unix socket path is limited
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def sibling(runtime_dir: Path, tmp_path: Path) -> AsyncIterator[Path]:
    """Worker 1 of 3 serving the real link commands (one call of CALLER
    in its engine, one in its peer statistics); worker 2 is absent."""
    cfg = make_config(
        log={"verdict_log": ""},
        subscribers={"enabled": False},
        peers=[{"name": "carrier-a", "addresses": ["198.51.100.0/24"]}],
        peer_policy={"store": str(tmp_path / "peers.sqlite3")},
    )
    worker = Worker(cfg)
    assert worker.reputation is not None and worker.peer_service is not None
    now = time.monotonic()
    worker.reputation.record(facts(CALLER, t=now, source=CARRIER))
    worker.peer_service.stats.observe(screened_call(make_core(cfg), 1, CARRIER, CALLER, now), now)
    path = runtime_dir / "metrics-1.sock"
    server = await serve_link(path, *link_commands(worker))
    yield path
    server.close()
    await server.wait_closed()
    await worker.stop()


async def test_the_link_carries_one_argument_and_refuses_anything_else(sibling: Path) -> None:
    assert (await ask(sibling, "metrics") or b"").startswith(b"# HELP")
    traffic = pooled.decode(await ask(sibling, f"explain +{CALLER_KEY}") or b"")
    assert traffic.caller is not None and traffic.caller.pairs[2][0] == 1  # one call this hour
    assert traffic.range is not None
    stats = decode_raw(await ask(sibling, "peer-stats") or b"")
    assert set(stats) == {"carrier-a"} and stats["carrier-a"][0][0][1][0] == 1.0
    for line in ("explain", "metrics now", "explain +12125550142 +2", "explain  +12125550142",
                 "EXPLAIN +12125550142", "nothing", "explain " + "9" * 65, "explain +1\tx",
                 # well-formed lines, but not an E.164 key as the first worker sends it
                 "explain 12125550142", "explain +0125550142", "explain +1212",
                 "explain +1" + "2" * 15, "explain +1212555014x"):  # fmt: skip
        assert await ask(sibling, line) == b"", line


async def test_a_sibling_that_does_not_answer_is_counted_out(
    sibling: Path, runtime_dir: Path
) -> None:
    role = WorkerRole(0, 3, "nonce", runtime_dir, RestartCounts(3))
    gathered = await gather_from_siblings(role, f"explain +{CALLER_KEY}", pooled.decode)
    assert gathered.workers() == {"answered": 2, "of": 3}
    assert len(gathered.answers) == 1 and gathered.answers[0].caller is not None
    unreadable = await gather_from_siblings(role, "metrics", pooled.decode)
    assert unreadable.workers() == {"answered": 1, "of": 3} and unreadable.answers == ()
    alone = await gather_from_siblings(None, "metrics", pooled.decode)
    assert alone.workers() == {"answered": 1, "of": 1}


# -- the proxy with two workers -----------------------------------------------

PEERS = '[[peers]]\nname = "loopback-trunk"\naddresses = ["127.0.0.0/8"]\n'
CALLS = 24
TOKEN = "workers-test-token"  # the Proxy helper's


def get_json(proxy: Proxy, path: str) -> tuple[int, Any]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{proxy.admin}{path}", headers={"Authorization": "Bearer " + TOKEN}
    )
    try:
        with urllib.request.urlopen(req, timeout=3 * ASK_TIMEOUT) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def test_two_workers_answer_peers_and_explain_for_the_node(tmp_path: Path) -> None:
    proxy = Proxy(tmp_path, extra=PEERS)
    # The workers open the peer store at once; two of them switching a new
    # file to WAL can fail one with "database is locked" (a start-up race of
    # the store, not what this test is about): the file exists beforehand.
    PeerStore(tmp_path / "var" / "peers.sqlite3")
    socks = [udp_socket() for _ in range(CALLS)]
    proxy.start()
    try:
        try:
            wait_for(lambda: proxy.samples("rs_workers_reporting").get("", 0) == 2, "two workers")
        except AssertionError:
            proxy.stop()
            assert proxy.proc is not None and proxy.proc.stderr is not None
            raise AssertionError(proxy.proc.stderr.read()[-4000:]) from None
        hour = int(time.monotonic()) // 3600
        for i, sock in enumerate(socks):  # many source ports: both workers take some
            invite(sock, proxy, CALLER, f"node-{i}", callee=f"+1312555{1000 + 97 * i:04d}")
        wait_for(
            lambda: sum(proxy.samples("rs_screening_verdicts_total").values()) == CALLS,
            "every call screened",
        )
        per_worker = proxy.samples("rs_screening_verdicts_total")
        assert set(per_worker) == {"0", "1"} and all(v > 0 for v in per_worker.values()), (
            f"one worker took every call: {per_worker}"
        )

        status, peers = get_json(proxy, "/admin/peers")
        assert status == 200 and peers["workers"] == {"answered": 2, "of": 2}
        trunk = next(p for p in peers["peers"] if p["name"] == "loopback-trunk")
        assert trunk["stats"]["5m"]["calls"] == CALLS
        status, one = get_json(proxy, "/admin/peers/loopback-trunk")
        assert status == 200 and one["stats"]["1h"]["calls"] == CALLS
        assert one["workers"] == {"answered": 2, "of": 2}

        status, body = get_json(proxy, f"/admin/reputation/{CALLER}")
        assert status == 200 and body["workers"] == {"answered": 2, "of": 2}
        last_hour = body["traffic"]["calls_last_hour"]
        if int(time.monotonic()) // 3600 == hour:  # the hour's bucket has not rolled
            assert last_hour == CALLS
        else:
            assert 0 < last_hour <= CALLS
        assert body["traffic"]["distinct_callees_last_hour"] > CALLS * 0.8
        status, bad = get_json(proxy, "/admin/reputation/not-a-number")
        assert status == 400 and "not a telephone number" in bad["error"]
    finally:
        proxy.stop()
        for sock in socks:
            sock.close()
