"""What every answer of the proxy core must satisfy, whatever it was fed.
Shared by tests/test_fuzz.py (Hypothesis, in CI) and the atheris harnesses."""

from __future__ import annotations

import re

from proxy.core import StatelessProxy
from proxy.events import (
    AwaitCertificate,
    CallOutcome,
    Dropped,
    Event,
    Forwarded,
    Malformed,
    PingAnswered,
    Received,
    Replied,
    Screened,
    Send,
    Shed,
)
from proxy.sip import parse_datagram

KNOWN_EVENTS = (
    Send,
    Received,
    Forwarded,
    Replied,
    Dropped,
    Malformed,
    Screened,
    CallOutcome,
    Shed,
    PingAnswered,
    AwaitCertificate,
)


def header_values(wire: bytes, names: str) -> list[str]:
    """Raw values of the header lines called ``names`` (a regex alternation)."""
    pattern = rf"^(?:{names})[ \t]*:(.*)$".encode()
    return [m.group(1).decode("latin-1") for m in re.finditer(pattern, wire, re.I | re.M)]


def check_events(core: StatelessProxy, events: list[Event], wire: bytes, source_host: str) -> None:
    """Well-formed events, and sends only where they may go: requests from a
    peer only to a switch, our own answers to the source, relayed responses
    down the Via path, requests from the switch by Route or Request-URI (the
    dialogs it has)."""
    switches = {(s.host, s.port) for s in core.cfg.switches}
    from_switch = source_host in {h for h, _ in switches}
    assert isinstance(events, list)
    assert all(isinstance(e, KNOWN_EVENTS) for e in events), events
    assert sum(isinstance(e, Received) for e in events) <= 1, events
    if any(isinstance(e, Received) for e in events):
        assert isinstance(events[0], Received), events
    sends = [e for e in events if isinstance(e, Send)]
    assert len(sends) <= 1, events  # stateless: one message out at most
    for i, ev in enumerate(events):
        if isinstance(ev, Malformed):
            assert isinstance(events[i + 1], Dropped | Send), events
        if isinstance(ev, Replied):
            assert sends and sends[0].data.startswith(f"SIP/2.0 {ev.status} ".encode()), events
        if isinstance(ev, Forwarded):
            assert sends, events
    forwarded = any(isinstance(e, Forwarded) for e in events)
    via_text = " ".join(header_values(wire, "via|v")).lower()
    for send in sends:
        dest = send.dest
        assert dest.transport in ("udp", "tcp") and 0 < dest.port < 65536, dest
        if forwarded:  # we pass on nothing we cannot read ourselves
            assert parse_datagram(send.data) is not None
        if send.data.startswith(b"SIP/2.0 "):
            assert dest.host == source_host or dest.host.lower() in via_text, (dest, wire)
            continue
        assert (dest.host, dest.port) in switches or from_switch, (dest, wire)
        if (dest.host, dest.port) not in switches:
            start_line = wire.split(b"\r\n", 1)[0].decode("latin-1")
            assert dest.host in " ".join(header_values(wire, "route")) + start_line, (dest, wire)
