"""The last check of the chain: the reputation score, turned into an action
by the callee's blocking policy (the carrier's default until the callee
subscribes to a policy of their own)."""

from __future__ import annotations

from collections.abc import Callable

from ..reputation.engine import ReputationEngine
from ..sip.identity import CallFacts
from .verdict import Action, Verdict

PolicyLookup = Callable[[int | None], str | None]


def decide(policy: str, score: int, label_at: int, block_at: int) -> Action:
    """Analytics blocks only for a policy that asks for them; everyone else
    gets at most a label."""
    if policy == "off" or score < label_at:
        return Action.PASS
    if policy == "block-all-suspected" or (policy == "block-high-confidence" and score >= block_at):
        return Action.BLOCK
    return Action.LABEL


class ReputationCheck:
    name = "reputation"

    def __init__(self, engine: ReputationEngine, policy_for: PolicyLookup | None = None) -> None:
        self.engine = engine
        self.policy_for = policy_for

    def check(self, call: CallFacts) -> Verdict | None:
        engine = self.engine
        a = engine.assess(call)
        if not a.score and not a.observed:
            return None
        cfg = engine.cfg
        policy = (self.policy_for(call.callee_key) if self.policy_for else None) or (
            cfg.carrier_policy
        )
        action = decide(policy, a.score, cfg.label_at, cfg.block_at)
        return Verdict(action, a.score, a.reasons, a.observed)
