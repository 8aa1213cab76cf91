"""Peer-level actions on the call path (see proxy.gateway.actions).

Two stages, both named "peer":

* the gate, right after the emergency check: a blocked peer's calls get
  603, like other network blocks; a throttled peer's calls past its rate get
  503 (a token bucket per peer, the clock is the call's arrival time).
  Emergency calls have already passed by then, so they are never touched.
* the label, just before the reputation score: a labelled (or throttled)
  peer's calls carry the label, unless a check before it decided already
  (a list hit still blocks) or the reputation score asks for more (it is
  consulted here, so a block it would give still happens). Placed first in
  the chain, a label would have hidden every block after it.

Either stage reads one memoised address lookup and one dict per call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from ..gateway.actions import PeerActions, throttle_burst
from ..sip.identity import CallFacts
from .pipeline import Check, Stage
from .verdict import Action, Mode, Verdict

NAME = "peer"
BLOCKED, THROTTLED, LABELLED = "peer-blocked", "peer-throttled", "peer-labelled"
PEER_REASONS = frozenset((BLOCKED, THROTTLED, LABELLED))
PEER_BLOCKED = Verdict(Action.BLOCK, 100, (BLOCKED,))
PEER_THROTTLED = Verdict(Action.BLOCK, 0, (THROTTLED,), sip_status=503)
LABEL_SCORE = 70  # as the static label list


class PeerGateCheck:
    name = NAME

    def __init__(self, actions: PeerActions) -> None:
        self.actions = actions
        self.name_of = actions.directory.name_of

    def check(self, call: CallFacts) -> Verdict | None:
        actions = self.actions
        name = self.name_of(call.source)
        setting = actions.enforced.get(name)
        if setting is None:
            return None
        action = setting.action
        if action == "block":
            return PEER_BLOCKED
        if action == "throttle":
            cps = setting.throttle_cps
            if not actions.buckets.take(name, call.received, cps, throttle_burst(cps)):
                actions.throttled[name] += 1
                return PEER_THROTTLED
        return None


class PeerLabelCheck:
    name = NAME

    def __init__(self, actions: PeerActions, scored: Check | None = None) -> None:
        self.actions = actions
        self.name_of = actions.directory.name_of
        self.scored = scored  # the reputation check, when it is enforced

    def check(self, call: CallFacts) -> Verdict | None:
        setting = self.actions.enforced.get(self.name_of(call.source))
        if setting is None:
            return None
        inner = self.scored.check(call) if self.scored is not None else None
        if inner is None:
            return Verdict(Action.LABEL, LABEL_SCORE, (LABELLED,))
        if inner.action is not Action.PASS:  # the score flags it anyway: its verdict, marked
            return replace(inner, reasons=(*inner.reasons, LABELLED))
        return Verdict(
            Action.LABEL, max(inner.score, LABEL_SCORE), (LABELLED, *inner.reasons), inner.observed
        )


@dataclass(frozen=True, slots=True)
class PeerStages:
    """What build_pipeline needs to place the two stages."""

    actions: PeerActions
    mode: Mode = Mode.ENFORCE  # [peer_policy] mode: "observe" is a dry run

    def arrange(self, stages: Sequence[Stage]) -> list[Stage]:
        """The chain with the gate right after the emergency check and the
        label just before the reputation check (or last, without one)."""
        out = list(stages)
        names = [s.check.name for s in out]
        gate_at = names.index("emergency") + 1 if "emergency" in names else 0
        out.insert(gate_at, Stage(PeerGateCheck(self.actions), self.mode))
        names.insert(gate_at, NAME)
        at = names.index("reputation") if "reputation" in names else len(out)
        scored = out[at].check if at < len(out) and out[at].mode is Mode.ENFORCE else None
        out.insert(at, Stage(PeerLabelCheck(self.actions, scored), self.mode))
        return out
