"""The stateless proxy core (RFC 3261 §16.11) and its screening actions."""

from __future__ import annotations

from proxy.core import StatelessProxy
from proxy.events import Address, Dropped, Event, Forwarded, Received, Replied, Screened, Send
from proxy.screening import Action
from proxy.sip import SipRequest, SipResponse, parse_datagram
from tests.conftest import make_config, make_core
from tests.sipmsg import request, response

PEER = Address("198.51.100.10", 5060, "udp")
SWITCH = Address("192.0.2.20", 5080, "udp")


def sends(events: list[Event]) -> list[Send]:
    return [e for e in events if isinstance(e, Send)]


def one_send(events: list[Event]) -> Send:
    out = sends(events)
    assert len(out) == 1, events
    return out[0]


def forwarded(core: StatelessProxy, data: bytes, source: Address = PEER) -> SipRequest:
    send = one_send(core.receive_datagram(data, source, 0.0))
    assert send.dest == SWITCH
    msg = parse_datagram(send.data)
    assert isinstance(msg, SipRequest)
    return msg


def reply(core: StatelessProxy, data: bytes, source: Address = PEER) -> tuple[Send, SipResponse]:
    send = one_send(core.receive_datagram(data, source, 0.0))
    msg = parse_datagram(send.data)
    assert isinstance(msg, SipResponse)
    return send, msg


def test_clean_invite_is_forwarded_with_our_via_and_decremented_max_forwards() -> None:
    core = make_core()
    out = forwarded(core, request(body=b"v=0\r\n"))
    assert out.vias[0].host == "192.0.2.5" and out.vias[0].port == 5060
    assert out.vias[0].branch is not None and out.vias[0].branch.startswith("z9hG4bK")
    assert out.vias[1].branch == "z9hG4bK-test-1"
    assert out.max_forwards == 69
    assert out.body == b"v=0\r\n"
    assert out.header("x-robocall-verdict") is None
    assert out.from_.display == "ALICE"


def test_retransmission_gets_the_same_branch_and_cancel_matches_it() -> None:
    core = make_core()
    first = forwarded(core, request()).vias[0].branch
    again = forwarded(core, request()).vias[0].branch
    cancel = forwarded(core, request("CANCEL")).vias[0].branch
    other = forwarded(core, request(branch="z9hG4bK-test-2")).vias[0].branch
    assert first == again == cancel
    assert other != first


def test_rfc2543_peer_without_cookie_gets_a_stable_branch() -> None:
    core = make_core()
    a = forwarded(core, request(branch="old2543")).vias[0].branch
    b = forwarded(core, request(branch="old2543")).vias[0].branch
    assert a == b and a is not None and a.startswith("z9hG4bK")


def test_missing_max_forwards_is_added_as_70() -> None:
    out = forwarded(make_core(), request(max_forwards=None))
    assert out.max_forwards == 70


def test_max_forwards_zero_gets_483_and_one_is_forwarded_as_zero() -> None:
    core = make_core()
    send, resp = reply(core, request(max_forwards=0))
    assert resp.status == 483 and send.dest == PEER
    assert forwarded(core, request(max_forwards=1)).max_forwards == 0


def test_loop_back_to_us_gets_482() -> None:
    core = make_core()
    out = one_send(core.receive_datagram(request(), PEER, 0.0)).data
    # the switch sends the very request back to us
    looped = out.replace(
        b"Via: SIP/2.0/UDP 192.0.2.5",
        b"Via: SIP/2.0/UDP 192.0.2.20:5080;branch=z9hG4bKsw\r\nVia: SIP/2.0/UDP 192.0.2.5",
        1,
    )
    _, resp = reply(core, looped, SWITCH)
    assert resp.status == 482


def test_record_route_by_default_and_none_when_switched_off() -> None:
    core = make_core(make_config(sip={"host": "192.0.2.5", "port": 5060}))
    out = forwarded(core, request())
    assert out.header("record-route") == "<sip:192.0.2.5:5060;lr>"
    tcp = forwarded(core, request(transport="TCP"), Address("198.51.100.10", 40001, "tcp"))
    assert tcp.header_values("record-route") == [
        "<sip:192.0.2.5:5060;lr>",
        "<sip:192.0.2.5:5060;transport=tcp;lr>",
    ]
    off = make_core(make_config(sip={"host": "192.0.2.5", "port": 5060, "record_route": False}))
    assert forwarded(off, request()).header("record-route") is None


