"""What screening decides about one call."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Action(enum.Enum):
    PASS = "pass"
    LABEL = "label"
    BLOCK = "block"


class Mode(enum.Enum):
    ENFORCE = "enforce"
    OBSERVE = "observe"


@dataclass(frozen=True, slots=True)
class Verdict:
    action: Action
    score: int
    reasons: tuple[str, ...]
    observed: tuple[str, ...] = ()  # reasons computed in observe mode: logged, not scored
    # a BLOCK's answer: 603+ for analytics and network blocks (ATIS-1000099),
    # 607 Unwanted for a subscriber's own block (RFC 8197), 433 for anonymity
    sip_status: int = 603


CLEAN = Verdict(Action.PASS, 0, ())
