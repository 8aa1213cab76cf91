"""Upstream peers by name: ``[[peers]]`` in the config maps source addresses
and CIDRs to a trunk name, the label metrics and dashboards use. Anything
else is ``unknown``, so the label set stays bounded by the config.

A peer may also name its FCC filings (``frn``, ``rmd``: matched against the
Robocall Mitigation Database, see ``proxy.gateway``), the role it plays for
us (``rmd_role``: which certification it needs), and its initial action
(``action``, with ``throttle_cps`` for "throttle")."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any

from .config_table import ConfigError, Table

UNKNOWN = "unknown"
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


TRANSPORTS = ("any", "udp", "tcp", "tls")
# peer-level actions, mildest first: each one does what the ones before it do
PEER_ACTIONS = ("observe", "label", "throttle", "block")
# the RMD certification a peer needs: any role, or the one it plays for us
RMD_ROLES = ("any", "voice", "gateway", "intermediate")
MAX_CPS = 100_000.0
_FRN = re.compile(r"[0-9]{10}")
_RMD = re.compile(r"RMD[0-9]{7}")


@dataclass(frozen=True, slots=True)
class PeerConfig:
    name: str
    addresses: tuple[str, ...]
    transport: str = "any"  # the transport the peer may use; "any": all of them
    frn: str = ""  # FCC Registration Number, 10 digits as text (leading zeros matter)
    rmd: str = ""  # its Robocall Mitigation Database filing, RMD + 7 digits
    rmd_role: str = "any"
    action: str = "observe"  # initial peer-level action (an operator may override it)
    throttle_cps: float = 0.0  # calls per second admitted while throttled


def parse_peers(value: Any) -> tuple[PeerConfig, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ConfigError("peers", "expected [[peers]] tables")
    out: list[PeerConfig] = []
    for i, item in enumerate(value):
        t = Table(item, f"peers[{i}]")
        name = t.string("name", "")
        if not name or not name.replace("-", "").replace("_", "").isalnum() or len(name) > 64:
            raise ConfigError(f"peers[{i}].name", "expected a name of letters, digits, - and _")
        if name == UNKNOWN or any(p.name == name for p in out):
            raise ConfigError(f"peers[{i}].name", f"{name!r} is reserved or used twice")
        addresses = t.networks("addresses")
        if not addresses:
            raise ConfigError(f"peers[{i}].addresses", "list at least one address or CIDR")
        transport = t.string("transport", "any", TRANSPORTS)
        frn, rmd = _frn(t), _rmd_number(t)
        rmd_role = t.string("rmd_role", "any", RMD_ROLES)
        action = t.string("action", "observe", PEER_ACTIONS)
        cps = t.number("throttle_cps", 0.0, 0.0, MAX_CPS)
        t.done()
        if action == "throttle" and cps <= 0:
            raise ConfigError(t.key("throttle_cps"), 'action "throttle" needs a rate above 0')
        out.append(PeerConfig(name, addresses, transport, frn, rmd, rmd_role, action, cps))
    return tuple(out)


def valid_frn(text: str) -> bool:
    return _FRN.fullmatch(text) is not None


def valid_rmd_number(text: str) -> bool:
    return _RMD.fullmatch(text) is not None


def _frn(t: Table) -> str:
    value = t.data.get("frn", "")
    if isinstance(value, int) and not isinstance(value, bool):
        raise ConfigError(
            t.key("frn"), "write the FRN as a quoted string: a number loses its leading zeros"
        )
    frn = t.string("frn", "").strip()
    if frn and not valid_frn(frn):
        raise ConfigError(
            t.key("frn"), f"expected 10 digits (an FCC Registration Number), got {frn!r}"
        )
    return frn


def _rmd_number(t: Table) -> str:
    rmd = t.string("rmd", "").strip().upper()
    if rmd and not valid_rmd_number(rmd):
        raise ConfigError(t.key("rmd"), f"expected RMD and 7 digits (e.g. RMD0012345), got {rmd!r}")
    return rmd


class PeerDirectory:
    """Source address -> peer name, memoised (bounded) per address."""

    def __init__(self, peers: tuple[PeerConfig, ...]) -> None:
        self.names = (*(p.name for p in peers), UNKNOWN)
        self._transport = {p.name: p.transport for p in peers}
        self._nets: list[tuple[_Network, str]] = sorted(
            ((ipaddress.ip_network(a, strict=False), p.name) for p in peers for a in p.addresses),
            key=lambda nn: -nn[0].prefixlen,  # the most specific match wins
        )
        self._memo: dict[str, str] = {}

    def name_of(self, host: str) -> str:
        name = self._memo.get(host)
        if name is None:
            name = UNKNOWN
            try:
                ip = ipaddress.ip_address(host)
            except ValueError:
                ip = None
            if ip is not None:
                for net, peer in self._nets:
                    if ip in net:
                        name = peer
                        break
            if len(self._memo) < 65536:
                self._memo[host] = name
        return name

    def admits(self, host: str, transport: str) -> bool:
        """Whether a request from ``host`` over ``transport`` comes from a
        declared peer, over a transport it is declared for."""
        name = self.name_of(host)
        if name == UNKNOWN:
            return False
        allowed = self._transport[name]
        return allowed == "any" or allowed == transport
