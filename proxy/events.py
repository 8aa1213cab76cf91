"""What the sans-I/O proxy core asks the edges to do, and what it reports."""

from __future__ import annotations

from dataclasses import dataclass

from .screening import Action, Screening
from .sip.identity import CallFacts
from .sip.message import SipRequest


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
class Received:
    """A message parsed; for metrics by kind, method and status class."""

    kind: str  # "request" or "response"
    method: str  # the request's, or the CSeq method of a response
    status: int = 0


@dataclass(frozen=True, slots=True)
class Forwarded:
    kind: str  # "request" or "response"
    method: str
    status: int = 0  # of a response


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
    elapsed: float = 0.0  # seconds the screening took, when the core has a timer
    # a retransmission of a transaction screened moments ago: answered the
    # same way again, but not counted, logged or recorded a second time
    repeat: bool = False


@dataclass(frozen=True, slots=True)
class CallOutcome:
    """What became of a screened call the switch answered or ended, for the
    per-peer answer-seizure ratio (``answered``) and mean duration
    (``duration``, at the BYE)."""

    source: str
    answered: bool | None = None
    duration: float | None = None


@dataclass(frozen=True, slots=True)
class Shed:
    """A new call refused with 503 because the worker is overloaded."""

    method: str


@dataclass(frozen=True, slots=True)
class Limited:
    """A message over its flood limit ([flood]): dropped, or answered 503."""

    scope: str  # "ip" or "caller"
    action: str  # "drop" or "503"


@dataclass(frozen=True, slots=True)
class KernelDrop:
    """Drop datagrams and segments from ``host`` in the kernel for ``seconds``."""

    host: str
    seconds: int


@dataclass(frozen=True, slots=True)
class AwaitCertificate:
    """Hold this INVITE until the certificate at ``url`` is fetched (or the
    [stir] budget runs out), then offer it to the core again."""

    url: str
    request: SipRequest
    source: Address


@dataclass(frozen=True, slots=True)
class PingAnswered:
    switch: str
    status: int


Event = (
    Send
    | Received
    | Forwarded
    | Replied
    | Dropped
    | Malformed
    | Screened
    | CallOutcome
    | Shed
    | Limited
    | KernelDrop
    | PingAnswered
    | AwaitCertificate
)
