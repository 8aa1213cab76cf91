"""Checks backed by the blocklist artefact: allow list, DNO, invalid numbers,
the exact blocklist and prefix rules. All in memory; a Bloom miss costs a few
hundred nanoseconds, a hit is confirmed in the exact store before any BLOCK."""

from __future__ import annotations

from blocklists.nanp import invalid_caller
from blocklists.slot import ArtefactSlot
from blocklists.sources import Flag
from blocklists.store import Artefact

from ..sip.identity import CallFacts
from .verdict import Action, Verdict

ALLOWED = Verdict(Action.PASS, 0, ("operator-allowlist",))
DNO = Verdict(Action.BLOCK, 100, ("dno-spoofed",))
INVALID = Verdict(Action.BLOCK, 100, ("invalid-number",))
OPERATOR_BLOCK = Verdict(Action.BLOCK, 100, ("operator-blocklist",))
LISTED = Verdict(Action.BLOCK, 100, ("blocklist",))
PREFIX_BLOCK = Verdict(Action.BLOCK, 100, ("prefix-rule",))
PREFIX_LABEL = Verdict(Action.LABEL, 70, ("prefix-rule",))


class _ArtefactCheck:
    """A check on the caller's key against the artefact in use; no opinion
    while no artefact is loaded or the caller has no number."""

    name = ""

    def __init__(self, slot: ArtefactSlot) -> None:
        self.slot = slot

    def check(self, call: CallFacts) -> Verdict | None:
        art = self.slot.current
        if art is None or call.caller_key is None:
            return None
        return self.judge(art, call.caller_key)

    def judge(self, art: Artefact, key: int) -> Verdict | None:
        raise NotImplementedError


class BlocklistAllowCheck(_ArtefactCheck):
    name = "blocklist_allow"

    def judge(self, art: Artefact, key: int) -> Verdict | None:
        return ALLOWED if art.allowed(key) else None


class DnoCheck(_ArtefactCheck):
    """A call claiming a Do-Not-Originate number is spoofed (FCC DNO orders)."""

    name = "dno"

    def judge(self, art: Artefact, key: int) -> Verdict | None:
        entry = art.lookup(key)
        return DNO if entry is not None and entry.flags & Flag.DNO else None


class InvalidNumberCheck:
    """No list needed: a caller number that cannot exist is blocked."""

    name = "invalid_number"

    def check(self, call: CallFacts) -> Verdict | None:
        if call.caller is None:
            return None  # anonymous is its own signal, not an invalid number
        return INVALID if invalid_caller(call.caller, call.caller_key) else None


class BlocklistCheck(_ArtefactCheck):
    """The exact store: operator and plain lists block. An FTC complaint
    alone is left to the reputation score by default (complaints are
    unverified, often spoofed, and age), or labels or blocks as configured."""

    name = "blocklist"

    def __init__(self, slot: ArtefactSlot, ftc_action: str) -> None:
        super().__init__(slot)
        self.ftc_action = {"block": Action.BLOCK, "label": Action.LABEL}.get(ftc_action)

    def judge(self, art: Artefact, key: int) -> Verdict | None:
        entry = art.lookup(key)
        if entry is None:
            return None
        if entry.flags & Flag.BLOCK:
            return OPERATOR_BLOCK
        if entry.flags & Flag.LIST:
            return LISTED
        if entry.flags & Flag.FTC and self.ftc_action is not None:
            reasons = (
                ("ftc-complaints", "ftc-robocall")
                if entry.flags & Flag.ROBOCALL
                else ("ftc-complaints",)
            )
            score = min(99, 60 + 5 * entry.complaints)
            if self.ftc_action is Action.BLOCK:
                return Verdict(Action.BLOCK, score, reasons)
            return Verdict(Action.LABEL, score, reasons)
        return None


class PrefixRuleCheck(_ArtefactCheck):
    """Longest matching prefix wins; an ``allow`` rule is an exception that
    leaves the call to the other checks."""

    name = "prefix_rule"

    def judge(self, art: Artefact, key: int) -> Verdict | None:
        rule = art.prefix_action(key)
        if rule is None or rule[1] == "allow":
            return None
        return PREFIX_BLOCK if rule[1] == "block" else PREFIX_LABEL
