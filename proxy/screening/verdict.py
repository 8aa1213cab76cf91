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


CLEAN = Verdict(Action.PASS, 0, ())
