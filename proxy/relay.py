"""Relaying by bytes, for messages whose bytes are exactly their
serialisation (``wire``): a response without our top Via, a request with our
Via inserted and Max-Forwards edited in place. Each gives the very bytes
re-serialising would, which the differential tests check; messages that are
not so exact take the re-serialising path (``relay_response`` and
``reserialize_request``). Also where a response goes next (``next_hop``)."""

from __future__ import annotations

from operator import itemgetter

from .addressing import TRANSPORTS, usable_ip
from .events import Address, Dropped
from .screening import Verdict
from .sip import SipRequest, SipResponse, relabel_address, serialize, serialize_request
from .sip.builder import encode, replace_first_value
from .sip.grammar import is_digits, split_commas
from .sip.via import Via
from .stir.verstat import with_verstat

# (verdict header key, verdict header name, label text): how a request is labelled
LabelStyle = tuple[str, str, str]


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


def reserialize_request(
    req: SipRequest,
    out: list[tuple[str, str]],
    top_via: str | None,
    popped: int,
    label: Verdict | None,
    strip_pai: bool,
    verstat: str | None,
    style: LabelStyle,
) -> bytes:
    """The request forwarded header by header after ``out`` (our Via, any
    Record-Route): top Via rewritten, Max-Forwards decremented, ``popped``
    Route values of ours removed, a peer's forged verdict header dropped,
    the caller labelled and given its verstat, PAI stripped for privacy."""
    verdict_key, verdict_header, label_text = style
    first_via = True
    mf_seen = False
    for key, name, value in req.headers:
        if key == "via" and first_via:
            first_via = False
            if top_via is not None:
                value = replace_first_value(value, top_via)
        elif key == "max-forwards":
            mf_seen = True
            value = str((req.max_forwards or 1) - 1)
        elif key == "route" and popped:
            parts = split_commas(value)
            taken = min(popped, len(parts))
            popped -= taken
            if taken == len(parts):
                continue
            value = ", ".join(parts[taken:])
        elif key == "content-length" or key == verdict_key:
            continue  # recomputed; and a peer must not forge our verdict
        elif key == "p-asserted-identity":
            if strip_pai:
                continue
            if label is not None or verstat is not None:
                value = ", ".join(
                    _caller_value(p, label, verstat, label_text) for p in split_commas(value)
                )
        elif key == "from" and (label is not None or verstat is not None):
            has_pai = req.header("p-asserted-identity") is not None
            value = _caller_value(value, label, None if has_pai else verstat, label_text)
        out.append((name, value))
    if not mf_seen:
        out.append(("Max-Forwards", "70"))
    if label is not None:
        reasons = ",".join(label.reasons)
        out.append((verdict_header, f"label; score={label.score}; reasons={reasons}"))
    return serialize_request(req.method, req.uri.raw, out, req.body)


def _caller_value(value: str, label: Verdict | None, verstat: str | None, text: str) -> str:
    """A From or P-Asserted-Identity value with the label and verstat."""
    if label is not None:
        value = relabel_address(value, text)
    return with_verstat(value, verstat) if verstat is not None else value


def privacy_requested(req: SipRequest) -> bool:
    """Privacy: id (or user, header): an untrusted next hop must not see PAI."""
    values = ";".join(req.header_values("privacy")).lower().split(";")
    return any(v.strip() in ("id", "user", "header") for v in values)


def next_hop(via: Via) -> Address | Dropped:
    """Where a response goes after we pop our Via: the next Via's received
    and rport (RFC 3581) over its transport, if that is an address we may use."""
    host = via.params.get("received") or via.host
    rport = via.params.get("rport")
    port = via.port or 5060
    if rport:
        if not (is_digits(rport) and len(rport) <= 5 and 0 < int(rport) < 65536):
            return Dropped("bad-next-hop", f"rport={rport[:10]}")
        port = int(rport)
    transport = via.transport.lower()
    if transport not in TRANSPORTS:
        return Dropped("unsupported-transport", transport)
    if not usable_ip(host):
        return Dropped("bad-next-hop", host)
    return Address(host.strip("[]"), port, transport)
