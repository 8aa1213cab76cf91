"""Configuration: defaults, the example file, and one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from proxy.config import ConfigError, load_config, parse_config

ROOT = Path(__file__).resolve().parents[1]


def test_embedded_defaults_match_the_issue() -> None:
    cfg = load_config()
    assert (cfg.sip.host, cfg.sip.port, cfg.sip.transports) == ("127.0.0.1", 5060, ("udp", "tcp"))
    assert [(s.host, s.port) for s in cfg.switches] == [("127.0.0.1", 5080)]
    assert (cfg.admin.host, cfg.admin.port) == ("127.0.0.1", 8080)
    assert cfg.sip.limits.max_message_bytes == 65536 and cfg.sip.limits.max_headers == 256
    assert cfg.sip.limits.max_line_bytes == 8192


def test_example_file_is_valid_and_documents_every_key() -> None:
    example = ROOT / "config" / "robocall-shield.example.toml"
    cfg = load_config(example)
    assert cfg == load_config()  # the example shows the defaults
    text = example.read_text()
    import dataclasses

    for section in (
        cfg.sip,
        cfg.sip.limits,
        cfg.switches[0],
        cfg.routing,
        cfg.admin,
        cfg.log,
        cfg.redress,
        cfg.screening,
        cfg.reputation,
        cfg.subscribers,
        cfg.stir,
        cfg.flood,
    ):
        for f in dataclasses.fields(section):  # type: ignore[arg-type]
            if f.name in ("limits", "modes", "weights"):
                continue
            documented = f"\n{f.name} =" in text or f"\n# {f.name} =" in text
            assert documented, f"{f.name} is not documented in the example"


@pytest.mark.parametrize(
    ("data", "key", "problem"),
    [
        ({"sip": {"port": "abc"}}, "sip.port", "expected an integer"),
        ({"sip": {"prot": 5060}}, "sip.prot", "unknown key"),
        ({"sip": {"host": "localhost"}}, "sip.host", "expected an IP address"),
        ({"sip": {"transports": ["udp", "sctp"]}}, "sip.transports[1]", "udp or tcp"),
        (
            {"switches": [{"host": "10.0.0.1"}, {"name": "switch1"}]},
            "switches[1].name",
            "duplicate",
        ),
        ({"routing": {"policy": "random"}}, "routing.policy", "expected one of"),
        ({"redress": {"url": ""}}, "redress", "at least one of url, tel or email"),
        ({"redress": {"tel": "12"}}, "redress.tel", "not a telephone number"),
        (
            {"screening": {"block": ["+12125550142", "nope"]}},
            "screening.block[1]",
            "not a telephone number",
        ),
        (
            {"screening": {"modes": {"emergency": "observe"}}},
            "screening.modes.emergency",
            "always enforced",
        ),
        (
            {"screening": {"modes": {"static_block": "maybe"}}},
            "screening.modes.static_block",
            "expected one of",
        ),
        ({"sip": {"host": "0.0.0.0"}}, "sip.advertised_host", "required"),
        ({"sip": {"workers": 65}}, "sip.workers", "from 0 to 64"),
        ({"sip": {"worker_balance": "random"}}, "sip.worker_balance", "expected one of"),
        (
            {"sip": {"port": 5061, "workers": 4, "worker_port_base": 5060}},
            "sip.worker_port_base",
            "include sip.port",
        ),
        ({"sip": {"overload_backlog": -1}}, "sip.overload_backlog", "from 0"),
    ],
)
def test_errors_name_the_key(data: dict[str, object], key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert info.value.key == key and problem in info.value.problem


def test_bad_config_stops_startup_with_one_line_and_no_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    for text, needle in (
        ('[sip]\nport = "abc"\n', "sip.port: expected an integer"),
        ("[sip\n", "not valid TOML"),
        ("[screening]\nlabel_text = 5\n", "screening.label_text"),
    ):
        bad.write_text(text)
        proc = subprocess.run(
            [sys.executable, "-m", "proxy", "serve", "--config", str(bad)],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=ROOT,
        )
        assert proc.returncode == 2
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0] and "Traceback" not in proc.stderr


def test_missing_file_is_one_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "proxy", "check-config", str(tmp_path / "nope.toml")],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )
    assert (
        proc.returncode == 2 and "cannot read" in proc.stderr and len(proc.stderr.splitlines()) == 1
    )


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"redress": {"tel": '+12125550142;x"\r\nX-Evil: 1'}}, "redress.tel"),
        ({"redress": {"url": "https://example.net/a\\"}}, "redress.url"),
        ({"redress": {"url": "https://example.net/a;b"}}, "redress.url"),
        ({"redress": {"email": "a b@example.net"}}, "redress.email"),
        ({"screening": {"verdict_header": "From"}}, "screening.verdict_header"),
        ({"sip": {"advertised_host": "proxy example"}}, "sip.advertised_host"),
        ({"switches": [{"host": "::1"}]}, "switches[0].host"),
    ],
)
def test_values_that_would_inject_or_break_messages_are_refused(
    data: dict[str, object], key: str
) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert info.value.key == key


def test_redress_contacts_that_are_fine() -> None:
    cfg = parse_config(
        {
            "redress": {
                "tel": "+1-800-555-0100",
                "email": "redress@example.net",
                "url": "https://r.example.net/x?y=1",
            }
        }
    )
    assert cfg.redress.tel == "+1-800-555-0100"


@pytest.mark.parametrize(
    ("subscribers", "key", "problem"),
    [
        ({"backend": "mysql"}, "subscribers.backend", "expected one of sqlite, postgresql"),
        ({"backend": "postgresql"}, "subscribers.dsn", "needs a connection string"),
        ({"backend": "postgresql", "dsn": "  "}, "subscribers.dsn", "needs a connection string"),
        ({"dsn": "host=db"}, "subscribers.dsn", 'only for backend = "postgresql"'),
        ({"dsn_file": "/etc/dsn"}, "subscribers.dsn_file", 'only for backend = "postgresql"'),
        (
            {"backend": "postgresql", "dsn": "host=db", "dsn_file": "/etc/dsn"},
            "subscribers.dsn_file",
            "not both",
        ),
        (
            {"backend": "postgresql", "dsn": "host=db password=hunter2 port"},
            "subscribers.dsn",
            "not a valid libpq connection string",
        ),
        (
            {"backend": "postgresql", "dsn_file": "/nonexistent/dsn"},
            "subscribers.dsn_file",
            "cannot read /nonexistent/dsn",
        ),
    ],
)
def test_subscriber_store_settings_are_checked(
    subscribers: dict[str, object], key: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"subscribers": subscribers})
    assert info.value.key == key and problem in info.value.problem, info.value
    assert "hunter2" not in str(info.value)  # a connection string may hold a password


def test_subscriber_store_on_postgresql(tmp_path: Path) -> None:
    dsn = "host=db.example.net dbname=shield user=shield password=hunter2"
    cfg = parse_config({"subscribers": {"backend": "postgresql", "dsn": dsn}}).subscribers
    assert (cfg.backend, cfg.dsn, cfg.dsn_file) == ("postgresql", dsn, "")
    assert "hunter2" not in repr(cfg)  # logged configs keep the password out
    secret = tmp_path / "dsn"
    secret.write_text("postgresql://shield@db.example.net/shield\n")
    cfg = parse_config({"subscribers": {"backend": "postgresql", "dsn_file": str(secret)}})
    assert cfg.subscribers.dsn_file == str(secret) and cfg.subscribers.dsn == ""
    secret.write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        parse_config({"subscribers": {"backend": "postgresql", "dsn_file": str(secret)}})
    assert parse_config({}).subscribers.backend == "sqlite"


def test_admin_token_from_a_file_never_in_the_repr(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("a-token-of-24-characters\n")
    cfg = parse_config({"admin": {"token_file": str(secret)}})
    assert cfg.admin.token == "a-token-of-24-characters"
    assert "a-token-of-24" not in repr(cfg)
    with pytest.raises(ConfigError, match="not both"):
        parse_config({"admin": {"token_file": str(secret), "token": "x" * 20}})
    with pytest.raises(ConfigError, match="cannot read"):
        parse_config({"admin": {"token_file": str(tmp_path / "missing")}})
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        parse_config({"admin": {"token_file": str(tmp_path / "empty")}})
    (tmp_path / "short").write_text("short\n")
    with pytest.raises(ConfigError, match="16 characters"):
        parse_config({"admin": {"token_file": str(tmp_path / "short")}})
