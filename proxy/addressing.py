"""Where SIP messages go, sans-I/O: Via received/rport (RFC 3261 §18.2.1,
RFC 3581), the address a response or a request goes to, and host forms."""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from .events import Address
from .sip import Uri, Via

TRANSPORTS = frozenset(("udp", "tcp", "tls"))
CONNECTED = frozenset(("tcp", "tls"))  # a response goes back on the connection


@lru_cache(maxsize=4096)
def usable_ip(host: str) -> bool:
    """An IP literal we may send to: not broadcast, multicast or unspecified."""
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    if ip.is_multicast or ip.is_unspecified:
        return False
    return not (ip.version == 4 and ip == ipaddress.IPv4Address("255.255.255.255"))


def received_via(top: Via, source: Address) -> str | None:
    """The top Via with received/rport filled in (RFC 3261 §18.2.1, RFC
    3581), or None if unchanged. TCP peers always get rport so a response
    finds its way back to the connection."""
    params = top.params
    add_received = top.host.strip("[]") != source.host
    add_rport = ("rport" in params and params["rport"] is None) or source.transport in CONNECTED
    if not add_received and not add_rport:
        return None
    params = dict(params)
    if add_received:
        params["received"] = source.host
    if add_rport:
        params["rport"] = str(source.port)
    text = "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())
    return f"SIP/2.0/{top.transport} {top.sent_by}{text}"


def reply_address(top: Via, source: Address) -> Address:
    if source.transport in CONNECTED or "rport" in top.params:
        return source
    return Address(source.host, top.port or 5060, source.transport)


def uri_address(uri: Uri) -> Address | None:
    if not usable_ip(uri.host):
        return None
    default = "tls" if uri.scheme == "sips" else "udp"
    transport = (uri.params.get("transport") or default).lower()
    if transport not in TRANSPORTS:
        return None
    return Address(uri.host.strip("[]"), uri.port or 5060, transport)


def bracket(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def is_sos(uri: Uri) -> bool:
    """NG911 service URNs (RFC 5031): urn:service:sos and its sub-services."""
    return uri.scheme == "urn" and uri.raw.lower().startswith("urn:service:sos")
