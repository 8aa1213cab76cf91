"""Metrics groundwork: named peers, per-message and per-peer events from the
core, screening time with an injected timer, overload shedding."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest

from proxy.config import parse_config
from proxy.config_table import ConfigError
from proxy.core import StatelessProxy
from proxy.events import CallOutcome, Forwarded, Received, Replied, Screened, Shed
from proxy.metrics import Metrics, status_class
from proxy.peers import UNKNOWN, PeerDirectory, parse_peers
from proxy.server import Worker
from proxy.sip import SipRequest, parse_datagram
from tests.conftest import make_reputation_core
from tests.sipmsg import request, response
from tests.test_proxy_core import PEER, SWITCH, one_send

PEERS = [
    {"name": "carrier-a", "addresses": ["198.51.100.0/24"]},
    {"name": "gateway-x", "addresses": ["198.51.100.10", "203.0.113.0/24"]},
]


class Clock:
    """A fake perf counter: each reading advances 40 µs."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        self.t += 40e-6
        return self.t


def core_with(**sections: Any) -> tuple[StatelessProxy, Metrics]:
    core, _ = make_reputation_core(timer=Clock(), peers=PEERS, **sections)
    return core, Metrics(core.pool, peers=PeerDirectory(core.cfg.peers))


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_peers_map_addresses_to_names_most_specific_first() -> None:
    directory = PeerDirectory(parse_peers(PEERS))
    assert directory.name_of("198.51.100.10") == "gateway-x"  # the /32 beats the /24
    assert directory.name_of("198.51.100.11") == "carrier-a"
    assert directory.name_of("203.0.113.66") == "gateway-x"
    assert directory.name_of("192.0.2.1") == UNKNOWN
    assert directory.name_of("not-an-ip") == UNKNOWN
    assert directory.names == ("carrier-a", "gateway-x", UNKNOWN)


@pytest.mark.parametrize(
    ("peers", "key"),
    [
        ([{"name": "a b", "addresses": ["10.0.0.1"]}], "peers[0].name"),
        ([{"name": "unknown", "addresses": ["10.0.0.1"]}], "peers[0].name"),
        ([{"name": "a", "addresses": ["10.0.0.1"]}, {"name": "a", "addresses": ["10.0.0.2"]}],
         "peers[1].name"),
        ([{"name": "a", "addresses": []}], "peers[0].addresses"),
        ([{"name": "a", "addresses": ["10.0.0.300"]}], "peers[0].addresses[0]"),
        ([{"name": "a", "addresses": ["10.0.0.1"], "colour": "red"}], "peers[0].colour"),
    ],
)  # fmt: skip
def test_bad_peers_are_config_errors_naming_the_key(peers: list[Any], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"peers": peers})
    assert err.value.key == key


def test_a_call_through_the_core_feeds_per_peer_metrics() -> None:
    core, metrics = core_with()
    events = core.receive_datagram(request(call_id="m1"), PEER, 10.0)
    assert events[0] == Received("request", "INVITE")
    screened = next(e for e in events if isinstance(e, Screened))
    assert screened.elapsed == pytest.approx(40e-6)  # one tick of the injected timer
    forwarded = parse_datagram(one_send(events).data)
    assert isinstance(forwarded, SipRequest)
    vias = tuple(v for k, _, v in forwarded.headers if k == "via")
    answer = core.receive_datagram(response(200, vias=vias, call_id="m1"), SWITCH, 11.0)
    assert Forwarded("response", "INVITE", 200) in answer
    assert CallOutcome(PEER.host, answered=True) in answer
    bye = request("BYE", "sip:+13125550187@192.0.2.20:5080", to_tag="switch-tag",
                  call_id="m1", cseq=102, branch="z9hG4bK-bye")  # fmt: skip
    ended = core.receive_datagram(bye, PEER, 41.0)
    assert CallOutcome(PEER.host, duration=30.0) in ended
    for evs in (events, answer, ended):
        metrics.record(evs)
    peer = "gateway-x"  # 198.51.100.10 by its /32
    assert sample(metrics, "rs_peer_calls_total", peer=peer, action="pass") == 1
    assert sample(metrics, "rs_peer_attestation_total", peer=peer, level="none") == 1
    assert sample(metrics, "rs_peer_call_finals_total", peer=peer, answered="true") == 1
    assert sample(metrics, "rs_peer_answered_call_seconds_total", peer=peer) == 30.0
    assert sample(metrics, "rs_peer_answered_calls_ended_total", peer=peer) == 1
    assert sample(metrics, "rs_screening_duration_seconds_count") == 1
    assert sample(metrics, "rs_screening_duration_seconds_bucket", le="5e-05") == 1
    assert sample(
        metrics, "rs_sip_messages_received_total", kind="response", method="INVITE",
        status_class="2xx",
    ) == 1  # fmt: skip
    assert sample(
        metrics, "rs_sip_messages_sent_total", kind="request", method="BYE",
        status_class="request",
    ) == 1  # fmt: skip
    text = generate_latest(metrics.registry).decode()
    assert "12125550142" not in text and "m1" not in text  # no number or Call-ID as a label


