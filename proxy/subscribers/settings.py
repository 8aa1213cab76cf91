"""The ``[subscribers]`` config section: the store, links and redress page."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from ..config_table import ConfigError, Table

_URL = re.compile(r"https?://[A-Za-z0-9.\-\[\]:]+(/[A-Za-z0-9._~%/\-]*)?")
BACKENDS = ("sqlite", "postgresql")


@dataclass(frozen=True, slots=True)
class SubscriberConfig:
    enabled: bool = True
    # "sqlite": one file under data_dir, shared by this host's workers;
    # "postgresql": one database shared by several nodes (dsn or dsn_file)
    backend: str = "sqlite"
    data_dir: str = "var"  # subscribers.sqlite3 (subscribers, audit, disputes) lives here
    dsn: str = field(default="", repr=False)  # libpq connection string; may hold a password
    dsn_file: str = ""  # a file holding the connection string instead (a secret)
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
        backend=t.string("backend", d.backend, BACKENDS),
        data_dir=t.string("data_dir", d.data_dir),
        dsn=t.string("dsn", d.dsn).strip(),
        dsn_file=t.string("dsn_file", d.dsn_file).strip(),
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
    _check_database(cfg)
    return cfg


def _check_database(cfg: SubscriberConfig) -> None:
    """The connection settings fit the backend; a connection string parses.
    Messages never quote a connection string: it may hold a password."""
    if cfg.backend == "sqlite":
        for name in ("dsn", "dsn_file"):
            if getattr(cfg, name):
                raise ConfigError(
                    f"subscribers.{name}", 'only for backend = "postgresql"; the store is SQLite'
                )
        return
    if cfg.dsn and cfg.dsn_file:
        raise ConfigError("subscribers.dsn_file", "give dsn or dsn_file, not both")
    if not cfg.dsn and not cfg.dsn_file:
        raise ConfigError(
            "subscribers.dsn",
            'backend = "postgresql" needs a connection string: dsn = "host=... dbname=..." '
            "(or dsn_file)",
        )
    key, dsn = "subscribers.dsn", cfg.dsn
    if cfg.dsn_file:
        key = "subscribers.dsn_file"
        try:
            dsn = Path(cfg.dsn_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(key, f"cannot read {cfg.dsn_file}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise ConfigError(key, f"{cfg.dsn_file} is not UTF-8 text") from None
        if not dsn:
            raise ConfigError(key, f"{cfg.dsn_file} is empty")
    try:
        from psycopg.conninfo import conninfo_to_dict
    except ImportError:
        raise ConfigError(
            "subscribers.backend",
            "PostgreSQL needs psycopg: pip install 'robocall-shield[postgres]'",
        ) from None
    try:
        conninfo_to_dict(dsn)
    except Exception:  # libpq's message may quote a fragment of a password: not shown
        raise ConfigError(
            key,
            "not a valid libpq connection string: write key=value pairs "
            "(host=... port=... dbname=... user=...) or a postgresql:// URL",
        ) from None
