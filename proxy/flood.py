"""Flood control in the manner of Kamailio's pike module: token buckets per
source IP and per caller number, sans-I/O (the clock is passed in).

A bucket holds up to ``burst`` tokens and refills at ``rate`` per second;
each message takes one, and a message finding less than one is over the
limit. Tables are LRU-bounded (``max_ips``, ``max_callers``): O(1) per
message, and an evicted entry is one idle long enough to be least recently
seen, whose bucket has usually refilled anyway.

Switches are never limited; declared ``[[peers]]`` get ``peer_factor``
times the unknown sources' rate and burst (0: exempt). Emergency calls are
exempted by the core, which knows what an emergency call is.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from .config_table import Table
from .peers import UNKNOWN, PeerConfig, PeerDirectory

ACTIONS = ("drop", "503")
# limited messages further apart than this end an over-limit streak
STREAK_GAP = 1.0

# what FloodGuard.ip says about a message
PASS, OVER, BAN = 0, 1, 2


@dataclass(frozen=True, slots=True)
class FloodConfig:
    enabled: bool = True
    # what an over-limit request gets: dropped silently, or 503 + Retry-After
    # (drop by default: a 503 to a spoofed UDP source is reflection)
    action: str = "drop"
    retry_after: int = 5
    # messages per second from one unknown source address: far above what
    # one worker parses, so only a source flooding it alone is limited
    per_ip_rate: float = 10_000.0
    per_ip_burst: int = 20_000
    # declared [[peers]] get this many times the rate and burst; 0: exempt
    peer_factor: float = 10.0
    # new INVITEs and MESSAGEs per second from one caller number
    # (a notification blast from one number starts fast; past 100 calls/s
    # sustained, one number is a flood whatever it says)
    per_caller_rate: float = 100.0
    per_caller_burst: int = 1_000
    max_ips: int = 100_000
    max_callers: int = 100_000
    # nftables drop of an unknown source over its limit for kernel_drop_after
    # seconds, for kernel_drop_seconds (needs root and pyroute2: `.[kernel]`)
    kernel_drop: bool = False
    kernel_drop_after: float = 10.0
    kernel_drop_seconds: int = 300


def parse_flood(t: Table) -> FloodConfig:
    d = FloodConfig()
    cfg = FloodConfig(
        enabled=t.boolean("enabled", d.enabled),
        action=t.string("action", d.action, ACTIONS),
        retry_after=t.integer("retry_after", d.retry_after, 1, 3600),
        per_ip_rate=t.number("per_ip_rate", d.per_ip_rate, 0.01, 1e7),
        per_ip_burst=t.integer("per_ip_burst", d.per_ip_burst, 1, 10_000_000),
        peer_factor=t.number("peer_factor", d.peer_factor, 0.0, 1e6),
        per_caller_rate=t.number("per_caller_rate", d.per_caller_rate, 0.001, 1e6),
        per_caller_burst=t.integer("per_caller_burst", d.per_caller_burst, 1, 10_000_000),
        max_ips=t.integer("max_ips", d.max_ips, 100, 10_000_000),
        max_callers=t.integer("max_callers", d.max_callers, 100, 10_000_000),
        kernel_drop=t.boolean("kernel_drop", d.kernel_drop),
        kernel_drop_after=t.number("kernel_drop_after", d.kernel_drop_after, 0.0, 86_400),
        kernel_drop_seconds=t.integer("kernel_drop_seconds", d.kernel_drop_seconds, 1, 86_400),
    )
    t.done()
    return cfg


class Bucket:
    __slots__ = ("banned_until", "burst", "last_over", "over_since", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = now
        self.over_since = self.last_over = self.banned_until = -1.0


K = TypeVar("K", bound=Hashable)


class TokenBuckets(Generic[K]):
    """One token bucket per key, the least recently seen evicted beyond ``cap``."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.entries: OrderedDict[K, Bucket] = OrderedDict()
        self.evicted = 0

    def __len__(self) -> int:
        return len(self.entries)

    def bucket(self, key: K, now: float, rate: float, burst: float) -> Bucket:
        """The key's bucket, refilled to ``now`` (created full if new)."""
        entries = self.entries
        b = entries.get(key)
        if b is None:
            if len(entries) >= self.cap:
                entries.popitem(last=False)
                self.evicted += 1
            b = entries[key] = Bucket(rate, burst, now)
            return b
        entries.move_to_end(key)
        elapsed = now - b.stamp
        if elapsed > 0.0:  # a clock that steps back refills nothing
            tokens = b.tokens + elapsed * b.rate
            b.tokens = tokens if tokens < b.burst else b.burst
            b.stamp = now
        return b

    def take(self, key: K, now: float, rate: float, burst: float) -> bool:
        """Take a token: False when there is less than one (over the limit)."""
        b = self.bucket(key, now, rate, burst)
        if b.tokens >= 1.0:
            b.tokens -= 1.0
            return True
        return False


class FloodGuard:
    """The per-IP and per-caller limits of one worker."""

    def __init__(
        self, cfg: FloodConfig, peers: tuple[PeerConfig, ...], switches: Iterable[str]
    ) -> None:
        self.cfg = cfg
        self.reply = cfg.action == "503"
        self.ips: TokenBuckets[str] = TokenBuckets(cfg.max_ips)
        self.callers: TokenBuckets[int] = TokenBuckets(cfg.max_callers)
        self.exempt = frozenset(switches)
        self.peers = PeerDirectory(peers)
        self._unknown = (cfg.per_ip_rate, float(cfg.per_ip_burst))
        factor = cfg.peer_factor
        self._peer = (cfg.per_ip_rate * factor, cfg.per_ip_burst * factor) if factor else None

    def ip(self, host: str, now: float) -> int:
        """PASS, OVER, or BAN (over its limit for ``kernel_drop_after``
        seconds: time to drop it in the kernel; said once per drop period)."""
        b = self.ips.entries.get(host)
        if b is None:  # a new source: classify it once
            if host in self.exempt:
                return PASS
            unknown = self.peers.name_of(host) == UNKNOWN
            limits = self._unknown if unknown else self._peer
            if limits is None:
                return PASS  # an exempt peer: no entry, so classified each time (memoised)
            b = self.ips.bucket(host, now, *limits)
            b.banned_until = -1.0 if unknown else float("inf")  # peers never kernel-dropped
        else:
            b = self.ips.bucket(host, now, b.rate, b.burst)
        if b.tokens >= 1.0:
            b.tokens -= 1.0
            return PASS
        return self._streak(b, now)

    def _streak(self, b: Bucket, now: float) -> int:
        cfg = self.cfg
        if now - b.last_over > STREAK_GAP:
            b.over_since = now
        b.last_over = now
        if (
            cfg.kernel_drop
            and now - b.over_since >= cfg.kernel_drop_after
            and now >= b.banned_until
        ):
            b.banned_until = now + cfg.kernel_drop_seconds
            return BAN
        return OVER

    def caller(self, key: int, now: float) -> bool:
        """True when the caller number is within its limit (a token taken)."""
        cfg = self.cfg
        return self.callers.take(key, now, cfg.per_caller_rate, float(cfg.per_caller_burst))
