"""The subscriber's own choices, second only to the emergency rule: their
allow list passes a call whatever any later check says; their block list
answers 607 Unwanted (RFC 8197, a user-directed block, not analytics); with
anonymous rejection on, a withheld caller gets 433 (RFC 5079). A caller
allowed for everyone after a redress dispute passes next."""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Set as AbstractSet

from ..sip.identity import CallFacts
from ..subscribers.model import Profile
from .verdict import Action, Verdict

PERSONAL_ALLOW = Verdict(Action.PASS, 0, ("personal-allowlist",))
PERSONAL_BLOCK = Verdict(Action.BLOCK, 100, ("personal-blocklist",), sip_status=607)
ANONYMOUS_REJECTED = Verdict(Action.BLOCK, 100, ("anonymous-rejected",), sip_status=433)
REDRESS_ALLOWED = Verdict(Action.PASS, 0, ("redress-allowed",))


class SubscriberCheck:
    name = "subscriber"

    def __init__(
        self, index: Mapping[int, Profile], global_allow: AbstractSet[int] = frozenset()
    ) -> None:
        self.index = index  # the service's dict, updated in place on every write
        self.global_allow = global_allow  # callers allowed for everyone after a dispute

    def check(self, call: CallFacts) -> Verdict | None:
        caller = call.caller_key
        sub = self.index.get(call.callee_key) if call.callee_key is not None else None
        if sub is None:
            return REDRESS_ALLOWED if caller is not None and caller in self.global_allow else None
        if caller is not None and sub.allow.matches(caller):
            return PERSONAL_ALLOW  # applies even with blocking off: it only lets calls through
        if not sub.opted_in:
            return REDRESS_ALLOWED if caller is not None and caller in self.global_allow else None
        if caller is not None and sub.block.matches(caller):
            return PERSONAL_BLOCK
        if sub.reject_anonymous and (call.anonymous or call.privacy_id):
            return ANONYMOUS_REJECTED
        return REDRESS_ALLOWED if caller is not None and caller in self.global_allow else None

    def policy_for(self, callee: int | None) -> str | None:
        """The callee's own blocking policy, or None for the carrier default."""
        if callee is None:
            return None
        sub = self.index.get(callee)
        return sub.policy if sub is not None and sub.opted_in else None
