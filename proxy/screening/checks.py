"""The first checks of the chain: emergency calls, then the static lists."""

from __future__ import annotations

from collections.abc import Iterable

from ..sip.identity import CallFacts
from .verdict import Action, Verdict

EMERGENCY = Verdict(Action.PASS, 0, ("emergency",))


class EmergencyCheck:
    """911, 933, NG911 service URNs, configured PSAP and government numbers
    always pass untouched; so do callbacks from a PSAP (FCC call-blocking
    orders: never block emergency calls or emergency callbacks)."""

    name = "emergency"

    def __init__(self, dial_strings: Iterable[str], critical: Iterable[int]) -> None:
        self.dial_strings = frozenset(dial_strings)
        self.critical = frozenset(critical)

    def check(self, call: CallFacts) -> Verdict | None:
        if call.emergency_urn:
            return EMERGENCY
        callee = call.callee
        if callee is not None and callee.lstrip("+") in self.dial_strings:
            return EMERGENCY
        if call.callee_key in self.critical or call.caller_key in self.critical:
            return EMERGENCY
        return None


class NumberListCheck:
    """A static list of caller numbers from the config file."""

    def __init__(self, name: str, numbers: Iterable[int], verdict: Verdict) -> None:
        self.name = name
        self.numbers = frozenset(numbers)
        self.verdict = verdict

    def check(self, call: CallFacts) -> Verdict | None:
        if call.caller_key is not None and call.caller_key in self.numbers:
            return self.verdict
        return None
