"""The callee's zones from the number, and local calling hours across DST."""

from __future__ import annotations

import datetime
from zoneinfo import ZoneInfo

import phonenumbers
import pytest
from phonenumbers.timezone import time_zones_for_geographical_number

from proxy.telemarketing import zones as zones_module
from proxy.telemarketing.settings import PRESETS
from proxy.telemarketing.zones import CONTINENTAL_US, ZoneClock, ZoneError, ZoneTable

TSR = (PRESETS["tsr"][0] * 60, PRESETS["tsr"][1] * 60)  # seconds of the day


@pytest.fixture(scope="module")
def table() -> ZoneTable:
    return ZoneTable.build()


def at(zone: str, y: int, mo: int, d: int, h: int, mi: int) -> float:
    """Wall-clock seconds of a local time in ``zone``."""
    return datetime.datetime(y, mo, d, h, mi, tzinfo=ZoneInfo(zone)).timestamp()


@pytest.mark.parametrize(
    ("key", "names"),
    [
        (12125550142, ("America/New_York",)),  # New York City
        (13105550142, ("America/Los_Angeles",)),  # Los Angeles
        (18085550142, ("Pacific/Honolulu",)),  # Honolulu
        (19075550142, ("America/Adak", "America/Anchorage")),  # Alaska's one area code
        (12082010000, ("America/Denver",)),  # 208 is split by exchange
        (12082150000, ("America/Los_Angeles",)),
        (12082990000, ("America/Boise", "America/Los_Angeles")),  # 208-2xx: either
        (18502000000, ("America/Chicago",)),  # Florida's panhandle
        (18505550000, ("America/New_York",)),
        (442071234567, ("Europe/London",)),
    ],
)
def test_zones_of_known_numbers(table: ZoneTable, key: int, names: tuple[str, ...]) -> None:
    found = table.zones_for(key)
    assert found.known and found.names == names


@pytest.mark.parametrize("key", [19995550100, 18005550100, 15005550100, 99912345, 1234567])
def test_unplaced_numbers_get_the_continental_default(table: ZoneTable, key: int) -> None:
    """An unassigned area code, toll-free and personal-communications codes
    (phonenumbers says "anywhere in +1") and junk keys: never a crash."""
    found = table.zones_for(key)
    assert not found.known and found.names == CONTINENTAL_US
    assert found is table.default


def test_the_table_agrees_with_phonenumbers_for_every_area_code(table: ZoneTable) -> None:
    """Five exchanges of every NANP area code, each compared with
    phonenumbers' own answer (its per-call cost is what the table avoids).
    Where the table has the default, phonenumbers could not place the number."""
    anywhere = time_zones_for_geographical_number(phonenumbers.parse("+18005550100"))
    compared = 0
    for npa in range(200, 1000):
        for nxx in (201, 230, 555, 581, 789):
            national = npa * 10**7 + nxx * 10**4 + 1234
            number = phonenumbers.PhoneNumber(country_code=1, national_number=national)
            expected = tuple(time_zones_for_geographical_number(number))
            found = table.zones_for(10**10 + national)
            if found.known:
                assert found.names == expected, national
                compared += 1
            else:
                assert expected in (("Etc/Unknown",), tuple(anywhere)), national
    assert compared > 2000


def test_one_zone_boundaries_on_both_dst_days() -> None:
    """New York on the days the clocks go forward (9 March 2025) and back
    (2 November 2025): 7:59 and 21:00 refused, 8:00 and 20:59 permitted, in
    local time, whatever the UTC offset is that day."""
    ny = ZoneTable.build().zones_for(12125550142)
    for day in ((2025, 3, 9), (2025, 11, 2), (2025, 3, 8), (2025, 11, 3)):
        for (h, m), ok in (((7, 59), False), ((8, 0), True), ((20, 59), True), ((21, 0), False)):
            assert ny.within(at("America/New_York", *day, h, m), *TSR) is ok, (day, h, m)
    # the same UTC instant is 7:30 the day before the change and 8:30 on it
    instant = at("America/New_York", 2025, 3, 8, 7, 30) + 86_400
    assert datetime.datetime.fromtimestamp(instant, ZoneInfo("America/New_York")).hour == 8
    assert ny.within(instant, *TSR) and not ny.within(instant - 86_400, *TSR)


def test_a_multi_zone_area_code_is_judged_in_every_zone(table: ZoneTable) -> None:
    """907 may be Anchorage or Adak (an hour behind): the call is permitted
    only while both are within hours, from 9:00 to 21:00 Anchorage time."""
    ak = table.zones_for(19075550142)
    for (h, m), ok in (((8, 30), False), ((8, 59), False), ((9, 0), True), ((20, 59), True)):
        assert ak.within(at("America/Anchorage", 2025, 7, 1, h, m), *TSR) is ok, (h, m)
    assert not ak.within(at("America/Anchorage", 2025, 7, 1, 21, 0), *TSR)


def test_honolulu_has_no_dst_and_the_default_is_the_continental_overlap(table: ZoneTable) -> None:
    hnl = table.zones_for(18085550142)
    for month in (1, 7):
        assert not hnl.within(at("Pacific/Honolulu", 2025, month, 15, 7, 59), *TSR)
        assert hnl.within(at("Pacific/Honolulu", 2025, month, 15, 8, 0), *TSR)
    unplaced = table.zones_for(19995550100)  # 11:00 to 21:00 New York time
    assert not unplaced.within(at("America/New_York", 2025, 7, 1, 10, 59), *TSR)
    assert unplaced.within(at("America/New_York", 2025, 7, 1, 11, 0), *TSR)
    assert unplaced.within(at("America/New_York", 2025, 7, 1, 20, 59), *TSR)
    assert not unplaced.within(at("America/New_York", 2025, 7, 1, 21, 0), *TSR)


@pytest.mark.parametrize(
    "zone", ["America/New_York", "America/St_Johns", "America/Adak", "America/Phoenix"]
)
def test_the_cached_offset_is_exact_minute_by_minute_across_dst(zone: str) -> None:
    """The 15-minute cache against zoneinfo itself, every minute of the two
    DST-change days (Newfoundland's offset is a half hour), forwards and
    then backwards in time so the cache is refreshed both ways."""
    info = ZoneInfo(zone)
    clock = ZoneClock(zone, info)
    starts = (at(zone, 2025, 3, 9, 0, 0), at(zone, 2025, 11, 2, 0, 0))
    minutes = [s + 60 * i + 7 for s in starts for i in range(26 * 60)]
    for wall in (*minutes, *reversed(minutes)):
        local = datetime.datetime.fromtimestamp(wall, info)
        assert clock.minute_of_day(wall) == local.hour * 60 + local.minute, (zone, wall)


def test_a_zone_the_database_lacks_is_judged_as_unplaced() -> None:
    table = ZoneTable.build({"1212": ("America/New_York",), "1213": ("Nowhere/Atlantis",)})
    assert table.zones_for(12125550142).names == ("America/New_York",)
    assert table.zones_for(12135550142) is table.default
    assert table.unloadable == ("Nowhere/Atlantis",)


def test_no_zone_database_at_all_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(zones_module, "CONTINENTAL_US", ("Nowhere/Atlantis",))
    with pytest.raises(ZoneError, match="lacks Nowhere/Atlantis: install"):
        ZoneTable.build({})
