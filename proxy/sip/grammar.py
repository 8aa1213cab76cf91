"""Low-level RFC 3261 lexical helpers shared by the header parsers.

They work on unfolded header values (str, decoded with surrogateescape so the
original bytes round-trip) and raise ``SipParseError(400)`` on bad syntax.
"""

from __future__ import annotations

import re

from .errors import SipParseError

WS = " \t"
_TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")


def is_token(text: str) -> bool:
    return _TOKEN.fullmatch(text) is not None


def is_digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def bad(reason: str) -> SipParseError:
    return SipParseError(400, reason)


def scan_quoted(text: str, start: int) -> int:
    """Return the index just past the quoted-string opening at ``start``."""
    m = _QUOTED_REST.match(text, start + 1)
    if m is None:
        raise bad("unterminated quoted string")
    return m.end()


_QUOTED_REST = re.compile(r'(?:[^"\\]|\\.)*"', re.S)
_LIST_SPECIAL = re.compile(r'[",<>]')


def unquote(quoted: str) -> str:
    inner = quoted[1:-1]
    if "\\" not in inner:
        return inner
    out: list[str] = []
    i = 0
    while i < len(inner):
        c = inner[i]
        if c == "\\" and i + 1 < len(inner):
            out.append(inner[i + 1])
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def split_commas(value: str) -> list[str]:
    """Split a multi-value header on commas outside quotes and angle brackets."""
    if "," not in value:
        return [value.strip(WS)]
    if '"' not in value and "<" not in value:
        return [p.strip(WS) for p in value.split(",")]
    parts: list[str] = []
    depth = 0
    start = 0
    pos = 0
    while (m := _LIST_SPECIAL.search(value, pos)) is not None:
        c, i = m.group(), m.start()
        pos = i + 1
        if c == '"':
            pos = scan_quoted(value, i)
        elif c == "<":
            depth += 1
        elif c == ">":
            depth = max(0, depth - 1)
        elif depth == 0:
            parts.append(value[start:i].strip(WS))
            start = pos
    parts.append(value[start:].strip(WS))
    return parts


def parse_params(text: str) -> dict[str, str | None]:
    """Parse ``*( SEMI generic-param )``; names are lower-cased.

    Empty parameters (``;;``) and a missing name are errors (RFC 4475
    badinv01).
    """
    params: dict[str, str | None] = {}
    text = text.strip(WS)
    if not text:
        return params
    if text[0] != ";":
        raise bad(f"unexpected text before parameters: {text[:40]!r}")
    if '"' not in text:  # the common case: no quoted values, split directly
        for part in text[1:].split(";"):
            name, eq, raw = part.partition("=")
            name = name.strip(WS)
            if not is_token(name):
                raise bad(f"bad parameter name {name!r}")
            if eq:
                raw = raw.strip(WS)
                if not raw or " " in raw or "\t" in raw:
                    raise bad(f"bad value for parameter {name!r}")
                params[name.lower()] = raw
            else:
                params[name.lower()] = None
        return params
    i = 1
    n = len(text)
    while True:
        # one generic-param: token [ EQUAL gen-value ]
        j = i
        while j < n and text[j] not in ';="':
            j += 1
        name = text[i:j].strip(WS)
        if not is_token(name):
            raise bad(f"bad parameter name {name!r}")
        value: str | None = None
        if j < n and text[j] == "=":
            k = j + 1
            while k < n and text[k] in WS:
                k += 1
            if k < n and text[k] == '"':
                end = scan_quoted(text, k)
                value = text[k:end]
                tail = text[end:].lstrip(WS)
                j = n - len(tail)
            else:
                end = text.find(";", k)
                end = n if end < 0 else end
                value = text[k:end].strip(WS)
                if not value or " " in value or "\t" in value:
                    raise bad(f"bad value for parameter {name!r}")
                j = end
        params[name.lower()] = value
        if j >= n:
            return params
        if text[j] != ";":
            raise bad(f"unexpected character in parameters: {text[j]!r}")
        i = j + 1
