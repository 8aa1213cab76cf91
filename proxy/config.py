"""Configuration: embedded defaults, a TOML file on top, strict validation.

Every problem becomes one ``ConfigError`` naming the key, e.g.
``sip.port: expected an integer from 1 to 65535, got 'abc'``.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .cluster.settings import ClusterConfig, parse_cluster
from .config_table import MODES, ConfigError, Table
from .flood import FloodConfig, parse_flood
from .gateway.settings import PeerPolicyConfig, parse_peer_policy
from .peers import PeerConfig, parse_peers
from .records.settings import RecordsConfig, parse_records
from .reputation.settings import ReputationConfig, parse_reputation
from .sip.grammar import is_token
from .sip.limits import Limits
from .sip.numbers import e164_key
from .stir.settings import StirConfig, parse_stir
from .subscribers.settings import SubscriberConfig, parse_subscribers
from .telemarketing.settings import TelemarketingConfig, parse_telemarketing

PLACEHOLDER_REDRESS_URL = "https://redress.example.net/robocall-shield"
CHECK_NAMES = (
    "emergency",
    "subscriber",
    "static_allow",
    "static_label",
    "static_block",
    "blocklist_allow",
    "dno",
    "invalid_number",
    "blocklist",
    "prefix_rule",
    "reputation",
)


@dataclass(frozen=True, slots=True)
class SipConfig:
    host: str = "127.0.0.1"
    port: int = 5060
    transports: tuple[str, ...] = ("udp", "tcp")
    advertised_host: str = ""
    record_route: bool = True  # reputation needs BYEs to measure durations
    udp_receive_buffer: int = 8 << 20
    overload_lag: float = 0.25  # event-loop lag (s) beyond which new calls get 503; 0: never
    # bytes waiting in the UDP receive queue beyond which new calls get 503; 0: never
    overload_backlog: int = 1 << 20
    workers: int = 1  # processes sharing the port; 0: one per CPU
    # how datagrams reach the workers: "source" (SO_REUSEPORT, the kernel
    # hashes the sender's address) or "message" (one socket all workers read)
    worker_balance: str = "source"
    # with workers: worker i also listens on worker_port_base + i and puts
    # that port in its Via and Record-Route, so a call's responses and
    # in-dialog requests come back to the worker that screened it; 0: off
    worker_port_base: int = 0
    # SIGTERM: seconds to keep relaying the calls in flight while refusing
    # new ones with 503, before exiting; 0: stop at once
    drain_seconds: float = 5.0
    # requests from a source that is no [[peers]] entry and no switch:
    # "reject" (403), "drop" (silence), or "accept"; with no [[peers]] at all
    # every source is accepted (and start-up says so)
    unknown_sources: str = "reject"
    # SIP over TLS (RFC 3261 §26, port 5061 by convention); 0: off
    tls_port: int = 0
    tls_cert: str = ""  # PEM certificate chain
    tls_key: str = ""
    # mutual TLS: peers must present a certificate issued by this CA bundle
    tls_peer_ca: str = ""
    limits: Limits = field(default_factory=Limits)

    @property
    def public_host(self) -> str:
        return self.advertised_host or self.host


@dataclass(frozen=True, slots=True)
class SwitchConfig:
    name: str = "switch1"
    host: str = "127.0.0.1"
    port: int = 5080
    transport: str = "udp"
    weight: int = 1
    trusted: bool = True


@dataclass(frozen=True, slots=True)
class RoutingConfig:
    policy: str = "hash"
    health_checks: bool = True
    ping_interval: float = 5.0
    ping_timeout: float = 2.0
    failures_before_down: int = 3
    successes_before_up: int = 2


@dataclass(frozen=True, slots=True)
class AdminConfig:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 8080
    # bearer token for the API (or ROBOCALL_SHIELD_TOKEN); without one the
    # authenticated endpoints are off and the server stays on loopback
    token: str = field(default="", repr=False)
    # or a file holding it (a container secret); read when the config is
    token_file: str = ""
    # HTTPS for the admin API and the pages: a PEM certificate chain and key
    tls_cert: str = ""
    tls_key: str = ""


@dataclass(frozen=True, slots=True)
class BlocklistConfig:
    dir: str = ""  # artefact directory from `robocall-shield blocklist build`
    fp_rate: float = 0.001
    watch_interval: float = 5.0
    # what an FTC complaint alone does: feed the reputation score (decayed), label or block
    ftc_action: str = "reputation"


@dataclass(frozen=True, slots=True)
class LogConfig:
    level: str = "info"
    verdict_log: str = "-"


@dataclass(frozen=True, slots=True)
class RedressConfig:
    url: str = PLACEHOLDER_REDRESS_URL
    tel: str = ""
    email: str = ""


@dataclass(frozen=True, slots=True)
class ScreeningConfig:
    emergency_numbers: tuple[str, ...] = ("911", "933")
    psap_numbers: frozenset[int] = frozenset()
    government_numbers: frozenset[int] = frozenset()
    allow: frozenset[int] = frozenset()
    label: frozenset[int] = frozenset()
    block: frozenset[int] = frozenset()
    label_text: str = "SCAM LIKELY"
    verdict_header: str = "X-Robocall-Verdict"
    modes: dict[str, str] = field(default_factory=lambda: dict.fromkeys(CHECK_NAMES, "enforce"))


@dataclass(frozen=True, slots=True)
class Config:
    sip: SipConfig = field(default_factory=SipConfig)
    switches: tuple[SwitchConfig, ...] = (SwitchConfig(),)
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)
    log: LogConfig = field(default_factory=LogConfig)
    redress: RedressConfig = field(default_factory=RedressConfig)
    screening: ScreeningConfig = field(default_factory=ScreeningConfig)
    blocklists: BlocklistConfig = field(default_factory=BlocklistConfig)
    reputation: ReputationConfig = field(default_factory=ReputationConfig)
    subscribers: SubscriberConfig = field(default_factory=SubscriberConfig)
    records: RecordsConfig = field(default_factory=RecordsConfig)
    peers: tuple[PeerConfig, ...] = ()
    stir: StirConfig = field(default_factory=StirConfig)
    flood: FloodConfig = field(default_factory=FloodConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    telemarketing: TelemarketingConfig = field(default_factory=TelemarketingConfig)
    peer_policy: PeerPolicyConfig = field(default_factory=PeerPolicyConfig)

    @property
    def public_url(self) -> str:
        """Where this server's pages are reached from outside."""
        scheme = "https" if self.admin.tls_cert else "http"
        return self.subscribers.public_url or f"{scheme}://{self.admin.host}:{self.admin.port}"


