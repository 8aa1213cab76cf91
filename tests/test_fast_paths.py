"""The fast paths must be invisible: the fast parser accepts and rejects
exactly what the reference parser does, with equal results and errors, and
relaying by splicing bytes gives the very bytes re-serialising would.

Checked on the RFC 4475 torture messages, the carrier corpus, mutations of
both (hypothesis), and whole calls through the core."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.core import StatelessProxy
from proxy.events import Address, Event, Send
from proxy.sip import SipParseError, SipRequest, SipResponse, parse_datagram
from proxy.sip.parser import parse_message, parse_strict
from proxy.transactions import RecentTransactions
from tests.conftest import make_config, make_core
from tests.sipmsg import request, response
from tests.test_conformance import all_messages, mutate

PEER = Address("198.51.100.10", 5060)
SWITCH = Address("192.0.2.20", 5080)


def _outcome(parse: Callable[[bytes], object], data: bytes) -> object:
    try:
        return ("ok", parse(data))
    except SipParseError as exc:
        return ("error", exc.status, exc.reason, exc.headers, exc.is_request)


def assert_same_parse(data: bytes) -> None:
    for datagram in (True, False):
        fast = _outcome(lambda d: parse_message(d, datagram=datagram), data)  # noqa: B023
        strict = _outcome(lambda d: parse_strict(d, datagram=datagram), data)  # noqa: B023
        assert fast == strict, data
        if fast[0] == "ok":  # equality ignores wire; a set wire must be exact
            msg = fast[1]
            assert isinstance(msg, SipRequest | SipResponse)
            if msg.wire:
                assert msg.wire == data


MESSAGES = all_messages()

HAND_MADE = [
    request(),
    request(body=b"v=0\r\n"),
    request(extra=("Subject:", "X-Trailing: a ", "X-Tab:\tb")),
    request(extra=("Max-Forwards: 069",)),
    request(extra=("Content-Length: 0",)),
    request().replace(b"Content-Length: 0", b"l: 0"),
    request().replace(b"Content-Length: 0", b"Content-Length:  0"),
    request().replace(b"SIP/2.0\r\n", b"sip/2.0\r\n", 1),
    request().replace(b"\r\nVia:", b"\nVia:", 1),
    request().replace(b"\r\nVia:", b"\rVia:", 1),
    request().replace(b"Call-ID:", b"Call ID:"),
    request() + b"trailing octets",
    response(180),
    response(200).replace(b"Content-Length: 0\r\n\r\n", b"Content-Length: 5\r\n\r\nv=0\r\n"),
    response(180, vias=("SIP/2.0/UDP a;branch=z9hG4bK1",)),
    response(180, "", vias=("SIP/2.0/UDP a;branch=z9hG4bK1",)),
    response(180, vias=("SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/UDP b;branch=z9hG4bK2",)),
    response(180, vias=("SIP/2.0/UDP a;branch=z9hG4bK1",)).replace(b"Via:", b"v:"),
    response(180, vias=("SIP/2.0/UDP a;branch=z9hG4bK1",)).replace(b"Via:", b"Via :"),
]


@pytest.mark.parametrize("data", HAND_MADE)
def test_fast_parser_agrees_on_hand_made_messages(data: bytes) -> None:
    assert_same_parse(data)


@pytest.mark.skipif(not MESSAGES, reason="shared material ../shared is absent")
def test_fast_parser_agrees_on_torture_and_corpus() -> None:
    for data in MESSAGES:
        assert_same_parse(data)


@pytest.mark.skipif(not MESSAGES, reason="shared material ../shared is absent")
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fast_parser_agrees_on_mutations(data: st.DataObject) -> None:
    original = data.draw(st.sampled_from(MESSAGES + HAND_MADE))
    assert_same_parse(mutate(data, original, rounds=6, truncate=False))


def _without_wire(core: StatelessProxy, data: bytes, source: Address) -> list[Event]:
    """What the core does with the message when it cannot splice."""
    msg = parse_datagram(data)
    assert msg is not None
    core.recent = RecentTransactions()
    return core.receive_message(dataclasses.replace(msg, wire=b""), source, 0.0)


def assert_same_relay(core: StatelessProxy, data: bytes, source: Address) -> list[Event]:
    msg = parse_datagram(data)
    assert msg is not None and msg.wire == data, "expected a message the core can splice"
    core.recent = RecentTransactions()  # each request here is new, whatever its branch
    spliced = core.receive_datagram(data, source, 0.0)
    assert spliced == _without_wire(core, data, source)
    return spliced


def _sent(events: list[Event]) -> bytes:
    return next(e.data for e in events if isinstance(e, Send))


@pytest.mark.parametrize("source", [PEER, Address("198.51.100.10", 5062, "tcp")])
def test_spliced_requests_equal_reserialised_ones(source: Address) -> None:
    core = make_core()
    for data in (
        request(),
        request(body=b"v=0\r\no=- 1 1 IN IP4 198.51.100.10\r\n"),
        request("BYE", to_tag="sw1"),
        request("ACK", to_tag="sw1"),
        request(extra=("Route: <sip:192.0.2.20:5080;lr>",)),
        request().replace(b"Max-Forwards: 70\r\n", b""),
        request().replace(
            b"Via: SIP/2.0/UDP 198.51.100.10:5060;", b"Via: SIP/2.0/UDP 198.51.100.10:5060;rport;"
        ),
        request().replace(
            b"Via: SIP/2.0/UDP 198.51.100.10:5060;", b"Via: SIP/2.0/UDP 203.0.113.9;"
        ),
    ):
        assert_same_relay(core, data, source)


def test_spliced_responses_equal_reserialised_ones() -> None:
    core = make_core()
    for data in (request(), request("BYE", to_tag="sw1")):
        forwarded = _sent(core.receive_datagram(data, PEER, 0.0))
        fwd = parse_datagram(forwarded)
        assert isinstance(fwd, SipRequest)
        vias = tuple(v for k, _, v in fwd.headers if k == "via")
        for status in (100, 180, 200, 486):
            plain = response(status, vias=vias, method=fwd.method)
            relayed = assert_same_relay(core, plain, SWITCH)
            assert forwarded.count(b"Via:") == _sent(relayed).count(b"Via:") + 1
            joined = response(status, vias=(", ".join(vias),), method=fwd.method)
            relayed = assert_same_relay(core, joined, SWITCH)
            assert _sent(relayed) == _sent(core.receive_datagram(plain, SWITCH, 0.0))
            with_body = plain.replace(
                b"Content-Length: 0\r\n\r\n", b"Content-Length: 5\r\n\r\nv=0\r\n"
            )
            assert_same_relay(core, with_body, SWITCH)


def test_labelled_and_privacy_calls_are_reserialised() -> None:
    core = make_core(make_config(screening={"label": ["+12125550142"]}))
    data = request(caller="+12125550142")
    assert parse_datagram(data) is not None
    assert core.receive_datagram(data, PEER, 0.0) == _without_wire(core, data, PEER)


def test_verdict_line_is_what_json_dumps_writes() -> None:
    import json

    from proxy.events import Screened
    from proxy.screening import Action, Screening, Verdict
    from proxy.verdict_log import format_verdict, verdict_record

    core = make_core(make_config(screening={"label": ["+12125550142"]}))
    screened = [
        e
        for data in (
            request(),
            request(caller="+12125550142"),
            request(call_id='odd "id"\\\u00e9\x01@x'),
            request(caller="anonymous"),
        )
        for e in core.receive_datagram(data, PEER, 0.0)
        if isinstance(e, Screened)
    ]
    base = screened[0]
    block = Verdict(Action.BLOCK, 100, ("blocklist", "dno"), observed=("x",))
    screened += [
        dataclasses.replace(
            base,
            screening=Screening(block, "static_block", (("obs", block),), ("broken",)),
            action=Action.BLOCK,
        ),
        dataclasses.replace(base, call=dataclasses.replace(base.call, call_id="\udcff\u2028x")),
        dataclasses.replace(
            base,
            call=dataclasses.replace(
                base.call, verified="TN-Validation-Passed", verify_reason="ok", attest="A"
            ),
        ),
        dataclasses.replace(
            base,
            call=dataclasses.replace(base.call, verified="No-TN-Validation", verify_reason=None),
        ),
    ]
    for ev in screened:
        for ts in (0, 1_790_000_000.1234567, 12.5):
            expected = json.dumps(verdict_record(ts, ev), separators=(",", ":")) + "\n"
            assert format_verdict(ts, ev) == expected
