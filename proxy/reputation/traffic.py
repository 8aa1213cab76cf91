"""Rolling traffic figures per key (a caller number, an upstream peer, a
caller's thousands-block), O(1) per call and bounded in memory.

Windows are two buckets, current and previous; a count "over the last W
seconds" is ``prev * (1 - elapsed/W) + cur``, the sliding-window estimate
rate limiters use. Per key that is a few ints instead of a ring of buckets.
Distinct callees (or callers) are counted with a small linear-counting
bitmap per hour bucket. Time is always passed in: no clock here. This runs
for every INVITE, so the code favours fewer Python operations over elegance.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Generic, TypeVar

_MIX1, _MIX2 = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9  # splitmix64
_MASK64 = (1 << 64) - 1
_NO_MEMO: tuple[int, tuple[tuple[str, float], ...]] = (-1, ())


def spread(item: int) -> int:
    """A 64-bit mix: consecutive numbers must land on independent bits, or
    linear counting over-counts sequential callees."""
    x = (item * _MIX1) & _MASK64
    x = ((x ^ (x >> 31)) * _MIX2) & _MASK64
    return x ^ (x >> 29)


class Traffic:
    """The rolling figures of one key. Outcome counters (finals, answered,
    ended, short) and near-sequential dials share the hour buckets."""

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
        "memo",
        "minute",
        "s_cur",
        "s_prev",
        "sec",
        "seq_cur",
        "seq_prev",
        "short_cur",
        "short_prev",
    )

    def __init__(self, now: float, fan_bits: int) -> None:
        self.sec = self.minute = self.hour = -1
        self.s_cur = self.s_prev = self.m_cur = self.m_prev = self.h_cur = self.h_prev = 0
        self.fan_cur = self.fan_prev = 0
        self.fan_bits = fan_bits
        self.seq_cur = self.seq_prev = 0
        self.fin_cur = self.fin_prev = self.ans_cur = self.ans_prev = 0
        self.end_cur = self.end_prev = self.short_cur = self.short_prev = 0
        # (second, signals): what a slowly moving key (a trunk, a thousands-
        # block) scored this second, so it is computed once a second
        self.memo: tuple[int, tuple[tuple[str, float], ...]] = _NO_MEMO
        self._roll(int(now))

    # -- updates ---------------------------------------------------------

    def _roll(self, s: int) -> None:
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

    def call(self, now: float, item: int | None) -> None:
        """Count one call; ``item`` (the callee, or for a range the caller)
        goes into the distinct count."""
        s = int(now)
        if s != self.sec:
            self._roll(s)
        self.s_cur += 1
        self.m_cur += 1
        self.h_cur += 1
        if item is not None:
            x = (item * _MIX1) & _MASK64
            x = ((x ^ (x >> 31)) * _MIX2) & _MASK64
            self.fan_cur |= 1 << ((x ^ (x >> 29)) % self.fan_bits)

    def final(self, now: float, answered: bool) -> None:
        s = int(now)
        if s != self.sec:
            self._roll(s)
        self.fin_cur += 1
        if answered:
            self.ans_cur += 1

    def ended(self, now: float, short: bool) -> None:
        s = int(now)
        if s != self.sec:
            self._roll(s)
        self.end_cur += 1
        if short:
            self.short_cur += 1

    def merge(self, now: float, calls: int, fan: int, outcomes: tuple[int, int, int, int]) -> None:
        """Counts another node saw at ``now`` ([cluster]): added to the
        bucket they belong in; a bucket already rolled out of the window is
        skipped. ``outcomes`` is (finals, answered, ended, short)."""
        s = int(now)
        if s > self.sec:
            self._roll(s)
        if s == self.sec:
            self.s_cur += calls
        elif s == self.sec - 1:
            self.s_prev += calls
        m = s // 60
        if m == self.minute:
            self.m_cur += calls
        elif m == self.minute - 1:
            self.m_prev += calls
        fin, ans, end, short = outcomes
        h = m // 60
        if h == self.hour:
            self.h_cur += calls
            self.fan_cur |= fan
            self.fin_cur += fin
            self.ans_cur += ans
            self.end_cur += end
            self.short_cur += short
        elif h == self.hour - 1:
            self.h_prev += calls
            self.fan_prev |= fan
            self.fin_prev += fin
            self.ans_prev += ans
            self.end_prev += end
            self.short_prev += short

    # -- figures ---------------------------------------------------------

    def busy(self, n: int) -> bool:
        """More than ``n`` calls in this hour and the last: a cheap gate, so
        keys with too little traffic to fire anything are not computed."""
        return self.h_cur + self.h_prev > n

    def calls(self, now: float) -> tuple[float, float, float]:
        """Calls over the last second, minute and hour (sliding estimates)."""
        return (
            _sliding(now, 1, self.sec, self.s_cur, self.s_prev),
            _sliding(now, 60, self.minute, self.m_cur, self.m_prev),
            _sliding(now, 3600, self.hour, self.h_cur, self.h_prev),
        )

    def distinct(self, now: float) -> float:
        """Distinct items (callees, or callers for a range) over the last hour."""
        cur = _linear_count(self.fan_cur, self.fan_bits)
        return _sliding(now, 3600, self.hour, cur, _linear_count(self.fan_prev, self.fan_bits))

    def distinct_bound(self) -> float:
        """A cheap upper bound of ``distinct`` while it is small (below about
        a third of the bitmap, linear counting reads at most 1.25 times the
        bits set), to skip the logarithms for keys that cannot pass a gate."""
        return (self.fan_cur.bit_count() + self.fan_prev.bit_count()) * 1.25

    def hour_sum(self, now: float, cur: int, prev: int) -> float:
        return _sliding(now, 3600, self.hour, cur, prev)

    def sequential(self, now: float) -> float:
        return _sliding(now, 3600, self.hour, self.seq_cur, self.seq_prev)

    def outcomes(self, now: float) -> tuple[float, float, float, float]:
        """(finals, answered, ended, short) over the last hour."""
        b = int(now) // 3600
        if b == self.hour:
            f = 1 - (now - b * 3600) / 3600
            return (
                self.fin_prev * f + self.fin_cur,
                self.ans_prev * f + self.ans_cur,
                self.end_prev * f + self.end_cur,
                self.short_prev * f + self.short_cur,
            )
        if b == self.hour + 1:
            f = 1 - (now - b * 3600) / 3600
            return (self.fin_cur * f, self.ans_cur * f, self.end_cur * f, self.short_cur * f)
        return (0.0, 0.0, 0.0, 0.0)


class CallerTraffic(Traffic):
    """A caller number's figures and its last few callees, to tell
    near-sequential dialling."""

    __slots__ = ("pos", "recent")
    RECENT = 4

    def __init__(self, now: float, fan_bits: int) -> None:
        super().__init__(now, fan_bits)
        self.recent = [0] * self.RECENT
        self.pos = 0

    def dialled(self, callee: int, gap: int) -> bool:
        """Whether ``callee`` is within ``gap`` of one of the last callees
        (a repeat call to one number is not); counted in the hour."""
        near = False
        for x in self.recent:
            d = callee - x
            if d and -gap <= d <= gap:
                near = True
                break
        pos = self.pos
        self.recent[pos] = callee
        self.pos = (pos + 1) & (self.RECENT - 1)
        if near:
            self.seq_cur += 1
        return near


class PeerTraffic(Traffic):
    """An upstream peer's figures and the near-sequential runs among its
    last WINDOW callees, whoever the callers (rotated caller IDs): one dict
    probe per neighbour instead of a scan, so the window can be wide enough
    for a busy trunk that mixes a campaign with everyone else's calls. Plain
    ints in a dict and a deque: about 100 bytes per callee in the window."""

    __slots__ = ("order", "runs")
    WINDOW = 256

    def __init__(self, now: float, fan_bits: int) -> None:
        super().__init__(now, fan_bits)
        self.runs: dict[int, int] = {}  # callee -> length of the run it ends
        self.order: deque[int] = deque()

    def dialled(self, callee: int, gap: int) -> int:
        """The length of the near-sequential run ``callee`` extends: 1 if
        no recent callee is within ``gap``, else one more than that one's."""
        runs = self.runs
        run = 1
        for d in range(1, gap + 1):
            hit = runs.get(callee - d) or runs.get(callee + d)
            if hit:
                run = hit + 1
                break
        runs[callee] = run
        order = self.order
        order.append(callee)
        if len(order) > self.WINDOW:
            # a callee dialled twice within the window leaves at its first
            # dial: rare, and it only shortens a run
            runs.pop(order.popleft(), None)
        if run > 1:
            self.seq_cur += 1
        return run