def load_config(path: str | Path | None = None) -> Config:
    """Embedded defaults, overridden by the TOML file at ``path`` if given."""
    if path is None:
        return parse_config({})
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(str(path), "not UTF-8 text") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), f"not valid TOML: {exc}") from None
    return parse_config(data)


def parse_config(data: dict[str, Any]) -> Config:
    root = Table(data, "")
    cfg = Config(
        sip=(sip := _sip(root.sub("sip"))),
        switches=_switches(root.data.pop("switches", None)),
        routing=_routing(root.sub("routing")),
        admin=_admin(root.sub("admin")),
        log=_log(root.sub("log")),
        redress=_redress(root.sub("redress")),
        screening=_screening(root.sub("screening")),
        blocklists=_blocklists(root.sub("blocklists")),
        reputation=parse_reputation(root.sub("reputation")),
        subscribers=(subs := parse_subscribers(root.sub("subscribers"))),
        records=parse_records(root.sub("records"), subs.data_dir, subs.enabled),
        peers=(peers := parse_peers(root.data.pop("peers", None))),
        stir=parse_stir(root.sub("stir")),
        flood=parse_flood(root.sub("flood")),
        cluster=parse_cluster(root.sub("cluster")),
        telemarketing=parse_telemarketing(root.sub("telemarketing"), (p.name for p in peers)),
        peer_policy=parse_peer_policy(root.sub("peer_policy"), subs.data_dir),
    )
    root.done()
    if cfg.redress.url == PLACEHOLDER_REDRESS_URL and cfg.subscribers.enabled and cfg.admin.enabled:
        # the 603+ points blocked callers at this server's own redress page
        cfg = replace(cfg, redress=replace(cfg.redress, url=f"{cfg.public_url}/redress"))
    family = ipaddress.ip_address(sip.host).version
    for i, sw in enumerate(cfg.switches):
        if ipaddress.ip_address(sw.host).version != family:
            raise ConfigError(
                f"switches[{i}].host", f"IPv{family} only: the SIP socket is on {sip.host}"
            )
    return cfg


