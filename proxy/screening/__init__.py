"""The screening pipeline: a chain of in-memory checks, no I/O."""

from __future__ import annotations

from ..config import ScreeningConfig
from .checks import EmergencyCheck, NumberListCheck
from .pipeline import Check, Pipeline, Screening, Stage
from .verdict import CLEAN, Action, Mode, Verdict

__all__ = [
    "CLEAN",
    "Action",
    "Check",
    "EmergencyCheck",
    "Mode",
    "NumberListCheck",
    "Pipeline",
    "Screening",
    "Stage",
    "Verdict",
    "build_pipeline",
]


def build_pipeline(cfg: ScreeningConfig) -> Pipeline:
    checks: list[Check] = [
        EmergencyCheck(cfg.emergency_numbers, cfg.psap_numbers | cfg.government_numbers),
        NumberListCheck("static_allow", cfg.allow, Verdict(Action.PASS, 0, ("allowlist",))),
        NumberListCheck("static_block", cfg.block, Verdict(Action.BLOCK, 100, ("blocklist",))),
        NumberListCheck("static_label", cfg.label, Verdict(Action.LABEL, 70, ("labellist",))),
    ]
    return Pipeline([Stage(c, Mode(cfg.modes[c.name])) for c in checks])