def test_an_overloaded_core_sheds_new_calls_but_never_emergency_calls() -> None:
    core, metrics = core_with(screening={"psap_numbers": ["+13125550187"]})
    core.overloaded = True
    shed = core.receive_datagram(request(ruri="sip:+14155550100@192.0.2.5"), PEER, 1.0)
    assert Shed("INVITE") in shed and Replied(503, "INVITE") in shed
    sent = parse_datagram(one_send(shed).data)
    assert sent is not None and sent.header("retry-after") == "5"
    assert not any(isinstance(e, Screened) for e in shed)  # no screening work when shedding
    sos = core.receive_datagram(request(ruri="urn:service:sos", call_id="sos"), PEER, 1.0)
    assert one_send(sos).dest == SWITCH
    psap = core.receive_datagram(request(call_id="psap"), PEER, 1.0)  # to a PSAP number
    assert one_send(psap).dest == SWITCH
    in_dialog = core.receive_datagram(request("BYE", to_tag="x", call_id="d"), PEER, 1.0)
    assert one_send(in_dialog).dest == SWITCH  # calls in progress go on
    metrics.record(shed)
    assert sample(metrics, "rs_sip_shed_total", method="INVITE") == 1
    core.overloaded = False
    assert one_send(core.receive_datagram(request(call_id="n"), PEER, 2.0)).dest == SWITCH


def test_status_class() -> None:
    assert [status_class(s) for s in (0, 100, 183, 200, 486, 503, 603)] == [
        "request", "1xx", "1xx", "2xx", "4xx", "5xx", "6xx",
    ]  # fmt: skip


def test_overload_lag_is_configurable() -> None:
    assert parse_config({}).sip.overload_lag == 0.25
    assert parse_config({"sip": {"overload_lag": 0}}).sip.overload_lag == 0.0
    with pytest.raises(ConfigError, match=r"sip\.overload_lag"):
        parse_config({"sip": {"overload_lag": -1}})


async def test_the_worker_measures_transit_and_loop_lag_and_sheds_when_lagging(
    tmp_path: Path,
) -> None:
    from tests.test_server import free_port, open_peer

    switch, switch_port = await open_peer()
    caller, caller_port = await open_peer()
    sip_port = free_port()
    cfg = parse_config(
        {
            "sip": {"host": "127.0.0.1", "port": sip_port, "overload_lag": 0.05},
            "switches": [{"name": "sw", "host": "127.0.0.1", "port": switch_port}],
            "routing": {"health_checks": False},
            "admin": {"enabled": False},
            "log": {"verdict_log": ""},
            "subscribers": {"data_dir": str(tmp_path)},
        }
    )
    worker = Worker(cfg)
    await worker.start()
    try:
        assert caller.transport is not None
        ruri = f"sip:+13125550187@127.0.0.1:{sip_port}"  # to us: the switch shares 127.0.0.1
        invite = request(ruri=ruri, via_host=f"127.0.0.1:{caller_port}", call_id="w1")
        caller.transport.sendto(invite, ("127.0.0.1", sip_port))
        await switch.get()
        m = worker.metrics
        assert sample(m, "rs_sip_transit_seconds_count") == 1
        time.sleep(0.3)  # block the event loop: the lag probe must notice
        await asyncio.sleep(0.15)
        assert worker.core.overloaded and sample(m, "rs_overloaded") == 1
        again = request(ruri=ruri, via_host=f"127.0.0.1:{caller_port}", call_id="w2")
        caller.transport.sendto(again, ("127.0.0.1", sip_port))
        data, _ = await caller.get()
        assert data.startswith(b"SIP/2.0 503 ")
        for _ in range(30):  # the lag is gone: shedding stops
            await asyncio.sleep(0.1)
            if not worker.core.overloaded:
                break
        assert not worker.core.overloaded and sample(m, "rs_overloaded") == 0
        await asyncio.sleep(1.1)
        assert sample(m, "rs_event_loop_lag_seconds") < 0.05  # the worst of the last second
        assert sample(m, "rs_sip_shed_total", method="INVITE") == 1
    finally:
        await worker.stop()
        for p in (switch, caller):
            assert p.transport is not None
            p.transport.close()
