"""Which screened transactions were seen lately, so a retransmitted INVITE
or MESSAGE is answered again (a stateless proxy must) but counted, logged
and recorded once. Sans-I/O: time comes from the caller."""

from __future__ import annotations

from collections import OrderedDict

# RFC 3261 Timer B: a client retransmits an INVITE for 64*T1 = 32 s; a
# margin for clocks and late copies
WINDOW = 40.0
# a bound whatever the rate: 2,500 new transactions a second for the window
CAPACITY = 100_000


class RecentTransactions:
    __slots__ = ("_seen", "capacity", "window")

    def __init__(self, window: float = WINDOW, capacity: int = CAPACITY) -> None:
        self.window = window
        self.capacity = capacity
        # hash of the branch -> when first seen; oldest first
        self._seen: OrderedDict[int, float] = OrderedDict()

    def repeat(self, key: int, now: float) -> bool:
        """True when ``key`` was seen within the window; else remember it."""
        seen = self._seen
        first = seen.get(key)
        if first is not None and now - first <= self.window:
            return True
        if first is not None:
            del seen[key]
        seen[key] = now
        horizon = now - self.window
        while seen:
            oldest = next(iter(seen.values()))
            if oldest >= horizon and len(seen) <= self.capacity:
                break
            seen.popitem(last=False)
        return False

    def __len__(self) -> int:
        return len(self._seen)
