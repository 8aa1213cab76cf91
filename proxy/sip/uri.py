"""SIP, SIPS and tel URIs, and the name-addr / addr-spec forms around them."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache

from .grammar import WS, bad, is_digits, is_token, parse_params, scan_quoted, unquote

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):")
_HOST = re.compile(r"[A-Za-z0-9.\-_]+")
_IPV6 = re.compile(r"\[[0-9A-Fa-f:.]+\]")
SIP_SCHEMES = frozenset(("sip", "sips"))


@dataclass(frozen=True, slots=True)
class Uri:
    """A parsed URI. For tel: ``user`` holds the number and ``host`` is empty;
    for schemes we do not route on, only ``scheme`` and ``raw`` are set."""

    raw: str
    scheme: str
    user: str | None = None
    host: str = ""
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: str | None = None


def split_scheme(raw: str) -> tuple[str, str]:
    m = _SCHEME.match(raw)
    if m is None:
        raise bad(f"no URI scheme in {raw[:60]!r}")
    return m.group(1).lower(), raw[m.end() :]


def parse_host_port(text: str) -> tuple[str, int | None]:
    """Parse ``host [ ":" port ]``; the host is lower-cased."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or _IPV6.fullmatch(text, 0, end + 1) is None:
            raise bad(f"bad IPv6 reference {text[:60]!r}")
        host, rest = text[: end + 1], text[end + 1 :]
    else:
        colon = text.find(":")
        host, rest = (text, "") if colon < 0 else (text[:colon], text[colon:])
        if _HOST.fullmatch(host) is None:
            raise bad(f"bad host {host[:60]!r}")
    port: int | None = None
    if rest:
        digits = rest[1:]
        if (
            rest[0] != ":"
            or not is_digits(digits)
            or len(digits) > 5
            or not 0 < int(digits) < 65536
        ):
            raise bad(f"bad port in {text[:60]!r}")
        port = int(digits)
    return host.lower(), port


# The parsers below are pure, and the same values recur in every message of a
# call (From, To, Via, the Request-URI), so they are memoised. The caches are
# bounded; results are shared and must be treated as read-only.
PARSE_CACHE_SIZE = 16384


@lru_cache(maxsize=PARSE_CACHE_SIZE)
def parse_uri(raw: str, *, allow_headers: bool = True) -> Uri:
    if not raw or " " in raw or "\t" in raw:
        raise bad(f"bad URI {raw[:60]!r}")
    scheme, rest = split_scheme(raw)
    if scheme in SIP_SCHEMES:
        return _parse_sip(raw, scheme, rest, allow_headers)
    if scheme == "tel":
        semi = rest.find(";")
        number = rest if semi < 0 else rest[:semi]
        if not number:
            raise bad("empty tel: number")
        return Uri(raw, scheme, number, "", None, parse_params(rest[len(number) :]))
    return Uri(raw, scheme)


def _parse_sip(raw: str, scheme: str, rest: str, allow_headers: bool) -> Uri:
    user: str | None = None
    at = rest.find("@")
    if at >= 0:
        user, rest = rest[:at], rest[at + 1 :]
        if not user:
            raise bad("empty user part")
        colon = user.find(":")  # drop any password
        if colon >= 0:
            user = user[:colon]
    headers: str | None = None
    q = rest.find("?")
    if q >= 0:
        if not allow_headers:
            raise bad("URI headers are not allowed in a Request-URI")
        rest, headers = rest[:q], rest[q + 1 :]
    semi = rest.find(";")
    hostport, params = (rest, "") if semi < 0 else (rest[:semi], rest[semi:])
    host, port = parse_host_port(hostport)
    return Uri(raw, scheme, user, host, port, parse_params(params), headers)


@dataclass(frozen=True, slots=True)
class NameAddr:
    """From, To, P-Asserted-Identity, Contact, Route values."""

    display: str | None
    uri: Uri
    params: dict[str, str | None]

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")


@lru_cache(maxsize=PARSE_CACHE_SIZE)
def parse_name_addr(value: str) -> NameAddr:
    text = value.strip(WS)
    if not text:
        raise bad("empty address")
    display: str | None = None
    if text[0] == '"':
        end = scan_quoted(text, 0)
        display = unquote(text[:end])
        rest = text[end:].lstrip(WS)
        if not rest.startswith("<"):
            raise bad("quoted display name without <addr-spec>")
        return _bracketed(display, rest)
    lt = text.find("<")
    if lt >= 0:
        words = text[:lt].split()
        if not all(is_token(w) for w in words):
            raise bad(f"bad display name {text[:lt]!r}")
        display = " ".join(words) or None
        return _bracketed(display, text[lt:])
    # addr-spec form: everything after the first ';' are header parameters
    semi = text.find(";")
    raw_uri = (text if semi < 0 else text[:semi]).rstrip(WS)
    if any(c in raw_uri for c in ",?"):
        raise bad(f"addr-spec needs <> around {raw_uri[:60]!r}")
    return NameAddr(None, parse_uri(raw_uri), parse_params(text[len(raw_uri) :].lstrip(WS)))


def _bracketed(display: str | None, text: str) -> NameAddr:
    gt = text.find(">")
    if gt < 0:
        raise bad("missing '>' in address")
    return NameAddr(display, parse_uri(text[1:gt]), parse_params(text[gt + 1 :]))


def format_display_name(display: str) -> str:
    escaped = display.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'