def test_response_is_relayed_by_popping_our_via() -> None:
    core = make_core()
    out = forwarded(core, request())
    our_via = f"SIP/2.0/UDP 192.0.2.5:5060;branch={out.vias[0].branch}"
    data = response(
        180,
        "Ringing",
        vias=(
            our_via,
            "SIP/2.0/UDP 198.51.100.10:5070;branch=z9hG4bK-test-1;received=198.51.100.11",
        ),
    )
    events = core.receive_datagram(data, SWITCH, 0.0)
    send = one_send(events)
    assert send.dest == Address("198.51.100.11", 5070, "udp")
    relayed = parse_datagram(send.data)
    assert isinstance(relayed, SipResponse) and relayed.status == 180
    assert [v.host for v in relayed.vias] == ["198.51.100.10"]
    assert Forwarded("response", "INVITE", 180) in events
    assert Received("response", "INVITE", 180) in events  # counted by method and status


def test_response_with_rport_goes_to_the_source_port() -> None:
    core = make_core()
    data = response(
        vias=(
            "SIP/2.0/UDP 192.0.2.5:5060;branch=z9hG4bKx",
            "SIP/2.0/TCP 198.51.100.10:5060;branch=z9hG4bK1;received=198.51.100.10;rport=41234",
        )
    )
    assert one_send(core.receive_datagram(data, SWITCH, 0.0)).dest == Address(
        "198.51.100.10", 41234, "tcp"
    )


def test_response_to_broadcast_or_foreign_via_is_dropped_and_counted() -> None:
    core = make_core()
    bcast = response(
        vias=(
            "SIP/2.0/UDP 192.0.2.5:5060;branch=z9hG4bKx",
            "SIP/2.0/UDP 255.255.255.255;branch=z9hG4bKy",
        )
    )
    assert core.receive_datagram(bcast, SWITCH, 0.0) == [
        Received("response", "INVITE", 200),
        Dropped("bad-next-hop", "255.255.255.255"),
    ]
    foreign = response(
        vias=(
            "SIP/2.0/UDP 203.0.113.9:5060;branch=z9hG4bKx",
            "SIP/2.0/UDP 198.51.100.10;branch=z9hG4bKy",
        )
    )
    assert core.receive_datagram(foreign, SWITCH, 0.0)[-1].reason == "response-not-ours"  # type: ignore[union-attr]


def test_options_to_the_proxy_gets_200_and_others_are_forwarded() -> None:
    core = make_core()
    send, resp = reply(core, request("OPTIONS", "sip:192.0.2.5:5060"))
    assert resp.status == 200 and resp.header("allow") is not None and send.dest == PEER
    assert resp.to.tag is not None
    forwarded(core, request("OPTIONS", "sip:+13125550187@192.0.2.5"))


def test_unsupported_proxy_require_gets_420_listing_the_tags() -> None:
    _, resp = reply(make_core(), request(extra=("Proxy-Require: foo, bar",)))
    assert resp.status == 420 and resp.header("unsupported") == "foo, bar"


def test_unknown_uri_scheme_gets_416() -> None:
    _, resp = reply(make_core(), request(ruri="nobodyknows:thing"))
    assert resp.status == 416


def test_malformed_request_with_usable_via_gets_400_else_dropped() -> None:
    core = make_core()
    bad = request().replace(b"Max-Forwards: 70", b"Max-Forwards: 700")
    send, resp = reply(core, bad)
    assert resp.status == 400 and resp.call_id == "call-1@198.51.100.10"
    assert send.dest == PEER and resp.to.tag
    no_via = request().replace(b"Via: SIP/2.0/UDP", b"Via: junk")
    events = core.receive_datagram(no_via, PEER, 0.0)
    assert not sends(events) and any(
        isinstance(e, Dropped) and e.reason == "malformed" for e in events
    )
    garbage = core.receive_datagram(b"\x00\xffgarbage\r\nno colon\r\n\r\n", PEER, 0.0)
    assert not sends(garbage) and garbage[-1].reason == "malformed"  # type: ignore[union-attr]