def _sip(t: Table) -> SipConfig:
    d = SipConfig()
    transports = t.strings("transports", d.transports)
    for i, name in enumerate(transports):
        if name not in ("udp", "tcp"):
            raise ConfigError(f"sip.transports[{i}]", f"expected udp or tcp, got {name!r}")
    if not transports:
        raise ConfigError("sip.transports", "at least one transport is required")
    lt = t.sub("limits")
    limits = Limits(
        max_message_bytes=lt.integer("max_message_bytes", 65536, 1024, 1 << 20),
        max_headers=lt.integer("max_headers", 256, 16, 4096),
        max_line_bytes=lt.integer("max_line_bytes", 8192, 256, 1 << 20),
        max_connections=lt.integer("max_connections", 4096, 1, 1 << 20),
        max_connections_per_source=lt.integer("max_connections_per_source", 64, 1, 1 << 20),
        max_buffered_bytes=lt.integer("max_buffered_bytes", 1 << 25, 1 << 16, 1 << 34),
        max_buffered_bytes_per_source=lt.integer(
            "max_buffered_bytes_per_source", 1 << 20, 1 << 12, 1 << 34
        ),
        message_timeout=lt.number("message_timeout", 10.0, 0.0, 3600.0),
    )
    lt.done()
    cfg = SipConfig(
        host=t.ip("host", d.host),
        port=t.integer("port", d.port, 1, 65535),
        transports=tuple(dict.fromkeys(transports)),
        advertised_host=_advertised_host(t),
        record_route=t.boolean("record_route", d.record_route),
        overload_lag=t.number("overload_lag", d.overload_lag, 0.0, 10.0),
        overload_backlog=t.integer("overload_backlog", d.overload_backlog, 0, 1 << 30),
        workers=t.integer("workers", d.workers, 0, 64),
        worker_balance=t.string("worker_balance", d.worker_balance, ("source", "message")),
        worker_port_base=t.integer("worker_port_base", d.worker_port_base, 0, 65535 - 64),
        drain_seconds=t.number("drain_seconds", d.drain_seconds, 0.0, 600.0),
        unknown_sources=t.string(
            "unknown_sources", d.unknown_sources, ("reject", "drop", "accept")
        ),
        tls_port=t.integer("tls_port", d.tls_port, 0, 65535),
        tls_cert=t.string("tls_cert", d.tls_cert),
        tls_key=t.string("tls_key", d.tls_key),
        tls_peer_ca=t.string("tls_peer_ca", d.tls_peer_ca),
        udp_receive_buffer=t.integer("udp_receive_buffer", d.udp_receive_buffer, 0, 1 << 30),
        limits=limits,
    )
    t.done()
    _check_tls(cfg)
    base, count = cfg.worker_port_base, cfg.workers or os.cpu_count() or 1
    if base and base <= cfg.port < base + count:
        raise ConfigError(
            "sip.worker_port_base", f"the worker ports {base}..{base + count - 1} include sip.port"
        )
    if cfg.host in ("0.0.0.0", "::") and not cfg.advertised_host:
        raise ConfigError("sip.advertised_host", "required when sip.host is a wildcard address")
    return cfg


def _check_tls(cfg: SipConfig) -> None:
    if cfg.tls_port and not (cfg.tls_cert and cfg.tls_key):
        raise ConfigError("sip.tls_cert", "tls_port needs tls_cert and tls_key")
    if cfg.tls_port and cfg.tls_port == cfg.port:
        raise ConfigError("sip.tls_port", "must differ from sip.port")
    for key in ("tls_cert", "tls_key", "tls_peer_ca"):
        path = getattr(cfg, key)
        if path and not Path(path).is_file():
            raise ConfigError(f"sip.{key}", f"{path!r} is not a file")


