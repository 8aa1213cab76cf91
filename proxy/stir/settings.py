"""The [stir] section: verification of Identity headers on incoming calls."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config_table import ConfigError, Table

ON_UNCACHED = ("wait", "unverified")


@dataclass(frozen=True, slots=True)
class StirConfig:
    # Off until the operator names the STI-CA roots: without trust anchors
    # nothing can be verified, and every call would only say so.
    enabled: bool = False
    trust_dir: str = ""  # STI-CA root certificates (PEM or DER files)
    # An INVITE whose certificate is not cached: "wait" for the shared fetch
    # up to `budget` seconds, or screen it "unverified" at once while the
    # fetch runs in the background for the calls after it.
    on_uncached: str = "wait"
    budget: float = 0.15
    fetch_timeout: float = 2.0
    cache_entries: int = 1000
    default_ttl: float = 3600.0  # certificate kept without Cache-Control max-age
    max_ttl: float = 86400.0
    negative_ttl: float = 60.0  # a failed fetch or an untrusted chain, remembered
    max_skew: float = 60.0  # iat against now and against the Date header
    reject_failed: bool = False  # 438 Invalid Identity Header (RFC 8224) on a failed check
    verstat: bool = True  # tell the switch: verstat on the P-Asserted-Identity or From URI
    fetch_ca_file: str = ""  # CA bundle for the certificate servers' TLS; "" = system
    allow_private_hosts: bool = False  # fetch from loopback/private addresses (labs, tests)


def parse_stir(t: Table) -> StirConfig:
    d = StirConfig()
    cfg = StirConfig(
        enabled=t.boolean("enabled", d.enabled),
        trust_dir=t.string("trust_dir", d.trust_dir),
        on_uncached=t.string("on_uncached", d.on_uncached, ON_UNCACHED),
        budget=t.number("budget", d.budget, 0.0, 5.0),
        fetch_timeout=t.number("fetch_timeout", d.fetch_timeout, 0.1, 30.0),
        cache_entries=t.integer("cache_entries", d.cache_entries, 1, 1_000_000),
        default_ttl=t.number("default_ttl", d.default_ttl, 0.0, 7 * 86400.0),
        max_ttl=t.number("max_ttl", d.max_ttl, 0.0, 30 * 86400.0),
        negative_ttl=t.number("negative_ttl", d.negative_ttl, 1.0, 86400.0),
        max_skew=t.number("max_skew", d.max_skew, 1.0, 3600.0),
        reject_failed=t.boolean("reject_failed", d.reject_failed),
        verstat=t.boolean("verstat", d.verstat),
        fetch_ca_file=t.string("fetch_ca_file", d.fetch_ca_file),
        allow_private_hosts=t.boolean("allow_private_hosts", d.allow_private_hosts),
    )
    t.done()
    if cfg.enabled and not cfg.trust_dir:
        raise ConfigError("stir.trust_dir", "required when stir.enabled: the STI-CA roots")
    if cfg.trust_dir and not Path(cfg.trust_dir).is_dir():
        raise ConfigError("stir.trust_dir", f"{cfg.trust_dir!r} is not a directory")
    if cfg.fetch_ca_file and not Path(cfg.fetch_ca_file).is_file():
        raise ConfigError("stir.fetch_ca_file", f"{cfg.fetch_ca_file!r} is not a file")
    return cfg
