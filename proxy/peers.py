"""Upstream peers by name: ``[[peers]]`` in the config maps source addresses
and CIDRs to a trunk name, the label metrics and dashboards use. Anything
else is ``unknown``, so the label set stays bounded by the config."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from .config_table import ConfigError, Table

UNKNOWN = "unknown"
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


TRANSPORTS = ("any", "udp", "tcp", "tls")


@dataclass(frozen=True, slots=True)
class PeerConfig:
    name: str
    addresses: tuple[str, ...]
    transport: str = "any"  # the transport the peer may use; "any": all of them


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
        t.done()
        out.append(PeerConfig(name, addresses, transport))
    return tuple(out)


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
