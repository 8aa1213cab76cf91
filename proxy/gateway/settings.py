"""The ``[peer_policy]`` config section: what a peer's standing in the
Robocall Mitigation Database (RMD) makes of it, and where operator
overrides and their audit trail are kept."""

from __future__ import annotations

from dataclasses import dataclass

from ..config_table import MODES, ConfigError, Table
from ..peers import MAX_CPS, PEER_ACTIONS


@dataclass(frozen=True, slots=True)
class PeerPolicyConfig:
    # an RMD export (CSV, the portal's field names as headers); "": no RMD check
    rmd_file: str = ""
    # the action for a peer whose FRN or RMD number is not in the export
    missing_from_rmd: str = "observe"
    # ... listed, but certifying no robocall mitigation (see proxy.gateway.rmd)
    not_mitigating: str = "observe"
    # ... declared without an frn or rmd, so it cannot be looked up
    unidentified: str = "observe"
    # the rate a policy-derived "throttle" admits, calls per second
    throttle_cps: float = 5.0
    # "observe": peer actions are computed and logged, never applied (a dry run)
    mode: str = "enforce"
    # SQLite file of operator overrides and their audit trail
    store: str = "var/peers.sqlite3"


def parse_peer_policy(t: Table, data_dir: str) -> PeerPolicyConfig:
    """``data_dir``: the [subscribers] data directory, where the store goes by default."""
    d = PeerPolicyConfig()
    cfg = PeerPolicyConfig(
        rmd_file=t.string("rmd_file", d.rmd_file).strip(),
        missing_from_rmd=t.string("missing_from_rmd", d.missing_from_rmd, PEER_ACTIONS),
        not_mitigating=t.string("not_mitigating", d.not_mitigating, PEER_ACTIONS),
        unidentified=t.string("unidentified", d.unidentified, PEER_ACTIONS),
        throttle_cps=t.number("throttle_cps", d.throttle_cps, 0.01, MAX_CPS),
        mode=t.string("mode", d.mode, MODES),
        store=t.string("store", f"{data_dir.rstrip('/')}/peers.sqlite3").strip(),
    )
    t.done()
    if not cfg.store:
        raise ConfigError("peer_policy.store", "expected a file path")
    return cfg
