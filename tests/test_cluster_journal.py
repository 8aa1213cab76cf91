"""[cluster] counter sharing, sans-I/O: what one node's engine journals,
another node's engine merges, and the merged figures are the ones a single
node would have computed from all the calls."""

from __future__ import annotations

import pytest

from proxy.cluster import counters, journal
from proxy.cluster.keys import Keys
from proxy.cluster.settings import parse_cluster, redacted
from proxy.config_table import ConfigError, Table
from proxy.reputation.engine import ReputationEngine
from proxy.reputation.settings import ReputationConfig
from proxy.sip.identity import CallFacts

CALLER = "12125550100"


def facts(n: int, now: float, caller: str = CALLER) -> CallFacts:
    callee = f"1646555{n:04d}"
    return CallFacts(
        method="INVITE", call_id=f"c{caller}-{n}", source="192.0.2.1:5060", caller=caller,
        caller_key=int(caller), caller_display=None, asserted=False, anonymous=False,
        privacy_id=False, callee=callee, callee_key=int(callee), emergency_urn=False,
        identity=None, received=now,
    )  # fmt: skip


def engine(offset: float = 1_700_000_000.0) -> ReputationEngine:
    e = ReputationEngine(ReputationConfig())
    e.wall_offset = offset
    e.journal = []  # what a ClusterLink does when it attaches
    return e


def explain(e: ReputationEngine, now: float) -> tuple[int, tuple[str, ...], float]:
    a = e.assess_number(CALLER, int(CALLER), now)
    t = e.callers.get(int(CALLER))
    assert t is not None
    return a.score, a.reasons, t.distinct(now)


def test_a_campaign_split_over_two_nodes_scores_as_on_one_node() -> None:
    single, a, b = engine(), engine(), engine(1_700_000_000.0 + 0.37)  # b's monotonic clock differs
    for n in range(80):  # 80 distinct callees in 40 s
        now = 100.0 + n * 0.5
        single.record(facts(n, now))
        node = a if n % 2 else b
        node.record(facts(n, now - (0.37 if node is b else 0.0)))
    rows_a, rows_b = journal.drain(a), journal.drain(b)
    assert sum(r[2] for r in rows_a) == 40 and sum(r[2] for r in rows_b) == 40
    from_b = journal.decode(journal.encode(journal.Batch("b", 1, tuple(rows_b))))
    assert journal.apply(a, from_b.rows, 140.0) == 40
    from_a = journal.decode(journal.encode(journal.Batch("a", 1, tuple(rows_a))))
    journal.apply(b, from_a.rows, 140.0 - 0.37)
    want = explain(single, 140.0)
    assert want[0] > 0 and "fan-out" in want[1]  # the campaign is visible on one node
    for node, now in ((a, 140.0), (b, 140.0 - 0.37)):
        got = explain(node, now)
        assert got[1] == want[1]
        assert got[0] == pytest.approx(want[0], abs=2)
        assert got[2] == pytest.approx(want[2], rel=0.02)  # the same distinct callees
    t_single, t_a = single.callers.get(int(CALLER)), a.callers.get(int(CALLER))
    assert t_single is not None and t_a is not None
    assert t_a.calls(140.0)[2] == pytest.approx(t_single.calls(140.0)[2], abs=0.1)
    rng = a.ranges.get(int(CALLER) // 1000)
    assert rng is not None and rng.h_cur == 80


def test_outcomes_travel_with_the_rows() -> None:
    a, b = engine(), engine()
    for n in range(10):
        a.record(facts(n, 10.0 + n))
        a.final(f"c{CALLER}-{n}", 200 if n < 4 else 486, 10.5 + n)
    for n in range(4):
        a.ended(f"c{CALLER}-{n}", 12.0 + n)  # answered 1.5 s before: short calls
    journal.apply(b, journal.drain(a), 30.0)
    t = b.callers.get(int(CALLER))
    assert t is not None
    assert (t.fin_cur, t.ans_cur, t.end_cur, t.short_cur) == (10, 4, 4, 4)


def test_rows_older_than_the_window_are_skipped_not_misfiled() -> None:
    a, b = engine(), engine()
    a.record(facts(1, 10.0))
    rows = journal.drain(a)
    b.record(facts(2, 10.0 + 3 * 3600))  # b is hours further on
    journal.apply(b, rows, 10.0 + 3 * 3600)
    t = b.callers.get(int(CALLER))
    assert t is not None and t.h_cur == 1 and t.h_prev == 0


def test_compact_keeps_minute_and_hour_totals() -> None:
    a = engine()
    for n in range(120):
        a.record(facts(n, 5.0 + n * 0.5))  # a minute's worth, spread over seconds
    rows = journal.drain(a)
    small = journal.compact(rows)
    assert len(small) < len(rows)
    assert sum(r[2] for r in small) == 120
    fan = 0
    for r in rows:
        fan |= r[3]
    merged = 0
    for r in small:
        merged |= r[3]
    assert merged == fan


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b'{"v": 1, "from": "x", "rows": []}',  # format 1: no sequence, not applied twice-safe
        b'{"v": 3, "from": "x", "seq": 1, "rows": []}',
        b'{"v": 2, "seq": 1, "rows": []}',
        b'{"v": 2, "from": "x", "rows": []}',
        b'{"v": 2, "from": "x", "seq": 0, "rows": []}',
        b'{"v": 2, "from": "x", "seq": 1.5, "rows": []}',
        b'{"v": 2, "from": "x", "seq": 1, "rows": [[1, 2, 3]]}',
        b'{"v": 2, "from": "x", "seq": 1, "rows": [[0, 1, 1, 0, 0, 0, 0, 0]]}',
        b'{"v": 2, "from": "x", "seq": 1, "rows": [[12125550100, 1, -1, 0, 0, 0, 0, 0]]}',
        b'{"v": 2, "from": "x", "seq": 1, "rows": [[12125550100, 1, 1, 1.5, 0, 0, 0, 0]]}',
    ],
)
def test_a_bad_batch_is_refused_whole(data: bytes) -> None:
    with pytest.raises(ValueError):
        journal.decode(data)