def _advertised_host(t: Table) -> str:
    value = t.string("advertised_host", "").lower()
    if not value:
        return value
    try:
        ipaddress.ip_address(value)
    except ValueError:
        if _HOSTNAME.fullmatch(value) is None:
            raise ConfigError(
                "sip.advertised_host", f"expected an IP address or host name, got {value!r}"
            ) from None
    return value


def _switches(value: Any) -> tuple[SwitchConfig, ...]:
    if value is None:
        return (SwitchConfig(),)
    if not isinstance(value, list) or not value:
        raise ConfigError("switches", "expected one or more [[switches]] tables")
    out: list[SwitchConfig] = []
    for i, item in enumerate(value):
        t = Table(item, f"switches[{i}]")
        d = SwitchConfig()
        sw = SwitchConfig(
            name=t.string("name", f"switch{i + 1}"),
            host=t.ip("host", d.host),
            port=t.integer("port", d.port, 1, 65535),
            transport=t.string("transport", d.transport, ("udp",)),
            weight=t.integer("weight", d.weight, 1, 1000),
            trusted=t.boolean("trusted", d.trusted),
        )
        t.done()
        if any(s.name == sw.name for s in out):
            raise ConfigError(f"switches[{i}].name", f"duplicate switch name {sw.name!r}")
        out.append(sw)
    return tuple(out)


def _routing(t: Table) -> RoutingConfig:
    d = RoutingConfig()
    cfg = RoutingConfig(
        policy=t.string("policy", d.policy, ("hash", "round-robin")),
        health_checks=t.boolean("health_checks", d.health_checks),
        ping_interval=t.number("ping_interval", d.ping_interval, 0.05, 3600),
        ping_timeout=t.number("ping_timeout", d.ping_timeout, 0.01, 600),
        failures_before_down=t.integer("failures_before_down", d.failures_before_down, 1, 100),
        successes_before_up=t.integer("successes_before_up", d.successes_before_up, 1, 100),
    )
    t.done()
    return cfg


