"""Lazy extraction of what screening needs from an INVITE or MESSAGE.

The caller is the network-asserted identity: the first P-Asserted-Identity,
otherwise From. The callee is the Request-URI number, otherwise To.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from .errors import SipParseError
from .grammar import split_commas
from .message import SipRequest
from .numbers import digits_of, e164_key, uri_number
from .uri import NameAddr, Uri, parse_name_addr

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
    received: float = 0.0  # the `now` the INVITE arrived at; screening's clock
    verstat: str | None = None  # TS 24.229 verification result an upstream put on the caller
    attest: str | None = None  # the PASSporT attest claim (A/B/C); verified if `verified` passed
    verified: str | None = None  # our own STIR verification's verstat value, when [stir] is on
    verify_reason: str | None = None  # why (ok, bad-signature, cert-unavailable, ...)


def call_facts(request: SipRequest, source: str, now: float = 0.0) -> CallFacts:
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
    identity = request.header("identity")
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
        identity=identity,
        received=now,
        verstat=_verstat(caller_addr.uri),
        attest=attest_claim(identity) if identity else None,
    )


def _first_pai(request: SipRequest) -> NameAddr | None:
    value = request.header("p-asserted-identity")
    if not value:
        return None
    try:
        return parse_name_addr(split_commas(value)[0])
    except SipParseError:
        return None  # a broken PAI is no identity; From still applies


def _verstat(uri: Uri) -> str | None:
    """verstat as a URI parameter, or as a user parameter inside the user
    part (``sip:+1...;verstat=...@host``): carriers place it either way."""
    value = uri.params.get("verstat")
    if value:
        return value
    user = uri.user
    if user and ";" in user:
        for param in user.split(";")[1:]:
            name, _, val = param.partition("=")
            if name.strip().lower() == "verstat" and val:
                return val.strip()
    return None


_ATTEST = re.compile(rb'"attest"\s*:\s*"([ABC])"')


def attest_claim(identity: str) -> str | None:
    """The ``attest`` claim of the first PASSporT, read without verifying:
    a claim may lower trust but never raise it until it is verified. The
    compact form carries no payload, so no claim."""
    parts = identity.split(",", 1)[0].split(";", 1)[0].strip().split(".")
    if len(parts) != 3 or not parts[1] or len(parts[1]) > 4096:
        return None
    payload = parts[1]
    try:
        raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    except (binascii.Error, ValueError):
        return None
    m = _ATTEST.search(raw)
    return m.group(1).decode() if m else None
