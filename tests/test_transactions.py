"""Retransmitted INVITEs and MESSAGEs: a stateless proxy screens and
answers each copy again, but a call is counted, logged, recorded and fed to
the per-peer figures once (proxy/transactions.py)."""

from __future__ import annotations

from prometheus_client import generate_latest

from proxy.events import Screened
from proxy.gateway.stats import PeerStats
from proxy.metrics import Metrics
from proxy.peers import PeerDirectory
from proxy.screening import Action
from proxy.sip import SipResponse, parse_datagram
from proxy.transactions import RecentTransactions
from tests.conftest import make_config, make_core
from tests.sipmsg import request
from tests.test_proxy_core import PEER, one_send

BLOCKED = "+12125550142"


def test_a_repeat_within_the_window_and_not_after() -> None:
    recent = RecentTransactions(window=40.0, capacity=1000)
    assert not recent.repeat(1, 0.0)
    assert recent.repeat(1, 0.5) and recent.repeat(1, 39.9)
    assert not recent.repeat(2, 1.0)
    # past the window the same branch is a new transaction, and the old
    # entries are gone
    assert not recent.repeat(1, 41.0)
    assert len(recent) == 2  # 2, seen at 1.0, is still inside the window at 41.0
    assert not recent.repeat(3, 200.0)
    assert len(recent) == 1


def test_the_table_is_bounded_whatever_the_rate() -> None:
    recent = RecentTransactions(window=40.0, capacity=100)
    for n in range(1000):
        assert not recent.repeat(n, 1.0)
    assert len(recent) == 100
    assert recent.repeat(999, 1.0) and not recent.repeat(0, 1.0)  # the oldest went


def test_a_retransmitted_blocked_invite_is_answered_again_but_counted_once() -> None:
    cfg = make_config(
        screening={"block": [BLOCKED]},
        peers=[{"name": "carrier-a", "addresses": ["198.51.100.0/24"]}],
    )
    core = make_core(cfg)
    metrics = Metrics(core.pool, peers=PeerDirectory(cfg.peers))
    stats = PeerStats(PeerDirectory(cfg.peers))
    data = request("INVITE", caller=BLOCKED, branch="z9hG4bK-rt-1", call_id="rt-1@h")
    copies = []
    for now in (1.0, 1.5, 2.5):  # T1, then 2*T1
        events = core.receive_datagram(data, PEER, now)
        metrics.record(events)
        for ev in events:
            stats.observe(ev, now)
        answer = parse_datagram(one_send(events).data)
        assert isinstance(answer, SipResponse) and answer.status == 603
        copies.append(next(e for e in events if isinstance(e, Screened)))
    assert [c.repeat for c in copies] == [False, True, True]
    assert all(c.action is Action.BLOCK for c in copies)
    text = generate_latest(metrics.registry).decode()
    assert 'rs_screening_verdicts_total{action="block",method="INVITE"} 1.0' in text
    assert 'rs_sip_retransmissions_total{method="INVITE"} 2.0' in text
    windows = stats.summary("carrier-a", 3.0)
    assert all(w["calls"] == 1 for w in windows.values()), windows

    # a new transaction of the same call (a new branch) is a new screening
    fresh = core.receive_datagram(
        request("INVITE", caller=BLOCKED, branch="z9hG4bK-rt-2", call_id="rt-1@h"), PEER, 3.0
    )
    assert not next(e for e in fresh if isinstance(e, Screened)).repeat
