"""Serialising responses and forwarded requests back to bytes."""

from __future__ import annotations

from collections.abc import Iterable

from .grammar import WS, scan_quoted, split_commas
from .message import Header
from .uri import format_display_name

CRLF = "\r\n"


def encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def serialize(start_line: str, headers: Iterable[tuple[str, str]], body: bytes) -> bytes:
    """A start line and headers in order; Content-Length is always recomputed."""
    lines = [start_line]
    lines.extend(f"{name}: {value}" for name, value in headers)
    lines.append(f"Content-Length: {len(body)}")
    return encode(CRLF.join(lines) + CRLF + CRLF) + body


def serialize_request(
    method: str, uri: str, headers: Iterable[tuple[str, str]], body: bytes
) -> bytes:
    return serialize(f"{method} {uri} SIP/2.0", headers, body)


def build_response(
    headers: Iterable[Header],
    status: int,
    reason: str,
    *,
    to_tag: str | None = None,
    top_via: str | None = None,
    extra: Iterable[tuple[str, str]] = (),
) -> bytes:
    """A response to the request whose lexed ``headers`` are given
    (RFC 3261 §8.2.6.2); works for requests that failed validation too.

    ``top_via`` replaces the first Via value (with ``received``/``rport``
    added); ``to_tag``, when given, is appended to To: the caller knows from
    the parsed To whether it already has one.
    """
    out: list[tuple[str, str]] = []
    via_done = top_via is None
    for key, name, value in headers:
        if key == "via":
            if not via_done:
                value = replace_first_value(value, top_via or value)
                via_done = True
            out.append((name, value))
        elif key in ("from", "call-id", "cseq"):
            out.append((name, value))
        elif key == "to":
            if to_tag is not None:
                value = f"{value};tag={to_tag}"
            out.append((name, value))
    out.extend(extra)
    return serialize(f"SIP/2.0 {status} {reason}", out, b"")


def replace_first_value(header_value: str, first: str) -> str:
    """Swap the first element of a comma-separated header value."""
    parts = split_commas(header_value)
    parts[0] = first
    return ", ".join(parts)


def relabel_address(value: str, label: str) -> str:
    """Replace (or add) the display name of a name-addr / addr-spec value."""
    text = value.strip(WS)
    display = format_display_name(label)
    if text.startswith('"'):
        rest = text[scan_quoted(text, 0) :].lstrip(WS)
        return f"{display} {rest}"
    lt = text.find("<")
    if lt >= 0:
        return f"{display} {text[lt:]}"
    semi = text.find(";")
    if semi < 0:
        return f"{display} <{text}>"
    return f"{display} <{text[:semi]}>{text[semi:]}"
