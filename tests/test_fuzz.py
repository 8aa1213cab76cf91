"""Hypothesis fuzzing beyond single messages (tests/test_conformance.py does
those): the TCP stream framer under random chunkings and garbage, and the
proxy core fed sequences of related messages (INVITE, responses, ACK, BYE,
CANCEL sharing Call-IDs and branches, from a peer, a stranger and the switch)
with its state kept across examples, as in production.

Bounded in time: the whole file runs in about 15 s."""

from __future__ import annotations

import contextlib
import itertools
import os
import re
from collections import deque

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.events import Address, Send
from proxy.sip import (
    KeepAlivePing,
    Limits,
    SipParseError,
    StreamFramer,
    StreamMessage,
)
from proxy.sip.framing import StreamEvent
from tests.conftest import make_equipped_core
from tests.fuzz.invariants import check_events, header_values
from tests.sipmsg import request, response
from tests.test_conformance import MESSAGES, mutate

# FUZZ_EXAMPLES raises the count for a long run on demand (make fuzz without atheris)
FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "250")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# -- the stream framer ------------------------------------------------------

SMALL = Limits(max_message_bytes=4096)


def _frames_alone(data: bytes) -> bool:
    try:
        return StreamFramer().feed(data) == [StreamMessage(data)]
    except SipParseError:
        return False


# Messages that frame as exactly themselves on a stream (a datagram may lack
# Content-Length, which a stream cannot do without).
STREAMABLE = [
    m
    for m in [
        request(),
        request(body=b"v=0\r\no=- 1 1 IN IP4 198.51.100.10\r\n"),
        request("BYE", to_tag="t9", cseq=102),
        response(180, "Ringing", vias=("SIP/2.0/TCP 192.0.2.5;branch=z9hG4bKx",)),
        *MESSAGES,
    ]
    if _frames_alone(m)
]
FILLER = st.sampled_from([b"", b"\r\n\r\n", b"\r\n", b"\r\n\r\n\r\n\r\n"])


def chunked(data: st.DataObject, blob: bytes) -> list[bytes]:
    """``blob`` cut at random places, as recv() might return it."""
    cuts = sorted(data.draw(st.lists(st.integers(0, len(blob)), max_size=24)))
    return [blob[a:b] for a, b in itertools.pairwise([0, *cuts, len(blob)])]


def messages_of(events: list[StreamEvent]) -> list[bytes]:
    return [e.data for e in events if isinstance(e, StreamMessage)]


@FUZZ
@given(data=st.data())
def test_framer_gives_the_same_messages_however_the_stream_is_cut(data: st.DataObject) -> None:
    picked = data.draw(st.lists(st.sampled_from(STREAMABLE), min_size=1, max_size=5))
    blob = b"".join(data.draw(FILLER) + m for m in picked) + data.draw(FILLER)
    framer = StreamFramer()
    events: list[StreamEvent] = []
    for chunk in chunked(data, blob):
        events += framer.feed(chunk)
        assert framer.buffered <= len(blob)
    assert messages_of(events) == picked
    assert not framer.partial and framer.buffered < 4  # at most CR/LF awaiting a ping's end
    assert all(isinstance(e, StreamMessage | KeepAlivePing) for e in events)


def garbage(data: st.DataObject) -> bytes:
    kind = data.draw(st.sampled_from(["random", "mutated", "huge-length", "no-end"]))
    base = data.draw(st.sampled_from(STREAMABLE))
    if kind == "random":
        return data.draw(st.binary(max_size=6000))
    if kind == "mutated":
        return mutate(data, base + data.draw(st.sampled_from(STREAMABLE)), 12, truncate=True)
    if kind == "huge-length":
        length = data.draw(st.sampled_from([b"4097", b"999999999", b"1" * 12, b"-1", b"0x10"]))
        return re.sub(rb"Content-Length: \d+", b"Content-Length: " + length, base)
    return base.replace(b"\r\n\r\n", b"\r\nX-A: b\r\n") * data.draw(st.integers(1, 60))


