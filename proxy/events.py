"""What the sans-I/O proxy core asks the edges to do, and what it reports."""

from __future__ import annotations

from dataclasses import dataclass

from .screening import Action, Screening
from .sip.identity import CallFacts


@dataclass(frozen=True, slots=True)
class Address:
    host: str
    port: int
    transport: str = "udp"


@dataclass(frozen=True, slots=True)
class Send:
    """Put ``data`` on the wire to ``dest``."""

    dest: Address
    data: bytes


@dataclass(frozen=True, slots=True)
class Forwarded:
    kind: str  # "request" or "response"
    method: str


@dataclass(frozen=True, slots=True)
class Replied:
    """The proxy answered a request itself."""

    status: int
    method: str


@dataclass(frozen=True, slots=True)
class Dropped:
    """Input discarded without an answer; ``reason`` is a metric label."""

    reason: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Malformed:
    """The parser rejected input; a Replied or Dropped event follows."""

    status: int
    reason: str


@dataclass(frozen=True, slots=True)
class Screened:
    call: CallFacts
    screening: Screening
    action: Action  # what was done: the verdict, unless it was only observed


@dataclass(frozen=True, slots=True)
class PingAnswered:
    switch: str
    status: int


Event = Send | Forwarded | Replied | Dropped | Malformed | Screened | PingAnswered
