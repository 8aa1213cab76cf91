"""Rolling reputation counters shared between nodes, sans-I/O.

The engine appends what this node saw to ``engine.journal`` (one tuple per
call, final response and BYE; no Redis round trip per INVITE). About once a
second the link drains it into rows, one per caller number and wall-clock
second, and publishes them; every other node adds the rows to its own
counters with ``Traffic.merge``. Each node's figures are then the cluster's,
up to one sync interval late. Near-sequential dialling and trunk figures
stay per node: they describe one node's own stream of calls.

Rows carry wall-clock seconds: each node's engine runs on its own monotonic
clock, ``engine.wall_offset`` converts.

A batch carries its sender (one process life) and a sequence number that
grows by one per batch; a batch is sent again unchanged when its XADD
failed, and a receiver applies a sender's batch only when its sequence is
newer than the last it applied (counters.py), so a timed-out XADD that
landed after all is not counted twice.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

from ..reputation.engine import CALLER_FAN_BITS, RANGE_FAN_BITS, ReputationEngine
from ..reputation.traffic import spread
from ..versioned_json import load_versioned

# what a journal entry records (its 4th field)
CALL, FINAL, ANSWERED, ENDED, SHORT = 0, 1, 2, 3, 4

# (caller key, wall second, calls, callee bitmap, finals, answered, ended, short)
Row = tuple[int, int, int, int, int, int, int, int]
FORMAT = 2  # bumped when a batch changes shape; older or newer batches are skipped
_MAX_KEY = 10**15  # E.164: at most 15 digits
_MAX_COUNT = 10**9
_MAX_FAN = 1 << CALLER_FAN_BITS


@dataclass(frozen=True, slots=True)
class Batch:
    sender: str  # the sending process life (ClusterLink.me)
    seq: int  # 1, 2, ... per sender: a repeat has a sequence already applied
    rows: tuple[Row, ...]


def drain(engine: ReputationEngine) -> list[Row]:
    """The journal since the last drain, summed per caller and second."""
    journal = engine.journal
    if not journal:
        return []
    engine.journal = []
    offset = engine.wall_offset
    sums: dict[tuple[int, int], list[int]] = {}
    for now, key, callee, kind in journal:
        k = (key, int(now + offset))
        s = sums.get(k)
        if s is None:
            s = sums[k] = [0, 0, 0, 0, 0, 0]
        if kind == CALL:
            s[0] += 1
            if callee is not None:
                s[1] |= 1 << (spread(callee) % CALLER_FAN_BITS)
        elif kind <= ANSWERED:
            s[2] += 1
            s[3] += kind == ANSWERED
        else:
            s[4] += 1
            s[5] += kind == SHORT
    return [(key, sec, *s) for (key, sec), s in sums.items()]  # type: ignore[misc]


def compact(rows: Iterable[Row]) -> list[Row]:
    """Rows summed per caller and minute: what a node keeps while Redis is
    down. Exact for the minute and hour figures; the per-second ones are
    stale by the time the rows are sent anyway."""
    sums: dict[tuple[int, int], list[int]] = {}
    for key, sec, calls, fan, fin, ans, end, short in rows:
        k = (key, sec // 60)
        s = sums.get(k)
        if s is None:
            sums[k] = [sec, calls, fan, fin, ans, end, short]
            continue
        s[0] = max(s[0], sec)
        s[1] += calls
        s[2] |= fan
        s[3] += fin
        s[4] += ans
        s[5] += end
        s[6] += short
    return [(key, *s) for (key, _), s in sums.items()]  # type: ignore[misc]


def apply(engine: ReputationEngine, rows: Iterable[Row], now: float) -> int:
    """Add another node's rows to this engine's counters (``now`` is this
    engine's clock). Returns the calls added."""
    offset = engine.wall_offset
    callers, ranges = engine.callers, engine.ranges
    added = 0
    for key, sec, calls, fan, fin, ans, end, short in rows:
        at = min(sec + 0.5 - offset, now)  # a clock a little ahead of ours
        outcomes = (fin, ans, end, short)
        callers.touch(key, at).merge(at, calls, fan, outcomes)
        item = 1 << (spread(key) % RANGE_FAN_BITS) if calls else 0
        ranges.touch(key // 1000, at).merge(at, calls, item, outcomes)
        added += calls
    return added


def encode(batch: Batch) -> bytes:
    doc = {"v": FORMAT, "from": batch.sender, "seq": batch.seq, "rows": batch.rows}
    return json.dumps(doc, separators=(",", ":")).encode()


def decode(data: bytes) -> Batch:
    """The batch; ValueError for anything that is not a batch this version
    reads, so one bad entry is skipped, never applied in part."""
    doc = load_versioned(data, FORMAT, "counter batch")
    sender, seq, raw = doc.get("from"), doc.get("seq"), doc.get("rows")
    if not isinstance(sender, str) or not isinstance(raw, list):
        raise ValueError("batch without a sender or rows")
    if type(seq) is not int or seq < 1:
        raise ValueError("batch without a sequence number")
    rows: list[Row] = []
    for row in raw:
        if (
            not isinstance(row, list)
            or len(row) != 8
            or not all(type(x) is int and x >= 0 for x in row)
        ):
            raise ValueError(f"bad row {str(row)[:80]}")
        key, sec, calls, fan, *outcomes = row
        if not 0 < key < _MAX_KEY or fan >= _MAX_FAN or max(calls, *outcomes) > _MAX_COUNT:
            raise ValueError(f"row out of range {str(row)[:80]}")
        rows.append((key, sec, calls, fan, *outcomes))
    return Batch(sender, seq, tuple(rows))