@FUZZ
@given(data=st.data())
def test_framer_on_garbage_only_raises_parse_errors_and_stays_bounded(
    data: st.DataObject,
) -> None:
    blob = garbage(data)
    framer = StreamFramer(SMALL)
    try:
        for chunk in chunked(data, blob):
            for event in framer.feed(chunk):
                if isinstance(event, StreamMessage):
                    assert len(event.data) <= SMALL.max_message_bytes
                    with contextlib.suppress(SipParseError):
                        framer.parse(event)
            # what it holds never exceeds one message's worth
            assert framer.buffered <= SMALL.max_message_bytes
    except SipParseError as exc:
        assert exc.status in (400, 413)


# -- the core, fed related messages -------------------------------------------

CORE, METRICS = make_equipped_core()  # its own, so no other test shares its state
PROXY_HOST, PROXY_PORT = "192.0.2.5", 5060
SWITCH = ("192.0.2.20", 5080)
PEERS = ["192.0.2.99", "192.0.2.98"]  # declared peers (192.0.2.0/24)
STRANGER = "203.0.113.7"  # not a peer: 403 or dropped
CALL_IDS = ["fz-a@198.51.100.10", "fz-b@198.51.100.10", "fz-c@x"]
BRANCHES = ["z9hG4bK-f1", "z9hG4bK-f2", "z9hG4bK-f3", "nocookie"]
CALLERS = ["+12125550142", "+13125550123", "2125550100", "anonymous", "+19005550100"]
CLOCK = itertools.count(1_800_000_000.0, 0.41)
# What the proxy sent to the switch: later responses and in-dialog requests
# from the "switch" are built from these, across examples.
SENT_TO_SWITCH: deque[bytes] = deque(maxlen=48)
SENT_BACK: deque[bytes] = deque(maxlen=48)  # requests the proxy sent towards a peer
VIA = re.compile(rb"^(?:via|v)[ \t]*:(.*)$", re.I | re.M)
STATUS = [100, 180, 183, 200, 404, 486, 487, 500, 603]


