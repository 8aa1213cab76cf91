"""One number's traffic figures pooled from every worker of a node, for
`explain` (the admin path only: nothing here runs per INVITE).

Each worker keeps its own engine. A sibling sends the raw counters of the
caller and of its thousands-block (``traffic_state``); the first worker adds
them, bucket by bucket, to a copy of its own, into a throw-away engine that
holds just those two entries, and scores that with the code explain always
uses. As with ``Traffic.merge`` for [cluster], a count goes into the bucket
it belongs to, or is dropped once that bucket has left the window. Workers
on one machine share the monotonic clock the engines run on, so their
buckets line up. Callee bitmaps are OR-ed, which gives exactly the bitmap
one engine fed every call would hold; near-sequential counts are summed,
each found within one worker's own stream of calls.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from ..versioned_json import load_versioned
from .engine import CALLER_FAN_BITS, RANGE_FAN_BITS, ReputationEngine
from .traffic import Traffic

# (cur, prev) counter pairs, by the attribute's prefix on Traffic, and the
# bucket each lives in: 0 the second, 1 the minute, 2 the hour
PAIRS = (("s", 0), ("m", 1), ("h", 2), ("fan", 2), ("seq", 2),
         ("fin", 2), ("ans", 2), ("end", 2), ("short", 2))  # fmt: skip
_FAN = 3  # the index of the callee bitmaps among PAIRS: OR-ed, not added
_WIDTHS = (1, 60, 3600)
_MAX_COUNT = 10**12
STATE_FORMAT = 1


@dataclass(frozen=True, slots=True)
class TrafficState:
    """One Traffic's counters: its second (the minute and hour follow from
    it) and each pair of PAIRS."""

    sec: int
    pairs: tuple[tuple[int, int], ...]


@dataclass(frozen=True, slots=True)
class NumberTraffic:
    """What one worker holds for a number: its caller and range counters."""

    caller: TrafficState | None
    range: TrafficState | None


def traffic_state(t: Traffic) -> TrafficState:
    return TrafficState(
        t.sec, tuple((getattr(t, p + "_cur"), getattr(t, p + "_prev")) for p, _ in PAIRS)
    )


def number_traffic(engine: ReputationEngine, key: int) -> NumberTraffic:
    caller, rng = engine.callers.get(key), engine.ranges.get(key // 1000)
    return NumberTraffic(
        traffic_state(caller) if caller is not None else None,
        traffic_state(rng) if rng is not None else None,
    )


def encode(traffic: NumberTraffic) -> bytes:
    def flat(s: TrafficState | None) -> list[int] | None:
        return None if s is None else [s.sec, *(n for pair in s.pairs for n in pair)]

    doc = {"v": STATE_FORMAT, "caller": flat(traffic.caller), "range": flat(traffic.range)}
    return json.dumps(doc, separators=(",", ":")).encode()


def decode(data: bytes) -> NumberTraffic:
    """What ``encode`` wrote; ValueError for anything else."""
    doc = load_versioned(data, STATE_FORMAT, "number traffic")
    if set(doc) != {"v", "caller", "range"}:
        raise ValueError("expected v, caller and range")
    return NumberTraffic(
        _state(doc["caller"], CALLER_FAN_BITS), _state(doc["range"], RANGE_FAN_BITS)
    )


def _state(raw: object, fan_bits: int) -> TrafficState | None:
    if raw is None:
        return None
    size = 1 + 2 * len(PAIRS)
    if not (isinstance(raw, list) and len(raw) == size and all(type(n) is int for n in raw)):
        raise ValueError(f"a traffic state is a list of {size} integers")
    sec, *counts = raw
    if sec < 0 or any(n < 0 for n in counts):
        raise ValueError("negative counter")
    pairs = tuple((counts[2 * k], counts[2 * k + 1]) for k in range(len(PAIRS)))
    for k, pair in enumerate(pairs):
        if max(pair) >= (1 << fan_bits if k == _FAN else _MAX_COUNT):
            raise ValueError(f"{PAIRS[k][0]} out of range")
    return TrafficState(sec, pairs)


def pool(states: Sequence[TrafficState], at: int) -> TrafficState:
    """The states added up as one Traffic rolled to second ``at`` (no
    earlier than any of them) would hold them."""
    sums = [[0, 0] for _ in PAIRS]
    targets = [at // w for w in _WIDTHS]
    for state in states:
        own = [state.sec // w for w in _WIDTHS]
        for k, (_, level) in enumerate(PAIRS):
            cur, prev = state.pairs[k]
            into = sums[k]
            if own[level] == targets[level]:
                shifted = (cur, prev)
            elif own[level] == targets[level] - 1:
                shifted = (0, cur)  # its current bucket is the previous one now
            else:
                continue  # out of the window
            if k == _FAN:
                into[0] |= shifted[0]
                into[1] |= shifted[1]
            else:
                into[0] += shifted[0]
                into[1] += shifted[1]
    return TrafficState(at, tuple((cur, prev) for cur, prev in sums))


def _fill(t: Traffic, state: TrafficState) -> None:
    for (prefix, _), (cur, prev) in zip(PAIRS, state.pairs, strict=True):
        setattr(t, prefix + "_cur", cur)
        setattr(t, prefix + "_prev", prev)


def pooled_engine(
    engine: ReputationEngine, key: int, others: Sequence[NumberTraffic], now: float
) -> tuple[ReputationEngine, float]:
    """A throw-away engine with ``engine``'s settings and lists, holding the
    number's and its range's counters summed over ``engine`` and ``others``,
    and the time to read it at (``now``, or a sibling's later second)."""
    mine = number_traffic(engine, key)
    callers = [s for s in (mine.caller, *(o.caller for o in others)) if s is not None]
    ranges = [s for s in (mine.range, *(o.range for o in others)) if s is not None]
    latest = max((s.sec for s in (*callers, *ranges)), default=int(now))
    now = max(now, float(latest))
    view = ReputationEngine(engine.cfg, engine.slot)
    view.wall_offset = engine.wall_offset
    if callers:
        _fill(view.callers.touch(key, now), pool(callers, int(now)))
    if ranges:
        _fill(view.ranges.touch(key // 1000, now), pool(ranges, int(now)))
    return view, now
