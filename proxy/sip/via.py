"""Via header values (RFC 3261 §20.42) with the LWS the grammar allows."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from .errors import SipParseError
from .grammar import bad, parse_params, split_commas
from .uri import PARSE_CACHE_SIZE, parse_host_port

_SENT = re.compile(
    r"([^\s/]+)\s*/\s*([^\s/]+)\s*/\s*([^\s/;]+)\s+(\[[^\]]*\]|[^\s;:]+)(?:\s*:\s*([^\s;]*))?\s*(.*)",
    re.S,
)


@dataclass(frozen=True, slots=True)
class Via:
    transport: str
    host: str
    port: int | None
    params: dict[str, str | None]

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def sent_by(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"


@lru_cache(maxsize=PARSE_CACHE_SIZE)
def parse_via_value(text: str, *, any_version: bool = False) -> Via:
    """One via-parm. ``any_version`` accepts SIP/x.y so a 505 can be routed."""
    m = _SENT.fullmatch(text)
    if m is None:
        raise bad(f"bad Via {text[:60]!r}")
    name, version, transport, host, port, params = m.groups()
    if name.upper() != "SIP" or (version != "2.0" and not any_version):
        raise SipParseError(505, "Version Not Supported")
    hostport = host if port is None else f"{host}:{port}"
    h, p = parse_host_port(hostport)
    parsed = parse_params(params)
    branch = parsed.get("branch", "")
    if branch is None or (branch == "" and "branch" in parsed):
        raise bad("Via branch without a value")
    return Via(transport.upper(), h, p, parsed)


def parse_via_header(value: str) -> list[Via]:
    return [parse_via_value(part) for part in split_commas(value)]
