"""Relaying by bytes, for messages whose bytes are exactly their
serialisation (``wire``): a response without our top Via, a request with our
Via inserted and Max-Forwards edited in place. Each gives the very bytes
re-serialising would, which the differential tests check; messages that are
not so exact take the re-serialising path (``relay_response`` here, and
``StatelessProxy._forward``)."""

from __future__ import annotations

from operator import itemgetter

from .sip import SipRequest, SipResponse, serialize
from .sip.builder import encode, replace_first_value
from .sip.grammar import split_commas


def relay_response(resp: SipResponse) -> bytes:
    """The response re-serialised without our (the top) Via value."""
    out: list[tuple[str, str]] = []
    first_via = True
    for key, name, value in resp.headers:
        if key == "via" and first_via:
            first_via = False
            rest = split_commas(value)[1:]
            if not rest:
                continue
            value = ", ".join(rest)
        elif key == "content-length":
            continue
        out.append((name, value))
    return serialize(f"SIP/2.0 {resp.status} {resp.reason}", out, resp.body)


def _line_start(wire: bytes, index: int) -> int:
    """Offset of the CRLF that opens header line ``index`` (0: the first
    header after the start line)."""
    at = wire.find(b"\r\n")
    for _ in range(index):
        at = wire.find(b"\r\n", at + 2)
    return at


def drop_top_via(wire: bytes, headers: tuple[tuple[str, str, str], ...]) -> bytes:
    """``relay_response`` on a message whose bytes are exactly its
    serialisation (``SipResponse.wire``): the same result, by splicing."""
    index = 0
    for key, _, _ in headers:
        if key == "via":
            break
        index += 1
    _, name, value = headers[index]
    start = _line_start(wire, index)
    end = wire.find(b"\r\n", start + 2)
    rest = split_commas(value)[1:] if "," in value else None
    if not rest:
        return wire[:start] + wire[end:]
    return wire[: start + 2] + encode(f"{name}: {', '.join(rest)}") + wire[end:]


_KEY = itemgetter(0)


def splice_request(
    req: SipRequest, first: list[tuple[str, str]], top_via: str | None, verdict_key: str
) -> bytes | None:
    """``StatelessProxy._forward`` for a request whose bytes are exactly its
    serialisation (``SipRequest.wire``), no label, PAI kept and no Route
    popped: the same bytes, made by inserting ``first`` (our Via, any
    Record-Route) after the start line and editing the top Via and
    Max-Forwards lines in place. None if a verdict header must be removed."""
    wire, headers = req.wire, req.headers
    keys = list(map(_KEY, headers))
    if verdict_key in keys:
        return None
    end = wire.find(b"\r\n\r\n")
    lines = wire[:end].split(b"\r\n")
    if top_via is not None:
        i = keys.index("via")
        _, name, value = headers[i]
        lines[i + 1] = encode(f"{name}: {replace_first_value(value, top_via)}")
    if "max-forwards" in keys:
        i = keys.index("max-forwards")
        lines[i + 1] = encode(f"{headers[i][1]}: {(req.max_forwards or 1) - 1}")
    else:  # before Content-Length, which is the last line
        lines.insert(len(lines) - 1, b"Max-Forwards: 70")
    lines[1:1] = [encode(f"{name}: {value}") for name, value in first]
    return b"\r\n".join(lines) + wire[end:]