def from_peer(data: st.DataObject, host: str) -> bytes:
    method = data.draw(st.sampled_from(["INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "MESSAGE"]))
    in_dialog = method in ("BYE",) or data.draw(st.booleans())
    extra: list[str] = []
    if data.draw(st.booleans()):
        extra.append(f"Route: <sip:{PROXY_HOST}:{PROXY_PORT};lr>")
    if data.draw(st.integers(0, 5)) == 0:  # tries to be relayed elsewhere
        extra.append("Route: <sip:198.18.0.1;lr>")
    if data.draw(st.integers(0, 5)) == 0:
        extra.append(
            f"Via: SIP/2.0/UDP 10.9.8.7:5070;branch={data.draw(st.sampled_from(BRANCHES))}"
        )
    ruri = data.draw(
        st.sampled_from(
            [
                f"sip:+13125550187@{PROXY_HOST};user=phone",
                f"sip:{PROXY_HOST}:{PROXY_PORT}",
                "sip:+13125550187@198.18.0.1",
                "tel:+13125550187",
                "sip:911@192.0.2.5",
            ]
        )
    )
    return request(
        method,
        ruri,
        caller=data.draw(st.sampled_from(CALLERS)),
        to_tag="sw-tag" if in_dialog else None,
        branch=data.draw(st.sampled_from(BRANCHES)),
        via_host=f"{host}:5060" + data.draw(st.sampled_from(["", ";rport"])),
        transport=data.draw(st.sampled_from(["UDP", "TCP"])),
        max_forwards=data.draw(st.sampled_from([70, 1, 0, None])),
        call_id=data.draw(st.sampled_from(CALL_IDS)),
        cseq=data.draw(st.sampled_from([101, 102])),
        extra=tuple(extra),
    )


def pick(data: st.DataObject, history: deque[bytes]) -> bytes | None:
    """One of ``history``, drawn the same way whatever it holds (hypothesis
    wants the draws independent of state kept across examples)."""
    index = data.draw(st.integers(0, history.maxlen or 1))
    return history[index % len(history)] if history else None


def from_switch(data: st.DataObject) -> bytes:
    """A response to something we forwarded, or a request of the switch's
    own (a BYE towards the caller, through our Record-Route)."""
    sent = pick(data, SENT_TO_SWITCH)
    status = data.draw(st.sampled_from(STATUS))
    own = data.draw(st.sampled_from(["BYE", "INFO", "ACK", ""]))
    call_id = data.draw(st.sampled_from(CALL_IDS))
    target = data.draw(st.sampled_from(["198.51.100.10:5060", "198.51.100.10;transport=tcp"]))
    if sent is not None and not own:
        vias = tuple(v.strip() for v in header_values(sent, "via|v"))
        call_id = (header_values(sent, "call-id|i") or ["x"])[0].strip()
        method = sent.split(b" ", 1)[0].decode("latin-1")
        return response(status, "Whatever", vias=vias, method=method, call_id=call_id)
    return request(
        own or "BYE",
        f"sip:caller@{target}",
        to_tag="ft1",
        via_host=f"{SWITCH[0]}:{SWITCH[1]}",
        call_id=call_id,
        extra=(f"Route: <sip:{PROXY_HOST}:{PROXY_PORT};lr>",),
    )


def a_response_from_a_peer(data: st.DataObject) -> bytes | None:
    """An answer to a request the switch sent through us."""
    sent = pick(data, SENT_BACK)
    status = data.draw(st.sampled_from(STATUS))
    if sent is None:
        return None
    vias = tuple(v.strip() for v in header_values(sent, "via|v"))
    return response(status, "X", vias=vias, method="BYE")


def damage(data: st.DataObject, wire: bytes) -> bytes:
    """One message in five gets up to three random edits. Unlike mutate(),
    what is drawn never depends on the message (whose length here depends on
    state kept across examples, which hypothesis cannot replay)."""
    edit = st.tuples(st.integers(0, 4095), st.integers(0, 8), st.binary(max_size=8))
    edits = data.draw(st.lists(edit, max_size=3))
    if data.draw(st.integers(0, 4)):
        return wire
    raw = bytearray(wire)
    for pos, cut, blob in edits:
        at = pos % (len(raw) + 1)
        raw[at : at + cut] = blob  # replace, insert or delete
    return bytes(raw)


@FUZZ
@given(data=st.data())
def test_core_keeps_its_invariants_over_related_messages(data: st.DataObject) -> None:
    for _ in range(data.draw(st.integers(1, 8))):
        who = data.draw(st.sampled_from(["peer", "peer", "stranger", "switch", "peer-answer"]))
        answer = a_response_from_a_peer(data) if who == "peer-answer" else None
        if who == "switch":
            wire, source = from_switch(data), (*SWITCH, "udp")
        elif answer is not None:
            wire, source = answer, ("198.51.100.10", 5060, "udp")
        else:
            host = STRANGER if who == "stranger" else data.draw(st.sampled_from(PEERS))
            transport = data.draw(st.sampled_from(["udp", "tcp"]))
            wire, source = from_peer(data, host), (host, 5060, transport)
        wire = damage(data, wire)
        events = CORE.receive_datagram(wire, Address(*source), next(CLOCK))
        check_events(CORE, events, wire, source[0])
        METRICS.record(events)
        for ev in events:
            if isinstance(ev, Send) and not ev.data.startswith(b"SIP/2.0 "):
                switch = (ev.dest.host, ev.dest.port) == SWITCH
                (SENT_TO_SWITCH if switch else SENT_BACK).append(ev.data)
