"""`explain`: a number's current score, broken down by signal, with the
rolling figures behind it. Served by the admin API; the CLI asks the proxy.
With several workers the first one adds its siblings' counters for the
number (``explain_pooled``, see pooled.py) before scoring."""

from __future__ import annotations

from collections.abc import Sequence

from ..screening.reputation_check import decide
from ..sip.numbers import digits_of, e164_key
from .engine import ReputationEngine
from .pooled import NumberTraffic, pooled_engine
from .settings import POLICIES
from .traffic import Traffic

SIGNAL_HELP = {
    "blocklist": "on an operator or plain blocklist",
    "dno-spoofed": "claims a Do-Not-Originate number",
    "invalid-number": "claims a number that cannot exist",
    "complaints": "FTC Do Not Call complaints, decayed by age",
    "anonymous": "withheld caller with no network identity",
    "stir-failed": "STIR/SHAKEN verification failed upstream",
    "attestation-a": "verified full (A) attestation",
    "attestation-b": "partial (B) attestation",
    "attestation-c": "gateway (C) attestation",
    "unattested": "no attestation known",
    "call-rate": "calls per second, minute or hour",
    "fan-out": "distinct callees in the last hour",
    "sequential": "callees dialled in (near-)sequence",
    "short-calls": "share of answered calls that were short",
    "low-asr": "low answer-seizure ratio",
    "neighbour-spoofing": "caller's NPA-NXX matches the callee's, calling many",
    "snowshoe": "many numbers of one thousands-block with short or unanswered calls",
    "peer-short-calls": "the upstream peer's share of short calls",
    "peer-low-asr": "the upstream peer's answer-seizure ratio",
}
PER_CALL = ("anonymous", "stir-failed", "attestation-*", "unattested", "neighbour-spoofing",
            "peer-*", "sequential (the peer part)")  # fmt: skip


def explain_number(
    engine: ReputationEngine, number: str, now: float
) -> tuple[int, dict[str, object]]:
    key = e164_key(number)
    if key is None:
        return 400, {"error": f"{number[:40]!r} is not a telephone number (E.164 or NANP)"}
    assessment = engine.assess_number(digits_of(number), key, now)
    cfg = engine.cfg
    signals = [
        {
            "signal": code,
            "points": round(points, 1),
            "weight": engine.weights[code],
            "strength": round(points / engine.weights[code], 3),
            "mode": cfg.modes[code],
            "what": SIGNAL_HELP[code],
        }
        for code, points in assessment.points
    ]
    caller, rng = engine.callers.get(key), engine.ranges.get(key // 1000)
    return 200, {
        "number": f"+{key}",
        "score": assessment.score,
        "reasons": list(assessment.reasons),
        "observed": list(assessment.observed),
        "signals": signals,
        "action_by_policy": {
            p: decide(p, assessment.score, cfg.label_at, cfg.block_at).value for p in POLICIES
        },
        "carrier_policy": cfg.carrier_policy,
        "traffic": figures(caller, now, "distinct_callees") if caller else None,
        "thousands_block": figures(rng, now, "distinct_callers") if rng else None,
        "not_included": "per-call signals: " + ", ".join(PER_CALL),
    }


def explain_pooled(
    engine: ReputationEngine, number: str, others: Sequence[NumberTraffic], now: float
) -> tuple[int, dict[str, object]]:
    """``explain_number`` over ``engine``'s counters for the number plus
    ``others`` (the sibling workers'), summed into a throw-away copy."""
    key = e164_key(number)
    if key is not None and others:
        engine, now = pooled_engine(engine, key, others, now)
    return explain_number(engine, number, now)


def figures(t: Traffic, now: float, distinct_name: str) -> dict[str, float | None]:
    per_s, per_m, per_h = t.calls(now)
    finals, answered, ended, short = t.outcomes(now)
    return {
        "calls_last_second": round(per_s, 2),
        "calls_last_minute": round(per_m, 2),
        "calls_last_hour": round(per_h, 2),
        distinct_name + "_last_hour": round(t.distinct(now), 1),
        "near_sequential_last_hour": round(t.sequential(now), 1),
        "answer_seizure_ratio": round(answered / finals, 3) if finals else None,
        "short_call_share": round(short / ended, 3) if ended else None,
    }
