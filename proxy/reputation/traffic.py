"""Rolling traffic figures per key (a caller number, an upstream peer, a
caller's thousands-block), O(1) per call and bounded in memory.

Windows are two buckets, current and previous; a count "over the last W
seconds" is ``prev * (1 - elapsed/W) + cur``, the sliding-window estimate
rate limiters use. Per key that is a few ints instead of a ring of buckets.
Distinct callees (or callers) are counted with a small linear-counting
bitmap per hour bucket. Time is always passed in: no clock here.
"""

from __future__ import annotations

import math
from collections import OrderedDict

_MIX = 0x9E3779B97F4A7C15  # Fibonacci hashing: spreads structured numbers over the bits
_MASK64 = (1 << 64) - 1


class Traffic:
    """The rolling figures of one key. Outcome counters (finals, answered,
    ended, short) share the hour buckets."""

    __slots__ = (
        "ans_cur",
        "ans_prev",
        "end_cur",
        "end_prev",
        "fan_bits",
        "fan_cur",
        "fan_prev",
        "fin_cur",
        "fin_prev",
        "h_cur",
        "h_prev",
        "hour",
        "m_cur",
        "m_prev",
        "minute",
        "pos",
        "recent",
        "runs",
        "s_cur",
        "s_prev",
        "sec",
        "seq_cur",
        "seq_prev",
        "short_cur",
        "short_prev",
    )

    def __init__(self, now: float, fan_bits: int, recent: int) -> None:
        self.sec = self.minute = self.hour = -1
        self.s_cur = self.s_prev = self.m_cur = self.m_prev = self.h_cur = self.h_prev = 0
        self.fan_cur = self.fan_prev = 0
        self.fan_bits = fan_bits
        self.recent: list[int] = [0] * recent
        self.runs: list[int] = [0] * recent
        self.pos = 0
        self.seq_cur = self.seq_prev = 0
        self.fin_cur = self.fin_prev = self.ans_cur = self.ans_prev = 0
        self.end_cur = self.end_prev = self.short_cur = self.short_prev = 0
        self._roll(now)

    # -- updates ---------------------------------------------------------

    def _roll(self, now: float) -> None:
        s = int(now)
        if s != self.sec:
            self.s_prev = self.s_cur if s == self.sec + 1 else 0
            self.s_cur = 0
            self.sec = s
            m = s // 60
            if m != self.minute:
                self.m_prev = self.m_cur if m == self.minute + 1 else 0
                self.m_cur = 0
                self.minute = m
                h = m // 60
                if h != self.hour:
                    self._roll_hour(h)

    def _roll_hour(self, h: int) -> None:
        adjacent = h == self.hour + 1
        self.h_prev = self.h_cur if adjacent else 0
        self.fan_prev = self.fan_cur if adjacent else 0
        self.seq_prev = self.seq_cur if adjacent else 0
        self.fin_prev = self.fin_cur if adjacent else 0
        self.ans_prev = self.ans_cur if adjacent else 0
        self.end_prev = self.end_cur if adjacent else 0
        self.short_prev = self.short_cur if adjacent else 0
        self.h_cur = self.fan_cur = self.seq_cur = 0
        self.fin_cur = self.ans_cur = self.end_cur = self.short_cur = 0
        self.hour = h

    def call(self, now: float, item: int | None, callee: int | None, gap: int) -> int:
        """Count one call; ``item`` goes into the distinct count. Returns the
        length of the near-sequential run ``callee`` extends: 1 when it is
        not within ``gap`` of a recent callee of this key, else one more than
        the run of the callee it follows. A repeat call to one number is no
        run; a chance neighbour rarely makes a run of three."""
        self._roll(now)
        self.s_cur += 1
        self.m_cur += 1
        self.h_cur += 1
        if item is not None:
            self.fan_cur |= 1 << _spread(item) % self.fan_bits
        recent = self.recent
        if callee is None or not recent:
            return 0
        run = 1
        for i, x in enumerate(recent):
            if x and 0 < abs(callee - x) <= gap:
                run = self.runs[i] + 1
                break
        pos = self.pos
        recent[pos] = callee
        self.runs[pos] = run
        self.pos = (pos + 1) % len(recent)
        if run > 1:
            self.seq_cur += 1
        return run

    def final(self, now: float, answered: bool) -> None:
        self._roll(now)
        self.fin_cur += 1
        if answered:
            self.ans_cur += 1

    def ended(self, now: float, short: bool) -> None:
        self._roll(now)
        self.end_cur += 1
        if short:
            self.short_cur += 1

    # -- figures ---------------------------------------------------------

    def calls(self, now: float) -> tuple[float, float, float]:
        """Calls over the last second, minute and hour (sliding estimates)."""
        return (
            self._sliding(now, 1, self.sec, self.s_cur, self.s_prev),
            self._sliding(now, 60, self.minute, self.m_cur, self.m_prev),
            self._sliding(now, 3600, self.hour, self.h_cur, self.h_prev),
        )

    def distinct(self, now: float) -> float:
        """Distinct items (callees, or callers for a range) over the last hour."""
        cur = _linear_count(self.fan_cur, self.fan_bits)
        return self._sliding(now, 3600, self.hour, cur, _linear_count(self.fan_prev, self.fan_bits))

    def hour_sum(self, now: float, cur: int, prev: int) -> float:
        return self._sliding(now, 3600, self.hour, cur, prev)

    def sequential(self, now: float) -> float:
        return self.hour_sum(now, self.seq_cur, self.seq_prev)

    def outcomes(self, now: float) -> tuple[float, float, float, float]:
        """(finals, answered, ended, short) over the last hour."""
        return (
            self.hour_sum(now, self.fin_cur, self.fin_prev),
            self.hour_sum(now, self.ans_cur, self.ans_prev),
            self.hour_sum(now, self.end_cur, self.end_prev),
            self.hour_sum(now, self.short_cur, self.short_prev),
        )

    @staticmethod
    def _sliding(now: float, width: int, bucket: int, cur: float, prev: float) -> float:
        b = int(now) // width
        if b == bucket:
            return prev * (1 - (now - b * width) / width) + cur
        if b == bucket + 1:
            return cur * (1 - (now - b * width) / width)
        return 0.0


