"""The screening pipeline: a chain of in-memory checks, no I/O."""

from __future__ import annotations

from blocklists.slot import ArtefactSlot

from ..config import BlocklistConfig, ScreeningConfig
from ..reputation import ReputationEngine
from .checks import EmergencyCheck, NumberListCheck
from .list_checks import (
    BlocklistAllowCheck,
    BlocklistCheck,
    DnoCheck,
    InvalidNumberCheck,
    PrefixRuleCheck,
)
from .peer_check import PeerStages
from .pipeline import Check, Pipeline, Screening, Stage
from .reputation_check import ReputationCheck
from .subscriber_check import SubscriberCheck
from .verdict import CLEAN, Action, Mode, Verdict

__all__ = [
    "CLEAN",
    "Action",
    "Check",
    "EmergencyCheck",
    "Mode",
    "NumberListCheck",
    "Pipeline",
    "ReputationCheck",
    "Screening",
    "Stage",
    "SubscriberCheck",
    "Verdict",
    "build_pipeline",
]


def build_pipeline(
    cfg: ScreeningConfig,
    slot: ArtefactSlot | None = None,
    lists: BlocklistConfig | None = None,
    reputation: ReputationEngine | None = None,
    subscribers: SubscriberCheck | None = None,
    telemarketing: Stage | None = None,
    peers: PeerStages | None = None,
) -> Pipeline:
    """The chain, in order: emergency, the subscriber's own lists, allow
    lists, blocks, labels, then the reputation score, acted on per the
    subscriber's policy. Without a reputation engine an FTC complaint labels."""
    slot = slot or ArtefactSlot()
    lists = lists or BlocklistConfig()
    ftc_action = lists.ftc_action
    if reputation is None and ftc_action == "reputation":
        ftc_action = "label"
    checks: list[Check] = [
        EmergencyCheck(cfg.emergency_numbers, cfg.psap_numbers | cfg.government_numbers),
        *([subscribers] if subscribers is not None else []),
        NumberListCheck("static_allow", cfg.allow, Verdict(Action.PASS, 0, ("allowlist",))),
        BlocklistAllowCheck(slot),
        NumberListCheck("static_block", cfg.block, Verdict(Action.BLOCK, 100, ("blocklist",))),
        DnoCheck(slot),
        InvalidNumberCheck(),
        BlocklistCheck(slot, ftc_action),
        PrefixRuleCheck(slot),
        NumberListCheck("static_label", cfg.label, Verdict(Action.LABEL, 70, ("labellist",))),
    ]
    if reputation is not None:
        policy_for = subscribers.policy_for if subscribers is not None else None
        checks.append(ReputationCheck(reputation, policy_for))
    stages = [Stage(c, Mode(cfg.modes[c.name])) for c in checks]
    if telemarketing is not None:  # [telemarketing]: right after emergency, before any allow list
        stages.insert(1, telemarketing)
    if peers is not None:  # [[peers]] actions: a gate after emergency, a label before reputation
        stages = peers.arrange(stages)
    return Pipeline(stages)
