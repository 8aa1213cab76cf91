"""[[peers]] frn, rmd, rmd_role, action and throttle_cps, and [peer_policy]:
what parses, and the error each mistake gets."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.config import parse_config
from proxy.config_table import ConfigError
from proxy.peers import PeerConfig

ADDR = ["198.51.100.0/28"]


def peer(**kw: Any) -> PeerConfig:
    (p,) = parse_config({"peers": [{"name": "gw", "addresses": ADDR, **kw}]}).peers
    return p


def peer_error(**kw: Any) -> str:
    with pytest.raises(ConfigError) as info:
        peer(**kw)
    return str(info.value)


def test_a_peer_with_its_filings_and_an_action() -> None:
    p = peer(frn="0099900101", rmd="rmd0099001", rmd_role="gateway", action="throttle",
             throttle_cps=2.5)  # fmt: skip
    assert (p.frn, p.rmd, p.rmd_role, p.action, p.throttle_cps) == (
        "0099900101", "RMD0099001", "gateway", "throttle", 2.5,
    )  # fmt: skip


def test_the_defaults_observe_and_identify_nothing() -> None:
    p = peer()
    assert (p.frn, p.rmd, p.rmd_role, p.action, p.throttle_cps) == ("", "", "any", "observe", 0)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"frn": 99900101}, "peers[0].frn: write the FRN as a quoted string"),
        ({"frn": "99900101"}, "peers[0].frn: expected 10 digits"),
        ({"frn": "00999001O1"}, "peers[0].frn: expected 10 digits"),
        ({"rmd": "RMD12345"}, "peers[0].rmd: expected RMD and 7 digits"),
        ({"rmd": 12345}, "peers[0].rmd: expected a string"),
        ({"action": "drop"}, "peers[0].action: expected one of observe, label, throttle, block"),
        ({"action": "throttle"}, 'peers[0].throttle_cps: action "throttle" needs a rate above 0'),
        ({"action": "throttle", "throttle_cps": -1}, "peers[0].throttle_cps: expected a number"),
        ({"throttle_cps": "5"}, "peers[0].throttle_cps: expected a number"),
        ({"rmd_role": "carrier"}, "peers[0].rmd_role: expected one of any, voice, gateway"),
        ({"frm": "0099900101"}, "peers[0].frm: unknown key"),
    ],
)
def test_each_mistake_names_its_key(kw: dict[str, Any], message: str) -> None:
    assert peer_error(**kw).startswith(message)


def test_peer_policy_defaults_put_the_store_beside_the_subscribers() -> None:
    cfg = parse_config({"subscribers": {"data_dir": "/srv/shield"}})
    policy = cfg.peer_policy
    assert policy.store == "/srv/shield/peers.sqlite3"
    assert (policy.missing_from_rmd, policy.not_mitigating, policy.unidentified) == (
        "observe", "observe", "observe",
    )  # fmt: skip
    assert policy.rmd_file == "" and policy.mode == "enforce"


def test_peer_policy_settings_parse() -> None:
    policy = parse_config(
        {"peer_policy": {"rmd_file": "/data/rmd.csv", "missing_from_rmd": "block",
                         "not_mitigating": "throttle", "unidentified": "label",
                         "throttle_cps": 3, "mode": "observe", "store": "/x/p.db"}}
    ).peer_policy  # fmt: skip
    assert policy.rmd_file == "/data/rmd.csv"
    assert (policy.missing_from_rmd, policy.not_mitigating, policy.unidentified) == (
        "block", "throttle", "label",
    )  # fmt: skip
    assert (policy.throttle_cps, policy.mode, policy.store) == (3.0, "observe", "/x/p.db")


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"missing_from_rmd": "reject"}, "peer_policy.missing_from_rmd: expected one of observe"),
        ({"not_mitigating": 1}, "peer_policy.not_mitigating: expected a string"),
        ({"throttle_cps": 0}, "peer_policy.throttle_cps: expected a number from 0.01"),
        ({"mode": "dry-run"}, "peer_policy.mode: expected one of enforce, observe"),
        ({"store": " "}, "peer_policy.store: expected a file path"),
        ({"rmd": "x.csv"}, "peer_policy.rmd: unknown key"),
    ],
)
def test_peer_policy_mistakes(section: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"peer_policy": section})
    assert str(info.value).startswith(message)