def _spread(item: int) -> int:
    """A 64-bit mix (splitmix64's finaliser): consecutive numbers must land
    in independent bits, or linear counting over-counts sequential callees."""
    x = (item * _MIX) & _MASK64
    x = ((x ^ (x >> 31)) * 0xBF58476D1CE4E5B9) & _MASK64
    return x ^ (x >> 29)


def _linear_count(bitmap: int, bits: int) -> float:
    """Linear counting (Whang et al. 1990): n = -m ln(zeros/m)."""
    if not bitmap:
        return 0.0
    zeros = bits - bitmap.bit_count()
    if zeros == 0:
        return bits * math.log(bits)  # saturated: at least this many
    return -bits * math.log(zeros / bits)


class TrafficTable:
    """Traffic per key, the least recently seen evicted beyond ``capacity``."""

    def __init__(self, capacity: int, fan_bits: int, recent: int) -> None:
        self.capacity = capacity
        self.fan_bits = fan_bits
        self.recent = recent
        self.entries: OrderedDict[object, Traffic] = OrderedDict()
        self.evicted = 0

    def touch(self, key: object, now: float) -> Traffic:
        entries = self.entries
        t = entries.get(key)
        if t is not None:
            entries.move_to_end(key)
            return t
        t = entries[key] = Traffic(now, self.fan_bits, self.recent)
        self.trim()
        return t

    def trim(self) -> None:
        """Evict the least recently seen down to capacity (also after the
        capacity was lowered by a reload)."""
        entries = self.entries
        while len(entries) > self.capacity:
            entries.popitem(last=False)
            self.evicted += 1

    def get(self, key: object) -> Traffic | None:
        return self.entries.get(key)

    def __len__(self) -> int:
        return len(self.entries)