def test_in_dialog_requests_are_forwarded() -> None:
    core = make_core()
    for method in ("BYE", "ACK", "INFO", "UPDATE"):
        out = forwarded(core, request(method, "sip:+13125550187@192.0.2.5", to_tag="sw1"))
        assert out.method == method
    cancel = forwarded(core, request("CANCEL"))
    assert cancel.method == "CANCEL"


def test_in_dialog_request_from_a_switch_follows_route_then_request_uri() -> None:
    core = make_core()
    routed = one_send(
        core.receive_datagram(
            request(
                "BYE",
                "sip:callee@203.0.113.77:5090",
                to_tag="sw1",
                extra=("Route: <sip:192.0.2.5:5060;lr>, <sip:203.0.113.50:5062;lr>",),
            ),
            SWITCH,
            0.0,
        )
    )
    assert routed.dest == Address("203.0.113.50", 5062, "udp")
    msg = parse_datagram(routed.data)
    assert isinstance(msg, SipRequest) and msg.header_values("route") == [
        "<sip:203.0.113.50:5062;lr>"
    ]
    direct = one_send(
        core.receive_datagram(
            request(
                "BYE",
                "sip:callee@203.0.113.77:5090;transport=tcp",
                to_tag="sw1",
                extra=("Route: <sip:192.0.2.5;lr>",),
            ),
            SWITCH,
            0.0,
        )
    )
    assert direct.dest == Address("203.0.113.77", 5090, "tcp")
    assert parse_datagram(direct.data).header("route") is None  # type: ignore[union-attr]


def test_peers_reach_only_the_switches() -> None:
    core = make_core()
    # no Route: the in-dialog request goes to the switch that has the call
    bye = request("BYE", "sip:callee@203.0.113.77:5090", to_tag="sw1")
    assert one_send(core.receive_datagram(bye, PEER, 0.0)).dest == SWITCH
    # the non-2xx ACK follows its INVITE even if the Request-URI names another host
    ack = request("ACK", "sip:+13125550187@carrier.example.com", to_tag="sw1")
    assert one_send(core.receive_datagram(ack, PEER, 0.0)).dest == SWITCH
    # a Route through the switch is fine; a Route anywhere else is relaying
    via_switch = request(
        "BYE", "sip:x@203.0.113.77", to_tag="t", extra=("Route: <sip:192.0.2.20:5080;lr>",)
    )
    assert one_send(core.receive_datagram(via_switch, PEER, 0.0)).dest == SWITCH
    relay = request(
        "BYE",
        "sip:x@203.0.113.77",
        to_tag="t",
        extra=("Route: <sip:127.0.0.1:8080;transport=tcp;lr>",),
    )
    _, resp = reply(core, relay)
    assert resp.status == 403


def test_blocked_caller_gets_603_plus_and_its_ack_is_absorbed() -> None:
    core = make_core(make_config(screening={"block": ["2125550142"]}))
    events = core.receive_datagram(request(), PEER, 0.0)
    screened = [e for e in events if isinstance(e, Screened)]
    assert screened and screened[0].action is Action.BLOCK
    send, resp = reply(core, request())
    assert send.data.startswith(b"SIP/2.0 603 Network Blocked\r\n")
    assert resp.header("reason") == (
        'SIP;cause=603;text="v=analytics1;tel=+18005550100;url=https://redress.example.net/r"'
        ";location=RLN"
    )
    assert resp.to.tag
    ack = request("ACK", to_tag=resp.to.tag)
    assert core.receive_datagram(ack, PEER, 0.0) == [
        Received("request", "ACK"),
        Dropped("ack-absorbed"),
    ]
    # an ACK for somebody else's final response is forwarded, not absorbed
    assert forwarded(core, request("ACK", to_tag="switch-tag")).method == "ACK"


def test_labelled_call_carries_the_label_and_verdict_header() -> None:
    core = make_core(
        make_config(screening={"label": ["+12125550142"], "label_text": "SPAM RISK IS VERY HIGH"})
    )
    out = forwarded(
        core,
        request(
            extra=(
                'P-Asserted-Identity: "REAL NAME" <sip:+12125550142@peer.example.net>, <tel:+12125550142>',
                "X-Robocall-Verdict: pass; forged",
            )
        ),
    )
    assert out.from_.display == "SPAM RISK IS VE"  # cut to 15 characters for CNAM
    pai = out.header_values("p-asserted-identity")
    assert (
        pai[0].startswith('"SPAM RISK IS VE" <sip:+12125550142@')
        and pai[1] == '"SPAM RISK IS VE" <tel:+12125550142>'
    )
    assert out.header_values("x-robocall-verdict") == ["label; score=70; reasons=labellist"]