def _sliding(now: float, width: int, bucket: int, cur: float, prev: float) -> float:
    b = int(now) // width
    if b == bucket:
        return prev * (1 - (now - b * width) / width) + cur
    if b == bucket + 1:
        return cur * (1 - (now - b * width) / width)
    return 0.0


def _linear_count(bitmap: int, bits: int) -> float:
    """Linear counting (Whang et al. 1990): n = -m ln(zeros/m)."""
    if not bitmap:
        return 0.0
    zeros = bits - bitmap.bit_count()
    if zeros == 0:
        return bits * math.log(bits)  # saturated: at least this many
    return -bits * math.log(zeros / bits)


T = TypeVar("T", bound=Traffic)


class TrafficTable(Generic[T]):
    """Traffic per key, the least recently seen evicted beyond ``capacity``."""

    def __init__(self, capacity: int, fan_bits: int, make: Callable[[float, int], T]) -> None:
        self.capacity = capacity
        self.fan_bits = fan_bits
        self.make = make
        self.entries: OrderedDict[object, T] = OrderedDict()
        self.evicted = 0

    def touch(self, key: object, now: float) -> T:
        entries = self.entries
        t = entries.get(key)
        if t is not None:
            entries.move_to_end(key)
            return t
        t = entries[key] = self.make(now, self.fan_bits)
        if len(entries) > self.capacity:
            self.trim()
        return t

    def trim(self) -> None:
        """Evict the least recently seen down to capacity (also after the
        capacity was lowered by a reload)."""
        entries = self.entries
        while len(entries) > self.capacity:
            entries.popitem(last=False)
            self.evicted += 1

    def get(self, key: object) -> T | None:
        return self.entries.get(key)

    def __len__(self) -> int:
        return len(self.entries)
