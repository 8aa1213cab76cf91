"""Bytes to ``SipRequest`` / ``SipResponse``.

``parse_message`` takes exactly one framed message (see ``framing``) and
either returns it or raises ``SipParseError`` with the status a server should
answer with. No I/O, no clock.
"""

from __future__ import annotations

import re

from .errors import SipParseError
from .grammar import is_digits, is_token
from .limits import DEFAULT_LIMITS, Limits
from .message import COMPACT_FORMS, Header, SipMessage, SipRequest, SipResponse
from .uri import NameAddr, parse_name_addr, parse_uri
from .via import Via, parse_via_header

_VERSION = re.compile(r"SIP/\d+\.\d+", re.I)
_SINGLE = ("call-id", "cseq", "from", "to", "max-forwards")
_MAX_CSEQ = 2**32 - 1
# Max-Forwards caps a path at 255 hops; more Vias than that is an attack.
MAX_VIAS = 256
_HEAD_END = b"\r\n\r\n"


def parse_message(
    data: bytes, limits: Limits = DEFAULT_LIMITS, *, datagram: bool = True
) -> SipMessage:
    """Parse one message.

    For a datagram the body is framed by Content-Length and extra octets are
    discarded; without Content-Length the body is the rest of the datagram
    (RFC 3261 §18.3). A stream message must carry Content-Length.
    """
    if len(data) > limits.max_message_bytes:
        raise SipParseError(413, "Message Too Large")
    end = data.find(_HEAD_END)
    if end < 0:
        raise SipParseError(400, "header section not terminated by an empty line")
    start_line, headers = _lex_head(data[:end], limits)
    is_request = not start_line.startswith("SIP/")
    try:
        return _build(start_line, headers, data, end + 4, datagram, is_request)
    except SipParseError as exc:
        exc.headers = headers
        exc.is_request = is_request
        raise


def _lex_head(raw: bytes, limits: Limits) -> tuple[str, tuple[Header, ...]]:
    text = raw.decode("utf-8", "surrogateescape")
    crlf = text.count("\r\n")
    if text.count("\r") != crlf or text.count("\n") != crlf:
        # a bare CR or LF would let a downstream parser see headers we never saw
        raise SipParseError(400, "bare CR or LF in the header section")
    lines = text.split("\r\n")
    if "\r\n " in text or "\r\n\t" in text:
        if lines[1][:1] in (" ", "\t"):
            raise SipParseError(400, "continuation line before the first header")
        lines = _FOLD.sub(" ", text).split("\r\n")
    if max(map(len, lines)) > limits.max_line_bytes:
        raise SipParseError(400, f"header line longer than {limits.max_line_bytes} bytes")
    start_line = lines[0]
    if not start_line:
        raise SipParseError(400, "empty start line")
    if len(lines) - 1 > limits.max_headers:
        raise SipParseError(400, f"more than {limits.max_headers} headers")
    headers: list[Header] = []
    append = headers.append
    names = _NAMES
    for i in range(1, len(lines)):
        line = lines[i]
        name, colon, value = line.partition(":")
        if not colon:
            raise SipParseError(400, f"bad header line {line[:60]!r}")
        known = names.get(name)
        if known is None:
            known = _learn_name(name)
        append((known[0], known[1], value.strip(" \t")))
    return start_line, tuple(headers)


# Header names as received -> (canonical key, clean name). Bounded, so a peer
# sending random names cannot grow it.
_NAMES: dict[str, tuple[str, str]] = {}
_FOLD = re.compile(r"\r\n[ \t]+")


def _learn_name(raw: str) -> tuple[str, str]:
    name = raw.rstrip(" \t")
    if not is_token(name):
        raise SipParseError(400, f"bad header name {raw[:60]!r}")
    key = name.lower()
    known = (COMPACT_FORMS.get(key, key), name)
    if len(_NAMES) < 1024:
        _NAMES[raw] = known
    return known