def test_a_batch_being_sent_is_frozen_until_it_lands() -> None:
    a = engine()
    for n in range(30):
        a.record(facts(n, 5.0 + n * 3))  # seconds apart: one row each
    box = counters.Outbox("a#1")
    box.add(journal.drain(a))
    first = box.next()
    assert first is not None and first.seq == 1 and first.rows == 30
    more = [(12125550100 + k, 1_700_000_000 + k, 1, 1, 0, 0, 0, 0) for k in range(50)]
    box.add(more)
    assert box.bound(10) == 40  # only the rows outside the in-flight batch
    assert box.waiting == 40
    again = box.next()  # a retry after a timeout: the same bytes, the same sequence
    assert again is first
    box.landed(first)
    second = box.next()
    assert second is not None and second.seq == 2 and second.rows == 10
    sent = journal.decode(second.data)
    assert sent.sender == "a#1" and sent.rows == tuple(more[-10:])  # the newest kept


def test_a_receiver_applies_each_batch_of_a_sender_once() -> None:
    seen = counters.Applied(size=2)
    rows = ((12125550100, 1, 1, 1, 0, 0, 0, 0),)
    one, two = journal.Batch("a#1", 1, rows), journal.Batch("a#1", 2, rows)
    assert seen.fresh(one)
    seen.mark(one)
    assert not seen.fresh(one) and seen.fresh(two)
    seen.mark(two)
    assert not seen.fresh(one) and not seen.fresh(two)
    assert seen.fresh(journal.Batch("b#1", 1, rows))  # another sender, the same sequence
    seen.mark(journal.Batch("b#1", 1, rows))
    seen.mark(journal.Batch("c#1", 1, rows))  # the least recently heard sender goes
    assert list(seen.last) == ["b#1", "c#1"]


def test_every_key_is_hash_tagged_and_on_its_own_slot() -> None:
    keys = Keys.of("rs")
    tags = set()
    for key in keys.all():
        assert key.count("{") == 1 and key.index("{") < key.index("}")
        tags.add(key[key.index("{") + 1 : key.index("}")])
    assert len(tags) == len(keys.all()) == 4  # one stream per slot, no command needs two


def test_cluster_config_errors_are_clear_and_passwords_stay_out() -> None:
    with pytest.raises(ConfigError, match="redis_url"):
        parse_cluster(Table({"redis_url": "http://x"}, "cluster"))
    with pytest.raises(ConfigError, match=r"cluster\.node"):
        parse_cluster(Table({"node": "a b"}, "cluster"))
    with pytest.raises(ConfigError, match="sync_interval"):
        parse_cluster(Table({"sync_interval": 0}, "cluster"))
    with pytest.raises(ConfigError) as err:
        parse_cluster(Table({"redis_url": "http://u:s3cret@x"}, "cluster"))
    assert "s3cret" not in str(err.value)
    assert redacted("redis://:pw@h:6379/0") == "redis://:***@h:6379/0"
    cfg = parse_cluster(Table({"enabled": True, "node": "proxy-a"}, "cluster"))
    assert cfg.enabled and cfg.node_name == "proxy-a"


def test_a_password_in_the_url_query_is_redacted_too() -> None:
    assert redacted("redis://h/0?password=s3cret&db=1") == "redis://h/0?password=***&db=1"
    with pytest.raises(ConfigError) as err:
        parse_cluster(Table({"redis_url": "http://h/?password=s3cret"}, "cluster"))
    assert "s3cret" not in str(err.value)