def test_upstream_verdict_header_is_stripped_from_clean_calls() -> None:
    out = forwarded(make_core(), request(extra=("X-Robocall-Verdict: label; score=1",)))
    assert out.header("x-robocall-verdict") is None


def test_emergency_calls_pass_untouched_even_from_blocked_callers() -> None:
    core = make_core(
        make_config(
            screening={
                "block": ["+12125550142"],
                "label": ["+13125550100"],
                "psap_numbers": ["+13125550199"],
            }
        )
    )
    for ruri in ("sip:911@192.0.2.5", "tel:933", "sip:+13125550199@192.0.2.5"):
        out = forwarded(core, request(ruri=ruri))
        assert out.from_.display == "ALICE" and out.header("x-robocall-verdict") is None
    # an emergency callback: the PSAP calls a number on the label list's callee side
    out = forwarded(core, request(caller="+13125550199"))
    assert out.header("x-robocall-verdict") is None


def test_observe_mode_records_but_passes() -> None:
    core = make_core(
        make_config(screening={"block": ["+12125550142"], "modes": {"static_block": "observe"}})
    )
    events = core.receive_datagram(request(), PEER, 0.0)
    screened = next(e for e in events if isinstance(e, Screened))
    assert screened.action is Action.PASS
    assert screened.screening.observed[0][0] == "static_block"
    assert one_send(events).dest == SWITCH


def test_failing_check_fails_open() -> None:
    core = make_core()

    class Broken:
        name = "broken"

        def check(self, call: object) -> None:
            raise RuntimeError("boom")

    from proxy.screening import Pipeline, Stage

    core.pipeline = Pipeline([Stage(Broken()), *core.pipeline.stages])
    events = core.receive_datagram(request(), PEER, 0.0)
    screened = next(e for e in events if isinstance(e, Screened))
    assert screened.screening.failed == ("broken",) and screened.action is Action.PASS
    assert one_send(events).dest == SWITCH


def test_message_is_screened_like_invite() -> None:
    core = make_core(make_config(screening={"block": ["+12125550142"]}))
    _, resp = reply(core, request("MESSAGE", body=b"win a prize"))
    assert resp.status == 603


def test_no_healthy_switch_gets_503() -> None:
    core = make_core()
    for state in core.pool.states:
        state.up = False
    _, resp = reply(core, request())
    assert resp.status == 503 and resp.header("retry-after") == "5"


def test_privacy_id_strips_pai_towards_an_untrusted_switch_only() -> None:
    untrusted = make_config(
        switches=[{"name": "x", "host": "192.0.2.20", "port": 5080, "trusted": False}]
    )
    pai = ("P-Asserted-Identity: <sip:+12125550142@peer.example.net>", "Privacy: id")
    assert forwarded(make_core(untrusted), request(extra=pai)).header("p-asserted-identity") is None
    assert forwarded(make_core(), request(extra=pai)).header("p-asserted-identity") is not None
    assert (
        forwarded(make_core(untrusted), request(extra=pai[:1])).header("p-asserted-identity")
        is not None
    )


def test_received_and_rport_are_added_to_the_top_via() -> None:
    core = make_core()
    out = forwarded(
        core, request(via_host="peer.example.net:5060"), Address("198.51.100.10", 40000, "udp")
    )
    assert out.vias[1].params["received"] == "198.51.100.10"
    assert "rport" not in out.vias[1].params
    out = forwarded(core, request(transport="TCP"), Address("198.51.100.10", 40001, "tcp"))
    assert out.vias[1].params["rport"] == "40001"
    assert out.vias[0].transport == "UDP"