def _build(
    start_line: str,
    headers: tuple[Header, ...],
    data: bytes,
    body_start: int,
    datagram: bool,
    is_request: bool,
) -> SipMessage:
    vias: list[Via] = []
    single: dict[str, str] = {}
    lengths: list[str] = []
    for key, _, value in headers:
        if key == "via":
            vias.extend(parse_via_header(value))
        elif key in _SINGLE:
            if key in single:
                raise SipParseError(400, f"duplicate {key} header")
            single[key] = value
        elif key == "content-length":
            lengths.append(value)

    body = _body(lengths, data, body_start, datagram)
    if len(vias) > MAX_VIAS:
        raise SipParseError(400, f"more than {MAX_VIAS} Via values")
    if not vias:
        raise SipParseError(400, "missing Via")
    for key in ("call-id", "cseq", "from", "to"):
        if not single.get(key):
            raise SipParseError(400, f"missing {key} header")
    cseq, cseq_method = _cseq(single["cseq"])
    from_ = parse_name_addr(single["from"])
    to = parse_name_addr(single["to"])
    mf_text = single.get("max-forwards")
    max_forwards: int | None = None
    if mf_text is not None:
        if not is_digits(mf_text) or len(mf_text) > 10 or int(mf_text) > 255:
            raise SipParseError(400, f"bad Max-Forwards {mf_text[:20]!r}")
        max_forwards = int(mf_text)
    common = (headers, body, tuple(vias), single["call-id"], cseq, cseq_method, from_, to)

    if is_request:
        return _request(start_line, common, max_forwards)
    return _response(start_line, common, max_forwards)


def _request(
    start_line: str,
    common: tuple[tuple[Header, ...], bytes, tuple[Via, ...], str, int, str, NameAddr, NameAddr],
    max_forwards: int | None,
) -> SipRequest:
    parts = start_line.split(" ")
    if len(parts) != 3 or not all(parts):
        if len(parts) >= 2 and _VERSION.fullmatch(parts[-1]) and parts[-1] != "SIP/2.0":
            raise SipParseError(505, "Version Not Supported")
        raise SipParseError(400, "malformed Request-Line")
    method, raw_uri, version = parts
    if version.upper() != "SIP/2.0":
        if _VERSION.fullmatch(version):
            raise SipParseError(505, "Version Not Supported")
        raise SipParseError(400, "malformed SIP-Version")
    if not is_token(method):
        raise SipParseError(400, "bad method")
    uri = parse_uri(raw_uri, allow_headers=False)
    if common[5] != method:
        raise SipParseError(400, "CSeq method does not match the request method")
    return SipRequest(*common, max_forwards, method, uri)


def _response(
    start_line: str,
    common: tuple[tuple[Header, ...], bytes, tuple[Via, ...], str, int, str, NameAddr, NameAddr],
    max_forwards: int | None,
) -> SipResponse:
    parts = start_line.split(" ", 2)
    if len(parts) < 2 or parts[0].upper() != "SIP/2.0":
        raise SipParseError(400, "malformed Status-Line")
    code = parts[1]
    if len(code) != 3 or not is_digits(code) or not 100 <= int(code) <= 699:
        raise SipParseError(400, f"bad status code {code[:20]!r}")
    return SipResponse(*common, max_forwards, int(code), parts[2] if len(parts) == 3 else "")


def _cseq(value: str) -> tuple[int, str]:
    parts = value.split()
    if len(parts) != 2 or not is_digits(parts[0]) or len(parts[0]) > 10 or not is_token(parts[1]):
        raise SipParseError(400, f"bad CSeq {value[:40]!r}")
    number = int(parts[0])
    if number > _MAX_CSEQ:
        raise SipParseError(400, "CSeq number above 2**32-1")
    return number, parts[1]


def _body(lengths: list[str], data: bytes, start: int, datagram: bool) -> bytes:
    if not lengths:
        if not datagram:
            raise SipParseError(400, "stream message without Content-Length")
        return data[start:]
    if len(set(lengths)) != 1:
        raise SipParseError(400, "conflicting Content-Length headers")
    text = lengths[0]
    if not is_digits(text) or len(text) > 9:
        raise SipParseError(400, f"bad Content-Length {text[:20]!r}")
    length = int(text)
    available = len(data) - start
    if length > available:
        raise SipParseError(400, "Content-Length larger than the message body")
    return data[start : start + length]
