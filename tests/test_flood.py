"""[flood]: token buckets per source IP and per caller number (proxy.flood),
their place in the core, their metrics, and a live flood through
``robocall-shield serve`` on loopback."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from proxy.config import ConfigError, parse_config
from proxy.events import Address, Event, KernelDrop, Limited, Malformed, Replied, Send
from proxy.flood import BAN, OVER, PASS, FloodConfig, FloodGuard, TokenBuckets
from proxy.metrics import Metrics
from proxy.peers import PeerConfig
from tests.conftest import make_config, make_core
from tests.sipmsg import request, response
from tests.test_workers import Proxy, drain, ready, wait_for

STRANGER = Address("198.51.100.10", 5060, "udp")
OTHER = Address("198.51.100.77", 5060, "udp")
PEER = Address("203.0.113.5", 5060, "udp")
SWITCH = Address("192.0.2.20", 5080, "udp")


def core_with(flood: dict[str, Any], **sections: Any) -> Any:
    return make_core(make_config(flood=flood, **sections))


def sends(events: list[Event]) -> list[Send]:
    return [e for e in events if isinstance(e, Send)]


def limited(events: list[Event]) -> list[Limited]:
    return [e for e in events if isinstance(e, Limited)]


def invite(i: int, caller: str = "+12125550142", ruri: str = "") -> bytes:
    return request(
        ruri=ruri or "sip:+13125550187@192.0.2.5;user=phone",
        caller=caller,
        call_id=f"flood-{i}@198.51.100.10",
        branch=f"z9hG4bK-flood-{i}",
    )


# -- the buckets ------------------------------------------------------------


def test_a_bucket_allows_its_burst_then_refills_at_its_rate() -> None:
    buckets: TokenBuckets[str] = TokenBuckets(cap=10)
    taken = [buckets.take("a", 100.0, rate=2.0, burst=5.0) for _ in range(7)]
    assert taken == [True] * 5 + [False] * 2
    assert not buckets.take("a", 100.4, 2.0, 5.0), "0.8 of a token after 0.4 s at 2/s"
    assert buckets.take("a", 100.5, 2.0, 5.0), "one whole token after 0.5 s"
    assert not buckets.take("a", 100.5, 2.0, 5.0)
    # a long pause refills to the burst, never past it
    assert [buckets.take("a", 1000.0, 2.0, 5.0) for _ in range(6)] == [True] * 5 + [False]


def test_a_clock_stepping_back_refills_nothing() -> None:
    buckets: TokenBuckets[str] = TokenBuckets(cap=10)
    for _ in range(3):
        buckets.take("a", 50.0, 1.0, 3.0)
    assert not buckets.take("a", 40.0, 1.0, 3.0)
    assert buckets.take("a", 51.0, 1.0, 3.0)


def test_the_table_evicts_the_least_recently_seen_beyond_its_cap() -> None:
    buckets: TokenBuckets[int] = TokenBuckets(cap=100)
    for key in range(100):
        buckets.take(key, 1.0, 1.0, 1.0)
    buckets.take(0, 1.0, 1.0, 1.0)  # 0 is seen again: 1 is now the oldest
    for key in range(100, 150):
        buckets.take(key, 1.0, 1.0, 1.0)
    assert len(buckets) == 100 and buckets.evicted == 50
    assert 0 in buckets.entries and 51 in buckets.entries
    assert 1 not in buckets.entries and 50 not in buckets.entries
    # an evicted key comes back with a full bucket
    assert buckets.take(1, 1.0, 1.0, 1.0)


def test_a_source_over_its_limit_for_the_sustained_time_is_banned_once() -> None:
    cfg = FloodConfig(per_ip_rate=1.0, per_ip_burst=1, kernel_drop=True,
                      kernel_drop_after=3.0, kernel_drop_seconds=60)  # fmt: skip
    guard = FloodGuard(cfg, (), ())
    assert guard.ip("198.51.100.10", 0.0) == PASS
    verdicts = []
    for tick in range(1, 81):  # 20 datagrams a second for 4 s
        verdicts.append(guard.ip("198.51.100.10", tick * 0.05))
    assert verdicts.count(BAN) == 1
    assert 3.0 <= (verdicts.index(BAN) + 1) * 0.05 < 3.2
    assert set(verdicts) == {PASS, OVER, BAN}  # one a second still passes


def test_a_pause_ends_the_over_limit_streak() -> None:
    cfg = FloodConfig(per_ip_rate=0.01, per_ip_burst=1, kernel_drop=True, kernel_drop_after=2.0)
    guard = FloodGuard(cfg, (), ())
    guard.ip("198.51.100.10", 0.0)
    out = [guard.ip("198.51.100.10", t) for t in (0.5, 1.0, 1.5, 3.0, 4.0, 4.5)]
    assert BAN not in out, "the gap from 1.5 to 3.0 started a new streak at 3.0"
    assert guard.ip("198.51.100.10", 5.0) == BAN


def test_peers_are_never_banned_and_get_the_peer_factor() -> None:
    cfg = FloodConfig(per_ip_rate=1.0, per_ip_burst=2, peer_factor=3.0, kernel_drop=True,
                      kernel_drop_after=0.0)  # fmt: skip
    guard = FloodGuard(cfg, (PeerConfig("sbc", ("203.0.113.0/24",)),), ())
    peer = [guard.ip(PEER.host, 1.0) for _ in range(8)]
    assert peer == [PASS] * 6 + [OVER] * 2, "3 x the burst of 2"
    stranger = [guard.ip(STRANGER.host, 1.0) for _ in range(3)]
    assert stranger == [PASS, PASS, BAN]


# -- in the core ------------------------------------------------------------


def test_an_over_limit_datagram_is_dropped_before_it_is_parsed() -> None:
    core = core_with({"per_ip_rate": 1.0, "per_ip_burst": 2})
    garbage = b"OPTIONS nonsense\r\n\r\n"
    first = core.receive_datagram(garbage, STRANGER, 5.0)
    assert any(isinstance(e, Malformed) for e in first), "within the limit it is parsed"
    core.receive_datagram(garbage, STRANGER, 5.0)
    third = core.receive_datagram(garbage, STRANGER, 5.0)
    assert third == [Limited("ip", "drop")], "over the limit: no parse, so no Malformed"
    # another source is not affected, and the first one's bucket refills
    assert sends(core.receive_datagram(invite(1), OTHER, 5.0))
    assert sends(core.receive_datagram(invite(2), STRANGER, 6.0))


def test_responses_from_a_switch_and_its_requests_are_never_limited() -> None:
    core = core_with({"per_ip_rate": 1.0, "per_ip_burst": 1})
    via = ("SIP/2.0/UDP 192.0.2.5:5060;branch=z9hG4bK-x", "SIP/2.0/UDP 198.51.100.10:5060;branch=b")
    for i in range(20):
        out = core.receive_datagram(response(vias=via, call_id=f"r{i}"), SWITCH, 1.0)
        assert not limited(out) and sends(out)
        bye = request("BYE", "sip:caller@198.51.100.10:5060", to_tag="t", call_id=f"b{i}",
                      via_host="192.0.2.20:5080")  # fmt: skip
        assert not limited(core.receive_datagram(bye, SWITCH, 1.0))
    # a response from anyone else counts against its source like a request
    stranger = [core.receive_datagram(response(vias=via), STRANGER, 1.0) for _ in range(2)]
    assert not limited(stranger[0]) and limited(stranger[1]) == [Limited("ip", "drop")]


def test_action_503_answers_over_limit_requests_with_retry_after_and_never_an_ack() -> None:
    core = core_with({"per_ip_rate": 1.0, "per_ip_burst": 1, "action": "503", "retry_after": 7})
    assert sends(core.receive_datagram(invite(1), STRANGER, 1.0))
    out = core.receive_datagram(invite(2), STRANGER, 1.0)
    assert limited(out) == [Limited("ip", "503")]
    (reply,) = sends(out)
    assert reply.data.startswith(b"SIP/2.0 503 Service Unavailable\r\n")
    assert b"\r\nRetry-After: 7\r\n" in reply.data and reply.dest.host == STRANGER.host
    assert Replied(503, "INVITE") in out
    ack = request("ACK", to_tag="x", call_id="flood-2@198.51.100.10")
    assert core.receive_datagram(ack, STRANGER, 1.0) == [Limited("ip", "drop")]


def test_one_caller_number_is_limited_and_answered_503() -> None:
    core = core_with({"per_caller_rate": 1.0, "per_caller_burst": 3, "action": "503"})
    outs = [core.receive_datagram(invite(i), Address(f"198.51.100.{i}", 5060), 2.0)
            for i in range(1, 6)]  # fmt: skip
    assert [bool(limited(o)) for o in outs] == [False, False, False, True, True]
    assert limited(outs[3]) == [Limited("caller", "503")]
    (reply,) = sends(outs[3])
    assert reply.data.startswith(b"SIP/2.0 503 ") and b"\r\nRetry-After: 5\r\n" in reply.data
    # another number from the same sources goes through
    assert sends(core.receive_datagram(invite(9, caller="+12125550199"), STRANGER, 2.0))
    # and with the default action a limited call is dropped silently
    quiet = core_with({"per_caller_rate": 1.0, "per_caller_burst": 1})
    quiet.receive_datagram(invite(1), STRANGER, 2.0)
    out = quiet.receive_datagram(invite(2), OTHER, 2.0)
    assert limited(out) == [Limited("caller", "drop")] and not sends(out)


@pytest.mark.parametrize(
    "ruri", ["sip:911@192.0.2.5", "urn:service:sos.police", "sip:933@192.0.2.5;user=phone"]
)
def test_emergency_calls_are_never_limited(ruri: str) -> None:
    for action in ("drop", "503"):
        core = core_with({"per_ip_rate": 0.01, "per_ip_burst": 1, "per_caller_rate": 0.01,
                          "per_caller_burst": 1, "action": action})  # fmt: skip
        core.receive_datagram(invite(0), STRANGER, 1.0)  # spends both buckets
        for i in range(1, 6):
            out = core.receive_datagram(invite(i, ruri=ruri), STRANGER, 1.0)
            assert not limited(out) and sends(out), (action, out)
        assert limited(core.receive_datagram(invite(9), STRANGER, 1.0))


def test_a_psap_callback_is_never_limited() -> None:
    psap = "+13125550911"
    core = core_with({"per_ip_rate": 0.01, "per_ip_burst": 1, "per_caller_rate": 0.01,
                      "per_caller_burst": 1}, screening={"psap_numbers": [psap]})  # fmt: skip
    for i in range(4):
        out = core.receive_datagram(invite(i, caller=psap), STRANGER, 1.0)
        assert not limited(out) and sends(out)


def test_a_declared_peer_is_exempt_with_peer_factor_zero() -> None:
    peers = [{"name": "sbc", "addresses": ["203.0.113.0/24"]}]
    core = core_with({"per_ip_rate": 1.0, "per_ip_burst": 1, "peer_factor": 0}, peers=peers,
                     sip={"host": "192.0.2.5", "unknown_sources": "accept"})  # fmt: skip
    for i in range(10):
        assert not limited(core.receive_datagram(invite(i, caller=f"+1212555{i:04d}"), PEER, 1.0))
    core.receive_datagram(invite(20), STRANGER, 1.0)
    assert limited(core.receive_datagram(invite(21), STRANGER, 1.0))


def test_kernel_drop_is_asked_for_once_the_flood_is_sustained() -> None:
    core = core_with({"per_ip_rate": 1.0, "per_ip_burst": 1, "kernel_drop": True,
                      "kernel_drop_after": 1.0, "kernel_drop_seconds": 30})  # fmt: skip
    drops: list[KernelDrop] = []
    for tick in range(40):
        events = core.receive_datagram(b"OPTIONS x\r\n\r\n", STRANGER, tick * 0.05)
        drops += [e for e in events if isinstance(e, KernelDrop)]
    assert drops == [KernelDrop(STRANGER.host, 30)]


def test_disabled_flood_control_limits_nothing() -> None:
    core = core_with({"enabled": False, "per_ip_rate": 0.01, "per_ip_burst": 1})
    assert core.flood is None
    for i in range(5):
        assert not limited(core.receive_datagram(invite(i), STRANGER, 1.0))


def test_metrics_count_limited_messages_and_tracked_sources() -> None:
    core = core_with({"per_ip_rate": 1.0, "per_ip_burst": 1, "kernel_drop": True,
                      "kernel_drop_after": 0.0})  # fmt: skip
    metrics = Metrics(core.pool)
    metrics.watch_flood(lambda: core.flood)
    for i in range(4):
        metrics.record(core.receive_datagram(invite(i), STRANGER, 1.0))
    metrics.record(core.receive_datagram(invite(9), OTHER, 1.0))
    value = metrics.registry.get_sample_value
    assert value("rs_flood_limited_total", {"scope": "ip", "action": "drop"}) == 3
    assert value("rs_flood_limited_total", {"scope": "caller", "action": "drop"}) == 0
    assert value("rs_flood_kernel_drops_total") == 1
    assert value("rs_flood_tracked", {"table": "ips"}) == 2
    assert value("rs_flood_tracked", {"table": "callers"}) == 1


# -- config -------------------------------------------------------------------


def test_defaults() -> None:
    cfg = parse_config({}).flood
    assert cfg.enabled and cfg.action == "drop" and not cfg.kernel_drop
    assert cfg.per_ip_rate >= 5_000 and cfg.peer_factor >= 1 and cfg.max_ips == 100_000


@pytest.mark.parametrize(
    ("data", "key", "problem"),
    [
        ({"action": "reject"}, "flood.action", "expected one of drop, 503"),
        ({"per_ip_rate": 0}, "flood.per_ip_rate", "expected a number"),
        ({"per_caller_burst": 0}, "flood.per_caller_burst", "expected an integer"),
        ({"peer_factor": -1}, "flood.peer_factor", "expected a number"),
        ({"max_ips": 10}, "flood.max_ips", "expected an integer from 100"),
        ({"kernel_drop": "yes"}, "flood.kernel_drop", "expected true or false"),
        ({"kernel_drop_seconds": 0}, "flood.kernel_drop_seconds", "expected an integer"),
        ({"per_ip": 5}, "flood.per_ip", "unknown key"),
    ],
)
def test_config_errors_name_the_key(data: dict[str, Any], key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"flood": data})
    assert err.value.key == key and problem in str(err.value)
    assert "\n" not in str(err.value)


# -- live -----------------------------------------------------------------------


@pytest.fixture
def flooded(tmp_path: Path) -> Iterator[Proxy]:
    proxy = Proxy(tmp_path, workers=1, extra="[flood]\nper_ip_rate = 20.0\nper_ip_burst = 40\n")
    process = proxy.start()
    try:
        wait_for(lambda: ready(proxy, 1), "the proxy to be ready")
        yield proxy
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_a_flood_from_one_source_is_limited_while_another_source_gets_through(
    flooded: Proxy,
) -> None:
    proxy = flooded
    # not 127.0.0.1: that is the switch's address, and switches are never limited
    flood = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    flood.bind(("127.0.0.3", 0))
    clean = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    clean.bind(("127.0.0.2", 0))  # a second source address: all of 127/8 is loopback
    try:
        host, port = flood.getsockname()
        for i in range(400):  # 10 x the burst, far faster than 20/s
            data = request(ruri=f"sip:+13125550187@127.0.0.1:{proxy.sip}", via_host=f"{host}:{port}",
                           caller=f"+1212555{i:04d}", call_id=f"flood-{i}@test",
                           branch=f"z9hG4bK-flood-{i}")  # fmt: skip
            flood.sendto(data, ("127.0.0.1", proxy.sip))
        for i in range(5):
            data = request(ruri=f"sip:+13125550187@127.0.0.1:{proxy.sip}",
                           via_host=f"127.0.0.2:{clean.getsockname()[1]}",
                           caller=f"+1312555{i:04d}", call_id=f"clean-{i}@test",
                           branch=f"z9hG4bK-clean-{i}")  # fmt: skip
            clean.sendto(data, ("127.0.0.1", proxy.sip))
        at_switch = drain(proxy.switch, 5.0)
        call_ids = [
            line for m in at_switch for line in m.split(b"\r\n") if line.startswith(b"Call-ID")
        ]
        flooded_through = sum(b"flood-" in c for c in call_ids)
        assert sum(b"clean-" in c for c in call_ids) == 5, (
            "the second source's calls all got through"
        )
        assert 40 <= flooded_through < 100, (
            f"{flooded_through} of 400 flood INVITEs reached the switch"
        )
        dropped = proxy.samples("rs_flood_limited_total")[""]
        assert dropped == 400 - flooded_through
        assert proxy.samples("rs_flood_tracked")[""] >= 2
    finally:
        flood.close()
        clean.close()
