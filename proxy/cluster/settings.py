"""The ``[cluster]`` config section: where Redis is and who this node is."""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from ..config_table import ConfigError, Table

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_PREFIX = re.compile(r"[A-Za-z0-9_-]{1,32}")


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    enabled: bool = False
    redis_url: str = "redis://127.0.0.1:6379/0"
    # a file holding the Redis password (a container secret), so it is
    # never in the config file itself
    redis_password_file: str = ""
    mode: str = "standalone"  # or "cluster": Redis Cluster, keys hash-tagged
    node: str = ""  # this node's name in metrics and logs; empty: the host name
    prefix: str = "rs"  # every key starts with it: several deployments, one Redis
    sync_interval: float = 1.0  # seconds between merges of local counters
    catch_up_seconds: float = 3600.0  # how far back a starting node reads
    max_pending_rows: int = 200_000  # counter rows kept while Redis is down
    timeout: float = 2.0  # seconds for one Redis operation

    @property
    def node_name(self) -> str:
        return self.node or socket.gethostname()[:63] or "node"


def parse_cluster(t: Table) -> ClusterConfig:
    d = ClusterConfig()
    cfg = ClusterConfig(
        enabled=t.boolean("enabled", d.enabled),
        redis_url=t.string("redis_url", d.redis_url),
        redis_password_file=t.string("redis_password_file", d.redis_password_file),
        mode=t.string("mode", d.mode, ("standalone", "cluster")),
        node=t.string("node", d.node),
        prefix=t.string("prefix", d.prefix),
        sync_interval=t.number("sync_interval", d.sync_interval, 0.1, 10.0),
        catch_up_seconds=t.number("catch_up_seconds", d.catch_up_seconds, 0, 7200),
        max_pending_rows=t.integer("max_pending_rows", d.max_pending_rows, 1000, 10_000_000),
        timeout=t.number("timeout", d.timeout, 0.1, 30.0),
    )
    t.done()
    scheme = urlsplit(cfg.redis_url).scheme
    if scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(
            "cluster.redis_url",
            f"expected a redis://, rediss:// or unix:// URL, got {redacted(cfg.redis_url)!r}",
        )
    if cfg.node and _NAME.fullmatch(cfg.node) is None:
        raise ConfigError("cluster.node", "expected a name of letters, digits, ., - and _")
    if _PREFIX.fullmatch(cfg.prefix) is None:
        raise ConfigError("cluster.prefix", "expected 1 to 32 letters, digits, - or _")
    return cfg


def redacted(url: str) -> str:
    """The URL without its password, for logs and errors."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    query = "&".join(
        f"{k}=***" if k.lower() in ("password", "username") else f"{k}={v}" if v else k
        for k, _, v in (item.partition("=") for item in parts.query.split("&") if item)
    )
    if parts.password is None:
        return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit((parts.scheme, user + host, parts.path, query, parts.fragment))
