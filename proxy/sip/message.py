"""Parsed SIP messages: frozen, slotted, with lazy access to the headers.

Only the fields every proxy decision needs are parsed eagerly (Via, From, To,
Call-ID, CSeq, Max-Forwards, Content-Length); everything else stays a raw
string until somebody asks for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .grammar import split_commas
from .uri import NameAddr, Uri
from .via import Via

# (canonical lower-case name, name as received, unfolded value)
Header = tuple[str, str, str]

COMPACT_FORMS = {
    "i": "call-id",
    "m": "contact",
    "e": "content-encoding",
    "l": "content-length",
    "c": "content-type",
    "f": "from",
    "s": "subject",
    "k": "supported",
    "t": "to",
    "v": "via",
    "o": "event",
    "r": "refer-to",
    "b": "referred-by",
    "u": "allow-events",
    "x": "session-expires",
    "y": "identity",
    "a": "accept-contact",
    "j": "reject-contact",
    "d": "request-disposition",
    "n": "identity-info",
}

# Headers whose values are comma-separated lists (RFC 3261 §7.3.1).
LIST_HEADERS = frozenset(
    (
        "via",
        "route",
        "record-route",
        "contact",
        "proxy-require",
        "require",
        "supported",
        "unsupported",
        "allow",
        "p-asserted-identity",
        "diversion",
        "history-info",
        "privacy",
    )
)


@dataclass(frozen=True, slots=True)
class _Common:
    headers: tuple[Header, ...]
    body: bytes
    vias: tuple[Via, ...]
    call_id: str
    cseq: int
    cseq_method: str
    from_: NameAddr
    to: NameAddr
    max_forwards: int | None

    def header(self, key: str) -> str | None:
        """First value of a header, by lower-case full name."""
        for k, _, v in self.headers:
            if k == key:
                return v
        return None

    def header_values(self, key: str) -> list[str]:
        """All values of a header, comma lists split for list-valued headers."""
        out: list[str] = []
        for k, _, v in self.headers:
            if k == key:
                if key in LIST_HEADERS:
                    out.extend(p for p in split_commas(v) if p)
                else:
                    out.append(v)
        return out


@dataclass(frozen=True, slots=True)
class SipRequest(_Common):
    method: str
    uri: Uri
    # The datagram itself when serialising the parsed fields again would give
    # back exactly these bytes (see ``parser._parse_fast``), else b"": a relay
    # may then edit the bytes in place instead of re-serialising every header.
    wire: bytes = field(default=b"", compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class SipResponse(_Common):
    status: int
    reason: str
    wire: bytes = field(default=b"", compare=False, repr=False)  # as SipRequest.wire


SipMessage = SipRequest | SipResponse
