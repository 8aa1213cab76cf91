"""The ``[subscribers]`` config section: the store, links and redress page."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..config_table import ConfigError, Table

_URL = re.compile(r"https?://[A-Za-z0-9.\-\[\]:]+(/[A-Za-z0-9._~%/\-]*)?")


@dataclass(frozen=True, slots=True)
class SubscriberConfig:
    enabled: bool = True
    data_dir: str = "var"  # subscribers.sqlite3 (subscribers, audit, disputes) lives here
    # the address subscribers and blocked callers reach this server's pages at
    # (behind a reverse proxy in production); empty: the admin address
    public_url: str = ""
    link_ttl: float = 3600.0  # seconds a self-service link stays valid
    link_secret: str = ""  # HMAC key for links; empty: ROBOCALL_SHIELD_LINK_SECRET or random
    disputes_per_hour: int = 5  # per source address


def parse_subscribers(t: Table) -> SubscriberConfig:
    d = SubscriberConfig()
    cfg = SubscriberConfig(
        enabled=t.boolean("enabled", d.enabled),
        data_dir=t.string("data_dir", d.data_dir),
        public_url=t.string("public_url", d.public_url).rstrip("/"),
        link_ttl=t.number("link_ttl", d.link_ttl, 60, 30 * 86400),
        link_secret=t.string("link_secret", d.link_secret),
        disputes_per_hour=t.integer("disputes_per_hour", d.disputes_per_hour, 1, 10_000),
    )
    t.done()
    if not cfg.data_dir.strip():
        raise ConfigError("subscribers.data_dir", "expected a directory")
    if cfg.public_url and _URL.fullmatch(cfg.public_url) is None:
        raise ConfigError(
            "subscribers.public_url", f"expected an http(s) URL, got {cfg.public_url!r}"
        )
    if cfg.link_secret and len(cfg.link_secret) < 16:
        raise ConfigError("subscribers.link_secret", "use at least 16 characters")
    return cfg
