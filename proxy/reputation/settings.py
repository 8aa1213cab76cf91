"""The ``[reputation]`` config section: thresholds, policy, weights, modes, bounds."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config_table import MODES, ConfigError, Table

# Each signal is one reason code. Default weights are points out of 100; a
# negative weight is a credit. What each one measures is in README
# "Reputation", and in SIGNAL_HELP for `explain`.
DEFAULT_WEIGHTS: dict[str, int] = {
    "blocklist": 100,
    "dno-spoofed": 100,
    "invalid-number": 100,
    "complaints": 70,
    "anonymous": 30,
    "stir-failed": 40,
    "attestation-a": -20,
    "attestation-b": 5,
    "attestation-c": 15,
    "unattested": 5,
    "call-rate": 30,
    "fan-out": 15,
    "sequential": 40,
    "short-calls": 35,
    "low-asr": 25,
    "neighbour-spoofing": 35,
    "snowshoe": 45,
    "peer-short-calls": 20,
    "peer-low-asr": 10,
}
SIGNALS = tuple(DEFAULT_WEIGHTS)
POLICIES = ("off", "label", "block-high-confidence", "block-all-suspected")


@dataclass(frozen=True, slots=True)
class ReputationConfig:
    enabled: bool = True
    label_at: int = 60
    block_at: int = 90
    # what applies to a callee with no subscriber policy of their own
    carrier_policy: str = "label"
    short_call_seconds: float = 10.0
    complaint_half_life_days: float = 90.0
    # memory bounds: least recently seen entries are evicted beyond these
    max_numbers: int = 100_000
    max_ranges: int = 20_000
    max_peers: int = 1024
    max_calls: int = 100_000
    # sources whose verstat is believed: the carrier's own verification
    # service or SBC in front of the proxy. A peer could write any verstat on
    # its own calls, so from anyone else it is ignored.
    verstat_from: tuple[str, ...] = ()
    weights: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    modes: dict[str, str] = field(default_factory=lambda: dict.fromkeys(SIGNALS, "enforce"))


def parse_reputation(t: Table) -> ReputationConfig:
    d = ReputationConfig()
    wt = t.sub("weights")
    weights = {code: wt.integer(code, DEFAULT_WEIGHTS[code], -100, 100) for code in SIGNALS}
    wt.done()
    mt = t.sub("modes")
    modes = {code: mt.string(code, "enforce", MODES) for code in SIGNALS}
    mt.done()
    cfg = ReputationConfig(
        enabled=t.boolean("enabled", d.enabled),
        label_at=t.integer("label_at", d.label_at, 1, 100),
        block_at=t.integer("block_at", d.block_at, 1, 100),
        carrier_policy=t.string("carrier_policy", d.carrier_policy, POLICIES),
        short_call_seconds=t.number("short_call_seconds", d.short_call_seconds, 1, 600),
        complaint_half_life_days=t.number(
            "complaint_half_life_days", d.complaint_half_life_days, 1, 3650
        ),
        max_numbers=t.integer("max_numbers", d.max_numbers, 100, 10_000_000),
        max_ranges=t.integer("max_ranges", d.max_ranges, 100, 1_000_000),
        max_peers=t.integer("max_peers", d.max_peers, 1, 100_000),
        max_calls=t.integer("max_calls", d.max_calls, 100, 10_000_000),
        verstat_from=t.networks("verstat_from", d.verstat_from),
        weights=weights,
        modes=modes,
    )
    t.done()
    if cfg.block_at < cfg.label_at:
        raise ConfigError("reputation.block_at", "must not be below reputation.label_at")
    return cfg
