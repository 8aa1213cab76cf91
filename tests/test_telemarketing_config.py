"""[telemarketing]: trunks must be declared peers, hours a preset or an
explicit window, and every mistake one error naming the key."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.config_table import ConfigError
from proxy.telemarketing.settings import TelemarketingConfig
from tests.conftest import make_config

PEERS = [
    {"name": "tm-dialer", "addresses": ["198.51.100.0/28"]},
    {"name": "carrier-a", "addresses": ["203.0.113.0/28"]},
]


def parse(**section: Any) -> TelemarketingConfig:
    return make_config(peers=PEERS, telemarketing=section).telemarketing


def error(**section: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse(**section)
    return info.value


def test_defaults_are_off_with_the_tsr_window() -> None:
    cfg = make_config().telemarketing
    assert not cfg.enabled and cfg.trunks == frozenset()
    assert (cfg.hours, cfg.start, cfg.end, cfg.mode) == ("tsr", 8 * 60, 21 * 60, "enforce")


def test_presets_and_an_explicit_window() -> None:
    tsr = parse(trunks=["tm-dialer"])
    assert tsr.enabled and tsr.trunks == {"tm-dialer"} and (tsr.start, tsr.end) == (480, 1260)
    dnd = parse(trunks=["tm-dialer"], hours="dnd", mode="observe")
    assert (dnd.hours, dnd.start, dnd.end, dnd.mode) == ("dnd", 540, 1020, "observe")
    own = parse(trunks=["tm-dialer", "carrier-a"], start="09:30", end="24:00")
    assert (own.hours, own.start, own.end) == ("custom", 570, 1440)
    assert own.trunks == {"tm-dialer", "carrier-a"}


def test_an_unknown_trunk_names_the_key_and_the_declared_peers() -> None:
    exc = error(trunks=["tm-dialer", "tm-dialr"])
    assert exc.key == "telemarketing.trunks[1]"
    assert "'tm-dialr' is not a [[peers]] name" in str(exc) and "carrier-a, tm-dialer" in str(exc)


def test_a_trunk_without_any_peers_declared() -> None:
    with pytest.raises(ConfigError) as info:
        make_config(telemarketing={"trunks": ["tm-dialer"]})
    assert info.value.key == "telemarketing.trunks[0]" and "none declared" in str(info.value)


@pytest.mark.parametrize(
    ("section", "key", "words"),
    [
        ({"hours": "night"}, "telemarketing.hours", "expected one of tsr, dnd"),
        ({"hours": "tsr", "start": "08:00", "end": "20:00"}, "telemarketing.hours", "not both"),
        ({"start": "08:00"}, "telemarketing.end", "give both"),
        ({"end": "20:00"}, "telemarketing.start", "give both"),
        ({"start": "8:00", "end": "20:00"}, "telemarketing.start", "HH:MM"),
        ({"start": "08:60", "end": "20:00"}, "telemarketing.start", "HH:MM"),
        ({"start": "08:00", "end": "24:01"}, "telemarketing.end", "HH:MM"),
        ({"start": "08:00", "end": "+1:00"}, "telemarketing.end", "HH:MM"),
        ({"start": 8, "end": "20:00"}, "telemarketing.start", "expected a string"),
        ({"start": "21:00", "end": "08:00"}, "telemarketing.end", "later in the day"),
        ({"start": "08:00", "end": "08:00"}, "telemarketing.end", "later in the day"),
        ({"mode": "log"}, "telemarketing.mode", "enforce, observe"),
        ({"trunks": "tm-dialer"}, "telemarketing.trunks", "list of strings"),
        ({"watch_interval": -1}, "telemarketing.watch_interval", "from 0.0"),
        ({"dnc": "/x"}, "telemarketing.dnc", "unknown key"),
    ],
)
def test_bad_values_name_their_key(section: dict[str, Any], key: str, words: str) -> None:
    exc = error(trunks=["tm-dialer"], **section) if "trunks" not in section else error(**section)
    assert exc.key == key and words in str(exc)


def test_a_dnc_list_without_trunks_is_refused() -> None:
    exc = error(dnc_dir="/var/lib/dnc")
    assert exc.key == "telemarketing.dnc_dir" and "set trunks" in str(exc)