def _admin(t: Table) -> AdminConfig:
    d = AdminConfig()
    cfg = AdminConfig(
        enabled=t.boolean("enabled", d.enabled),
        host=t.ip("host", d.host),
        port=t.integer("port", d.port, 1, 65535),
        token=t.string("token", d.token),
        token_file=t.string("token_file", d.token_file),
        tls_cert=t.string("tls_cert", d.tls_cert),
        tls_key=t.string("tls_key", d.tls_key),
    )
    t.done()
    if cfg.token_file:
        if cfg.token:
            raise ConfigError("admin.token_file", "set token or token_file, not both")
        try:
            token = Path(cfg.token_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            problem = f"cannot read {cfg.token_file!r}: {exc}"
            raise ConfigError("admin.token_file", problem) from None
        if not token:
            raise ConfigError("admin.token_file", f"{cfg.token_file!r} is empty")
        cfg = replace(cfg, token=token)
    if bool(cfg.tls_cert) != bool(cfg.tls_key):
        raise ConfigError("admin.tls_key", "set both tls_cert and tls_key, or neither")
    for key, path in (("tls_cert", cfg.tls_cert), ("tls_key", cfg.tls_key)):
        if path and not Path(path).is_file():
            raise ConfigError(f"admin.{key}", f"{path!r} is not a file")
    if cfg.token and (len(cfg.token) < 16 or any(c.isspace() for c in cfg.token)):
        raise ConfigError("admin.token", "use at least 16 characters without whitespace")
    return cfg


def _blocklists(t: Table) -> BlocklistConfig:
    d = BlocklistConfig()
    cfg = BlocklistConfig(
        dir=t.string("dir", d.dir),
        fp_rate=t.number("fp_rate", d.fp_rate, 1e-9, 0.5),
        watch_interval=t.number("watch_interval", d.watch_interval, 0.0, 3600),
        ftc_action=t.string("ftc_action", d.ftc_action, ("reputation", "label", "block")),
    )
    t.done()
    return cfg


def _log(t: Table) -> LogConfig:
    d = LogConfig()
    cfg = LogConfig(
        level=t.string("level", d.level, ("debug", "info", "warning", "error")),
        verdict_log=t.string("verdict_log", d.verdict_log),
    )
    t.done()
    return cfg


def _redress(t: Table) -> RedressConfig:
    cfg = RedressConfig(
        url=t.string("url", PLACEHOLDER_REDRESS_URL),
        tel=t.string("tel", ""),
        email=t.string("email", ""),
    )
    t.done()
    if not (cfg.url or cfg.tel or cfg.email):
        raise ConfigError("redress", "set at least one of url, tel or email (ATIS-1000099 603+)")
    # These go inside the quoted text of the 603+ Reason header, so quotes,
    # backslashes, ';' and whitespace would break or inject into it.
    if cfg.url and _REDRESS_URL.fullmatch(cfg.url) is None:
        raise ConfigError(
            "redress.url", f"expected an http(s) URL without quotes, ';' or spaces, got {cfg.url!r}"
        )
    if cfg.tel and (_REDRESS_TEL.fullmatch(cfg.tel) is None or e164_key(cfg.tel) is None):
        raise ConfigError("redress.tel", f"{cfg.tel!r} is not a telephone number")
    if cfg.email and _REDRESS_EMAIL.fullmatch(cfg.email) is None:
        raise ConfigError("redress.email", f"{cfg.email!r} is not an e-mail address")
    return cfg


_SAFE = r"[^\s\";\\<>\x00-\x1f\x7f]"
_REDRESS_URL = re.compile(rf"https?://{_SAFE}+")
_REDRESS_TEL = re.compile(r"\+?[0-9][0-9().\-]*")
_REDRESS_EMAIL = re.compile(rf"[^@\s\";\\<>\x00-\x1f\x7f]+@{_SAFE}+")
_HOSTNAME = re.compile(r"[a-z0-9]([a-z0-9\-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9\-]*[a-z0-9])?)*")
# Headers the proxy reads or rewrites: the verdict header must not be one.
_RESERVED_HEADERS = frozenset(
    [
        "via",
        "from",
        "to",
        "call-id",
        "cseq",
        "contact",
        "route",
        "record-route",
        "max-forwards",
        "content-length",
        "content-type",
        "p-asserted-identity",
        "privacy",
        "identity",
        "reason",
        "proxy-require",
        "require",
        "supported",
        "diversion",
    ]
)


def _screening(t: Table) -> ScreeningConfig:
    d = ScreeningConfig()
    emergency = t.strings("emergency_numbers", d.emergency_numbers)
    for i, text in enumerate(emergency):
        if not (text.isascii() and text.isdigit()):
            raise ConfigError(f"screening.emergency_numbers[{i}]", f"{text!r} is not a dial string")
    label_text = t.string("label_text", d.label_text)
    if not label_text.strip() or any(c in label_text for c in '"\\\r\n'):
        raise ConfigError("screening.label_text", "expected non-empty text without quotes")
    mt = t.sub("modes")
    modes = {name: mt.string(name, "enforce", MODES) for name in CHECK_NAMES}
    mt.done()
    if modes["emergency"] != "enforce":
        raise ConfigError("screening.modes.emergency", "emergency calls are always enforced")
    cfg = ScreeningConfig(
        emergency_numbers=emergency,
        psap_numbers=t.numbers("psap_numbers"),
        government_numbers=t.numbers("government_numbers"),
        allow=t.numbers("allow"),
        label=t.numbers("label"),
        block=t.numbers("block"),
        label_text=label_text.strip()[:15],  # CNAM carries 15 characters
        verdict_header=_header_name(t, "verdict_header", d.verdict_header),
        modes=modes,
    )
    t.done()
    return cfg


def _header_name(t: Table, name: str, default: str) -> str:
    value = t.string(name, default)
    if not is_token(value) or len(value) == 1:
        raise ConfigError(t.key(name), f"{value!r} is not a valid SIP header name")
    if value.lower() in _RESERVED_HEADERS:
        raise ConfigError(t.key(name), f"{value!r} is a header the proxy reads or rewrites")
    return value
