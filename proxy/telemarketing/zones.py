"""The callee's time zones, from the number, without phonenumbers per call.

``ZoneTable.build`` reads phonenumbers' prefix-to-zone data once, at start
(about 0.1 s): NANP numbers get a table indexed by NPA, refined by NXX for
the area codes that straddle a zone line (208, 541, 850, ...); other
countries a prefix table. A lookup is integer arithmetic and a list index
for NANP numbers, a few dict probes for the rest.

Local time comes from ``ZoneClock``: a zone's UTC offset is cached for
15 minutes of UTC at a time. Every offset in use is a whole number of
quarter hours and transitions happen on the hour of local time, so no
offset changes inside a 15-minute UTC slot, and a cached offset is exact,
across DST changes too (tests/test_telemarketing_zones.py checks this
minute by minute against zoneinfo, Newfoundland's half hour included).
"""

from __future__ import annotations

import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

SLOT = 900  # seconds of UTC one cached offset covers
DAY_SECONDS = 86_400.0
UNKNOWN_ZONE = "Etc/Unknown"  # phonenumbers' answer when it has none
# Where nothing better is known (non-geographic and unassigned NANP codes,
# numbers phonenumbers cannot place): a call is permitted only when it is
# within hours in all four zones of the continental US.
CONTINENTAL_US = ("America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles")
_NANP_LOW, _NANP_HIGH = 10_000_000_000, 20_000_000_000  # +1 and ten digits


class ZoneError(Exception):
    """No usable time zone database: calling hours cannot be judged."""


class ZoneClock:
    """One IANA zone's UTC offset, valid for wall-clock times in [lo, hi)."""

    __slots__ = ("hi", "lo", "name", "offset", "zone")

    def __init__(self, name: str, zone: ZoneInfo) -> None:
        self.name = name
        self.zone = zone
        self.lo = self.hi = 0.0  # nothing cached yet
        self.offset = 0.0

    def refresh(self, wall: float) -> None:
        """Cache the offset of the 15-minute UTC slot holding ``wall``."""
        lo = wall // SLOT * SLOT
        offset = datetime.datetime.fromtimestamp(lo, self.zone).utcoffset()
        self.offset = offset.total_seconds() if offset is not None else 0.0
        self.lo, self.hi = lo, lo + SLOT

    def seconds_of_day(self, wall: float) -> float:
        """Seconds after local midnight at ``wall`` (seconds since the epoch)."""
        if not self.lo <= wall < self.hi:
            self.refresh(wall)
        return (wall + self.offset) % DAY_SECONDS

    def minute_of_day(self, wall: float) -> int:
        return int(self.seconds_of_day(wall) // 60)


class ZoneSet:
    """The zones a number may be in. ``known`` is False for the default set
    given to numbers that cannot be placed."""

    __slots__ = ("clocks", "known")

    def __init__(self, clocks: tuple[ZoneClock, ...], known: bool) -> None:
        self.clocks = clocks
        self.known = known

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.clocks)

    def within(self, wall: float, start: float, end: float) -> bool:
        """Conservative: True only if the local time of day, in seconds, is
        inside [start, end) in every zone the number may be in. A number
        whose area code spans two zones is called only while it is within
        hours in both."""
        for clock in self.clocks:  # seconds_of_day, inlined: this is per call
            if not clock.lo <= wall < clock.hi:
                clock.refresh(wall)
            local = (wall + clock.offset) % DAY_SECONDS
            if local < start or local >= end:
                return False
        return True


class ZoneTable:
    def __init__(
        self,
        npa: list[ZoneSet],
        split: dict[int, list[ZoneSet]],
        prefixes: dict[str, ZoneSet],
        default: ZoneSet,
        unloadable: tuple[str, ...] = (),
    ) -> None:
        self.npa = npa  # indexed by the NANP area code, 0..999
        self.split = split  # area code -> indexed by NXX, where the code spans zones
        self.prefixes = prefixes  # other countries: E.164 prefix digits -> zones
        self.lengths = sorted({len(p) for p in prefixes}, reverse=True)
        self.default = default
        self.unloadable = unloadable  # zone names the zone database lacks

    def zones_for(self, key: int) -> ZoneSet:
        """The zones of an E.164 key (``12125550142``); never raises."""
        if _NANP_LOW <= key < _NANP_HIGH:
            npa = key // 10_000_000 % 1000
            split = self.split.get(npa)
            return split[key // 10_000 % 1000] if split is not None else self.npa[npa]
        digits = str(key)
        prefixes = self.prefixes
        for n in self.lengths:
            found = prefixes.get(digits[:n])
            if found is not None:
                return found
        return self.default

    @classmethod
    def build(cls, data: dict[str, tuple[str, ...]] | None = None) -> ZoneTable:
        """From phonenumbers' prefix data (or ``data``, for tests)."""
        if data is None:
            from phonenumbers.tzdata import TIMEZONE_DATA

            data = TIMEZONE_DATA
        return _Builder(data).table()


class _Builder:
    def __init__(self, data: dict[str, tuple[str, ...]]) -> None:
        self.data = data
        self.clocks: dict[str, ZoneClock | None] = {}
        self.sets: dict[tuple[str, ...], ZoneSet] = {}
        self.unloadable: list[str] = []
        defaults = tuple(self._clock(n) for n in CONTINENTAL_US)
        if any(c is None for c in defaults):
            raise ZoneError(
                f"the time zone database lacks {', '.join(self.unloadable)}: install the "
                "system tzdata package or the tzdata Python package"
            )
        self.default = ZoneSet(tuple(c for c in defaults if c is not None), known=False)
        self.nanp_wide = data.get("1")  # the whole of +1: a number not placed

    def _clock(self, name: str) -> ZoneClock | None:
        if name not in self.clocks:
            try:
                self.clocks[name] = ZoneClock(name, ZoneInfo(name))
            except (ZoneInfoNotFoundError, ValueError):
                self.clocks[name] = None
                self.unloadable.append(name)
        return self.clocks[name]

    def _set(self, names: tuple[str, ...] | None) -> ZoneSet:
        if not names or UNKNOWN_ZONE in names or names == self.nanp_wide:
            return self.default
        found = self.sets.get(names)
        if found is None:
            clocks = [self._clock(n) for n in names]
            if any(c is None for c in clocks):
                found = self.default  # a zone we cannot compute: judge as unplaced
            else:
                found = ZoneSet(tuple(c for c in clocks if c is not None), known=True)
            self.sets[names] = found
        return found

    def _longest(self, digits: str, shortest: int) -> tuple[str, ...] | None:
        for n in range(len(digits), shortest - 1, -1):
            names = self.data.get(digits[:n])
            if names is not None:
                return names
        return None

    def table(self) -> ZoneTable:
        data = self.data
        finer = {k[1:4] for k in data if k.startswith("1") and len(k) > 4}
        npa: list[ZoneSet] = []
        split: dict[int, list[ZoneSet]] = {}
        for code in range(1000):
            npa.append(self._set(self._longest(f"1{code:03d}", 1)))
            if f"{code:03d}" in finer:
                split[code] = [
                    self._set(self._longest(f"1{code:03d}{nxx:03d}", 1)) for nxx in range(1000)
                ]
        prefixes = {k: self._set(v) for k, v in data.items() if not k.startswith("1")}
        return ZoneTable(npa, split, prefixes, self.default, tuple(self.unloadable))
