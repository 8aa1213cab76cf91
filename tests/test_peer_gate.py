"""Who may send requests: the declared [[peers]] and the switches; other
sources get 403 or silence, as [sip] unknown_sources says."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.config import parse_config
from proxy.events import Address, Dropped, Event, Replied, Send
from tests.conftest import make_config, make_core
from tests.sipmsg import request

PEER = Address("198.51.100.10", 5060, "udp")
STRANGER = Address("203.0.113.7", 5060, "udp")
SWITCH = Address("192.0.2.20", 5080, "udp")
PEERS = [{"name": "carrier-a", "addresses": ["198.51.100.0/28"], "transport": "udp"}]


def core_with(**sip: Any) -> Any:
    return make_core(make_config(peers=PEERS, sip={"host": "192.0.2.5", "port": 5060, **sip}))


def sends(events: list[Event]) -> list[Send]:
    return [e for e in events if isinstance(e, Send)]


def test_a_declared_peer_is_served_and_a_stranger_gets_403() -> None:
    core = core_with()
    assert sends(core.receive_datagram(request(), PEER, 1.0))[0].dest == SWITCH
    refused = core.receive_datagram(request(call_id="x"), STRANGER, 1.0)
    assert Replied(403, "INVITE") in refused
    (answer,) = sends(refused)
    assert answer.dest.host == STRANGER.host and answer.data.startswith(b"SIP/2.0 403 ")


def test_drop_sends_nothing_at_all() -> None:
    core = core_with(unknown_sources="drop")
    events = core.receive_datagram(request(), STRANGER, 1.0)
    assert sends(events) == [] and Dropped("unknown-source", STRANGER.host) in events


def test_drop_does_not_answer_a_stranger_s_malformed_request_either() -> None:
    broken = request(call_id="m").replace(b"CSeq: 101 INVITE", b"CSeq: x INVITE")
    assert sends(core_with().receive_datagram(broken, STRANGER, 1.0)), "reject: a 400"
    events = core_with(unknown_sources="drop").receive_datagram(broken, STRANGER, 1.0)
    assert sends(events) == [] and Dropped("unknown-source", STRANGER.host) in events


def test_drop_costs_a_stranger_s_request_no_parse_but_responses_are_parsed() -> None:
    core = core_with(unknown_sources="drop")
    garbage = b"INVITE \x00\xff not SIP at all"
    assert core.receive_datagram(garbage, STRANGER, 1.0) == [
        Dropped("unknown-source", STRANGER.host)
    ], "dropped before the parser could call it malformed"
    stray = b"SIP/2.0 200 OK\r\nbroken\r\n\r\n"
    assert Dropped("unknown-source", STRANGER.host) not in core.receive_datagram(
        stray, STRANGER, 1.0
    ), "a response is not a request: it goes through the parser (and its checks)"


def test_an_ack_from_a_stranger_is_never_answered() -> None:
    events = core_with().receive_datagram(request("ACK", to_tag="t"), STRANGER, 1.0)
    assert sends(events) == []


def test_the_switch_is_trusted_separately() -> None:
    """A BYE from the callee's side comes from the switch, not from a peer."""
    bye = request(
        "BYE",
        ruri="sip:caller@198.51.100.10:5060",
        to_tag="t",
        via_host="192.0.2.20:5080",
        call_id="up",
        cseq=2,
    )
    out = sends(core_with().receive_datagram(bye, SWITCH, 1.0))
    assert out and out[0].dest.host == "198.51.100.10"


def test_a_peer_over_a_transport_it_is_not_declared_for_is_a_stranger() -> None:
    over_tcp = Address(PEER.host, 40000, "tcp")
    events = core_with().receive_datagram(request(transport="TCP"), over_tcp, 1.0)
    assert Replied(403, "INVITE") in events


def test_without_peers_every_source_is_accepted() -> None:
    core = make_core(make_config())
    assert sends(core.receive_datagram(request(), STRANGER, 1.0))[0].dest == SWITCH


def test_accept_keeps_the_peers_for_naming_only() -> None:
    core = core_with(unknown_sources="accept")
    assert sends(core.receive_datagram(request(), STRANGER, 1.0))[0].dest == SWITCH


@pytest.mark.parametrize("value", ["deny", "", 3])
def test_bad_unknown_sources_is_a_config_error(value: object) -> None:
    with pytest.raises(Exception, match=r"sip\.unknown_sources"):
        parse_config({"sip": {"unknown_sources": value}})


def test_bad_peer_transport_is_a_config_error() -> None:
    bad = [{**PEERS[0], "transport": "sctp"}]
    with pytest.raises(Exception, match=r"peers\[0\]\.transport"):
        parse_config({"peers": bad})
