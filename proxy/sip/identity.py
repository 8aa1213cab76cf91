"""Lazy extraction of what screening needs from an INVITE or MESSAGE.

The caller is the network-asserted identity: the first P-Asserted-Identity,
otherwise From. The callee is the Request-URI number, otherwise To.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import SipParseError
from .grammar import split_commas
from .message import SipRequest
from .numbers import digits_of, e164_key, uri_number
from .uri import NameAddr, parse_name_addr

_ANONYMOUS_USERS = frozenset(("anonymous", "restricted", "unavailable", "unknown", "private"))


@dataclass(frozen=True, slots=True)
class CallFacts:
    method: str
    call_id: str
    source: str
    caller: str | None
    caller_key: int | None
    caller_display: str | None
    asserted: bool
    anonymous: bool
    privacy_id: bool
    callee: str | None
    callee_key: int | None
    emergency_urn: bool
    identity: str | None


def call_facts(request: SipRequest, source: str) -> CallFacts:
    caller_addr = _first_pai(request)
    asserted = caller_addr is not None
    if caller_addr is None:
        caller_addr = request.from_
    raw_caller = uri_number(caller_addr.uri)
    caller = digits_of(raw_caller) if raw_caller is not None else None
    anonymous = caller is None or caller.lower() in _ANONYMOUS_USERS
    if anonymous:
        caller = None
    privacy = request.header("privacy")
    privacy_id = privacy is not None and any(
        p.strip().lower() == "id" for p in privacy.replace(",", ";").split(";")
    )
    raw_callee = uri_number(request.uri) or uri_number(request.to.uri)
    callee = digits_of(raw_callee) if raw_callee is not None else None
    return CallFacts(
        method=request.method,
        call_id=request.call_id,
        source=source,
        caller=caller,
        caller_key=e164_key(caller) if caller else None,
        caller_display=caller_addr.display,
        asserted=asserted,
        anonymous=anonymous,
        privacy_id=privacy_id,
        callee=callee,
        callee_key=e164_key(callee) if callee else None,
        emergency_urn=request.uri.scheme == "urn" and "service:sos" in request.uri.raw.lower(),
        identity=request.header("identity"),
    )


def _first_pai(request: SipRequest) -> NameAddr | None:
    value = request.header("p-asserted-identity")
    if not value:
        return None
    try:
        return parse_name_addr(split_commas(value)[0])
    except SipParseError:
        return None  # a broken PAI is no identity; From still applies
