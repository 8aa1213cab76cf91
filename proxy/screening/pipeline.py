"""The screening chain: checks in order, the first decisive one wins.

A check is a plain object with a ``name`` and one method,
``check(call) -> Verdict | None``; ``None`` means "no opinion". A check in
observe mode has its verdict recorded but the chain carries on as if it had
said nothing. A check that raises is recorded as failed and skipped (fail
open): screening must never take the proxy down or drop a call.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from ..sip.identity import CallFacts
from .verdict import CLEAN, Mode, Verdict

log = logging.getLogger("robocall_shield.screening")


class Check(Protocol):
    name: str

    def check(self, call: CallFacts) -> Verdict | None: ...


@dataclass(frozen=True, slots=True)
class Stage:
    check: Check
    mode: Mode = Mode.ENFORCE


@dataclass(frozen=True, slots=True)
class Screening:
    verdict: Verdict
    decided_by: str | None
    observed: tuple[tuple[str, Verdict], ...] = ()
    failed: tuple[str, ...] = ()


class Pipeline:
    def __init__(self, stages: Sequence[Stage]) -> None:
        self.stages = tuple(stages)

    def screen(self, call: CallFacts) -> Screening:
        observed: list[tuple[str, Verdict]] = []
        failed: list[str] = []
        for stage in self.stages:
            try:
                verdict = stage.check.check(call)
            except Exception:
                log.exception(
                    "check %s failed on Call-ID %s; passing", stage.check.name, call.call_id
                )
                failed.append(stage.check.name)
                continue
            if verdict is None:
                continue
            if stage.mode is Mode.OBSERVE:
                observed.append((stage.check.name, verdict))
                continue
            return Screening(verdict, stage.check.name, tuple(observed), tuple(failed))
        return Screening(CLEAN, None, tuple(observed), tuple(failed))
