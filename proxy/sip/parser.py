"""Bytes to ``SipRequest`` / ``SipResponse``.

``parse_message`` takes exactly one framed message (see ``framing``) and
either returns it or raises ``SipParseError`` with the status a server should
answer with. No I/O, no clock.
"""

from __future__ import annotations

import re
from functools import lru_cache

from .errors import SipParseError
from .grammar import is_digits, is_token
from .limits import DEFAULT_LIMITS, Limits
from .message import COMPACT_FORMS, Header, SipMessage, SipRequest, SipResponse
from .uri import PARSE_CACHE_SIZE, NameAddr, Uri, parse_name_addr, parse_uri
from .via import Via, parse_via_header, parse_via_value

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

    The common, well-formed message takes a fast path (``_parse_fast``) that
    lexes the header section with one regular expression; anything it is not
    sure of -- folding, odd whitespace, a line it cannot read, any error --
    goes through the reference parser (``parse_strict``), so both accept and
    reject exactly the same messages, with the same errors.
    """
    if len(data) > limits.max_message_bytes:
        raise SipParseError(413, "Message Too Large")
    msg = _parse_fast(data, limits, datagram)
    if msg is None:
        return parse_strict(data, limits, datagram=datagram)
    return msg


def parse_strict(
    data: bytes, limits: Limits = DEFAULT_LIMITS, *, datagram: bool = True
) -> SipMessage:
    """The reference parser: every check in the order RFC 3261 suggests."""
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


# One header line: CRLF, a token name, the colon with its whitespace, the
# value up to the line's end, not ending in whitespace (the reference parser
# strips it, so such a line could not be spliced back as it was).
_LINE = re.compile(r"\r\n([A-Za-z0-9\-.!%*_+`'~]+)([ \t]*:[ \t]*)([^\r\n]*)(?<![ \t])(?=\r\n|\Z)")
# Header names as received -> canonical key (fast path; bounded)
_KEYS: dict[str, str] = {}


def _key_of(name: str) -> str:
    key = name.lower()
    key = COMPACT_FORMS.get(key, key)
    if len(_KEYS) < 1024:
        _KEYS[name] = key
    return key


def _parse_fast(data: bytes, limits: Limits, datagram: bool) -> SipMessage | None:
    """The message, or None when only the reference parser may decide.

    Never raises: whatever would be an error is left to ``parse_strict``,
    which raises it with the status and reason it always had."""
    end = data.find(_HEAD_END)
    if end < 0:
        return None
    text = data[:end].decode("utf-8", "surrogateescape")
    first_crlf = text.find("\r\n")
    if first_crlf < 0 or len(text) > limits.max_line_bytes:
        return None  # no header at all; or some line might be too long
    start_line = text[:first_crlf]
    if "\r" in start_line or "\n" in start_line:
        return None
    rows = _LINE.findall(text, first_crlf)
    if not rows or len(rows) > limits.max_headers:
        return None
    names, seps, values = zip(*rows, strict=True)
    # The rows are disjoint and in order; if their lengths add up to the rest
    # of the text, every line is one row: no bare CR or LF, no folding, no
    # trailing whitespace, no line without `token:`.
    if (
        len(start_line) + 2 * len(rows) + sum(map(len, names)) + sum(map(len, seps))
        + sum(map(len, values)) != len(text)
    ):  # fmt: skip
        return None
    keys_of = _KEYS
    try:
        keys = list(map(keys_of.__getitem__, names))
    except KeyError:
        keys = [keys_of.get(n) or _key_of(n) for n in names]
    headers: tuple[Header, ...] = tuple(zip(keys, names, values, strict=True))
    count = keys.count
    if (
        count("call-id") != 1
        or count("cseq") != 1
        or count("from") != 1
        or count("to") != 1
        or count("max-forwards") > 1
    ):
        return None
    first = dict(zip(keys, values, strict=True))
    n_via = count("via")
    n_length = count("content-length")
    if n_via == 0 or n_length > 1 or (n_length == 0 and not datagram):
        return None
    body_start = end + 4
    if n_length:
        length = _content_length(first["content-length"])
        if length < 0 or length > len(data) - body_start:
            return None
        body = data[body_start : body_start + length]
    else:
        body = data[body_start:]
    try:
        if n_via == 1:
            value = first["via"]
            vias = parse_via_header(value) if "," in value else [parse_via_value(value)]
        else:
            vias = []
            for key, _, value in headers:
                if key == "via":
                    vias.extend(parse_via_header(value))
        if len(vias) > MAX_VIAS:
            return None
        call_id = first["call-id"]
        cseq_text, from_text, to_text = first["cseq"], first["from"], first["to"]
        if not (call_id and cseq_text and from_text and to_text):
            return None
        cseq, cseq_method = _cseq_cached(cseq_text)
        from_ = parse_name_addr(from_text)
        to = parse_name_addr(to_text)
        max_forwards: int | None = None
        mf_text = first.get("max-forwards")
        if mf_text is not None:
            max_forwards = _MAX_FORWARDS.get(mf_text)
            if max_forwards is None:
                return None
        # Set only when serialising the parsed headers again gives back these
        # very bytes: every line `Name: value`, one Content-Length, last, that
        # frames the body exactly. Relays may then splice instead.
        canonical = (
            n_length == 1
            and keys[-1] == "content-length"
            and names[-1] == "Content-Length"
            and seps.count(": ") == len(seps)
            and len(data) == body_start + len(body)
            and values[-1] == str(len(body))
        )
        if start_line.startswith("SIP/"):
            code, reason, exact = _status_line(start_line)
            return SipResponse(
                headers, body, tuple(vias), call_id, cseq, cseq_method, from_, to,
                max_forwards, code, reason, data if canonical and exact else b"",
            )  # fmt: skip
        method, uri, exact = _request_line(start_line)
        if cseq_method != method:
            return None
        return SipRequest(
            headers, body, tuple(vias), call_id, cseq, cseq_method, from_, to,
            max_forwards, method, uri, data if canonical and exact else b"",
        )  # fmt: skip
    except SipParseError:
        return None


def _content_length(text: str) -> int:
    """-1 if not a valid Content-Length."""
    if not is_digits(text) or len(text) > 9:
        return -1
    return int(text)


# Max-Forwards values as received -> int; only the valid ones are here.
_MAX_FORWARDS = {str(n): n for n in range(256)}


@lru_cache(maxsize=1024)
def _cseq_cached(value: str) -> tuple[int, str]:
    return _cseq(value)


@lru_cache(maxsize=4096)
def _status_line(line: str) -> tuple[int, str, bool]:
    """(code, reason, whether f"SIP/2.0 {code} {reason}" is the line itself)"""
    parts = line.split(" ", 2)
    if len(parts) < 2 or parts[0].upper() != "SIP/2.0":
        raise SipParseError(400, "malformed Status-Line")
    code = parts[1]
    if len(code) != 3 or not is_digits(code) or not 100 <= int(code) <= 699:
        raise SipParseError(400, f"bad status code {code[:20]!r}")
    reason = parts[2] if len(parts) == 3 else ""
    return int(code), reason, line == f"SIP/2.0 {code} {reason}"


@lru_cache(maxsize=PARSE_CACHE_SIZE)
def _request_line(line: str) -> tuple[str, Uri, bool]:
    """(method, URI, whether f"{method} {uri} SIP/2.0" is the line itself);
    the CSeq method is checked by the caller."""
    parts = line.split(" ")
    if len(parts) != 3 or not all(parts):
        raise SipParseError(400, "malformed Request-Line")
    method, raw_uri, version = parts
    if version.upper() != "SIP/2.0" or not is_token(method):
        raise SipParseError(400, "malformed Request-Line")
    return method, parse_uri(raw_uri, allow_headers=False), version == "SIP/2.0"


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
    code, reason, _ = _status_line(start_line)
    return SipResponse(*common, max_forwards, code, reason)


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