def test_replies_follow_rfc3261_18_2_2() -> None:
    core = make_core()
    send, _ = reply(
        core,
        request("OPTIONS", "sip:192.0.2.5", via_host="198.51.100.10:5070"),
        Address("198.51.100.10", 33333, "udp"),
    )
    assert send.dest == Address("198.51.100.10", 5070, "udp")
    send, _ = reply(
        core,
        request("OPTIONS", "sip:192.0.2.5", via_host="198.51.100.10:5070;rport"),
        Address("198.51.100.10", 33333, "udp"),
    )
    assert send.dest == Address("198.51.100.10", 33333, "udp")


def test_health_pings_and_their_answers() -> None:
    cfg = make_config(
        routing={
            "health_checks": True,
            "ping_interval": 1.0,
            "ping_timeout": 0.5,
            "failures_before_down": 2,
            "successes_before_up": 1,
        }
    )
    core = make_core(cfg)
    state = core.pool.states[0]
    ping = one_send(core.pings(0.0))
    msg = parse_datagram(ping.data)
    assert isinstance(msg, SipRequest) and msg.method == "OPTIONS" and ping.dest == SWITCH
    assert core.pings(0.1) == []  # one outstanding ping at a time
    # no answer: two timeouts mark the switch down
    one_send(core.pings(1.0))
    one_send(core.pings(2.0))
    assert not state.up
    _, resp = reply(core, request())
    assert resp.status == 503
    ping = one_send(core.pings(3.0))
    msg = parse_datagram(ping.data)
    assert isinstance(msg, SipRequest)
    answer = response(
        200,
        vias=(f"SIP/2.0/UDP 192.0.2.5:5060;branch={msg.vias[0].branch}",),
        method="OPTIONS",
        call_id=msg.call_id,
    )
    events = core.receive_datagram(answer, SWITCH, 3.1)
    assert state.up and not sends(events)
    assert Replied in {
        type(e) for e in core.receive_datagram(request("OPTIONS", "sip:192.0.2.5"), PEER, 3.2)
    }


def test_hostile_values_never_escape_as_other_exceptions() -> None:
    core = make_core()
    cases = [
        request().replace(b"CSeq: 101", b"CSeq: " + b"0" * 5000 + b"1"),
        request().replace(b"Max-Forwards: 70", b"Max-Forwards: " + b"0" * 5000),
        request(extra=('Proxy-Require: a, "b',)),
    ]
    for data in cases:
        send = one_send(core.receive_datagram(data, PEER, 0.0))
        assert send.data.startswith(b"SIP/2.0 400 Bad Request\r\n")
    untrusted = make_core(
        make_config(switches=[{"host": "192.0.2.20", "port": 5080, "trusted": False}])
    )
    send = one_send(untrusted.receive_datagram(request(extra=('Privacy: id, "x',)), PEER, 0.0))
    assert send.data.startswith(b"SIP/2.0 400 Bad Request\r\n")
    weird_rport = response(
        vias=(
            "SIP/2.0/UDP 192.0.2.5:5060;branch=z9hG4bKx",
            "SIP/2.0/UDP 198.51.100.10;branch=z9hG4bK1;rport=\u00b2",
        )
    )
    assert core.receive_datagram(weird_rport, SWITCH, 0.0)[-1].reason == "bad-next-hop"  # type: ignore[union-attr]


def test_bare_lf_cannot_smuggle_headers() -> None:
    smuggled = request(extra=("Subject: hi\nX-Robocall-Verdict: pass",))
    events = make_core().receive_datagram(smuggled, PEER, 0.0)
    assert (
        not sends(events) and Dropped("malformed", "bare CR or LF in the header section") in events
    )


def test_ng911_urn_is_routed_to_a_switch_and_passes() -> None:
    core = make_core(make_config(screening={"block": ["+12125550142"]}))
    out = forwarded(core, request(ruri="urn:service:sos.fire"))
    assert out.uri.raw == "urn:service:sos.fire" and out.header("x-robocall-verdict") is None


def test_to_tag_inside_the_uri_is_not_a_header_tag() -> None:
    core = make_core(make_config(screening={"block": ["+12125550142"]}))
    data = request().replace(
        b"To: <sip:+13125550187@192.0.2.5;user=phone>", b"To: <sip:x@192.0.2.5;tag=inuri>"
    )
    _, resp = reply(core, data)
    assert resp.status == 603 and resp.to.tag not in (None, "inuri")
