"""The reputation engine at unit level: rolling traffic windows, the LRU
tables, every signal on a crafted scenario and on a benign control, call
outcomes, observe mode and weights, the policy decision, the [reputation]
config section, verstat/attest extraction and `explain`.

Time is always injected (CallFacts.received and the ``now`` arguments), so
every figure below is exact or bounded, never timing-dependent."""

from __future__ import annotations

import base64
import dataclasses
import itertools
import json
import random
import tomllib
from collections.abc import Iterator
from typing import Any

import pytest

from blocklists.build import build
from blocklists.slot import ArtefactSlot
from blocklists.sources import FTC_COLUMNS, parse_source
from blocklists.store import Artefact
from proxy.config import parse_config
from proxy.config_table import ConfigError, Table
from proxy.explain_cli import render
from proxy.reputation.engine import (
    COMPLAINTS_FULL,
    FANOUT_RAMP,
    MIN_ENDED,
    MIN_FINALS,
    NEIGHBOUR_FANOUT,
    PEER_MIN_ENDED,
    PEER_MIN_FINALS,
    PEER_SEQUENTIAL_MIN,
    RANGE_MIN_ENDED,
    RANGE_MIN_FINALS,
    RATE_RAMPS,
    SEQUENTIAL_MIN_CALLS,
    SNOWSHOE_CALLERS,
    Assessment,
    ReputationEngine,
    ramp,
)
from proxy.reputation.explain import SIGNAL_HELP, explain_number
from proxy.reputation.settings import (
    DEFAULT_WEIGHTS,
    POLICIES,
    SIGNALS,
    ReputationConfig,
    parse_reputation,
)
from proxy.reputation.traffic import CallerTraffic, PeerTraffic, Traffic, TrafficTable
from proxy.screening import Action, ReputationCheck
from proxy.screening.reputation_check import decide
from proxy.sip import SipRequest, call_facts, parse_datagram
from proxy.sip.identity import CallFacts, attest_claim
from proxy.sip.numbers import e164_key
from tests.conftest import shared_dir
from tests.sipmsg import request

PEER = "198.51.100.10"
OTHER_PEER = "203.0.113.77"
CALLER = "+12125550142"
CALLER_KEY = 12125550142
CALLEE = "+13125550187"
PASSED, FAILED = "TN-Validation-Passed", "TN-Validation-Failed"
_ids = itertools.count()


# -- helpers --------------------------------------------------------------


def rcfg(**data: Any) -> ReputationConfig:
    """A [reputation] section as the config file would give it; verstat is
    believed from PEER (the carrier's verification service in these tests)."""
    data.setdefault("verstat_from", [PEER])
    return parse_reputation(Table(data, "reputation"))


def facts(
    caller: str | None = CALLER,
    callee: str | None = CALLEE,
    t: float = 0.0,
    *,
    call_id: str | None = None,
    source: str = PEER,
    method: str = "INVITE",
    asserted: bool = False,
    identity: str | None = None,
    verstat: str | None = None,
    attest: str | None = None,
) -> CallFacts:
    return CallFacts(
        method=method,
        call_id=call_id or f"call-{next(_ids)}@test",
        source=source,
        caller=caller,
        caller_key=e164_key(caller) if caller else None,
        caller_display=None,
        asserted=asserted,
        anonymous=caller is None,
        privacy_id=False,
        callee=callee,
        callee_key=e164_key(callee) if callee else None,
        emergency_urn=False,
        identity=identity,
        received=t,
        verstat=verstat,
        attest=attest,
    )


def place(engine: ReputationEngine, call: CallFacts) -> Assessment:
    """What the proxy does with an initial INVITE: record, then assess."""
    engine.record(call)
    return engine.assess(call)


def points(a: Assessment) -> dict[str, float]:
    return dict(a.points)


def far(i: int) -> str:
    """Callees far apart from each other (a different NPA each)."""
    return f"+1{312 + i}5550187"


def near(i: int, base: int = 100) -> str:
    """Consecutive callees in one exchange: +1312555 0100, 0101, ..."""
    return f"+1312555{base + i:04d}"


def rotated(i: int) -> str:
    """A different caller number, each in its own thousands-block."""
    return f"+1646{300 + i:03d}1234"


def answered_call(
    engine: ReputationEngine, call: CallFacts, duration: float, *, ring: float = 1.0
) -> None:
    engine.record(call)
    engine.final(call.call_id, 200, call.received + ring)
    engine.ended(call.call_id, call.received + ring + duration)


def rejected_call(engine: ReputationEngine, call: CallFacts, status: int = 486) -> None:
    engine.record(call)
    engine.final(call.call_id, status, call.received + 1.0)


def approx(x: float) -> Any:
    return pytest.approx(x, abs=1e-9)


BURST = int(RATE_RAMPS[0][1]) + 5  # calls within half a second: the full call-rate weight


def burst(engine: ReputationEngine, **kw: Any) -> Assessment:
    """BURST calls from CALLER to far-apart callees within [100.0, 100.5)."""
    a = None
    for i in range(BURST):
        a = place(engine, facts(callee=far(i), t=100.0 + i * 0.5 / BURST, **kw))
    assert a is not None
    return a


# -- Traffic: sliding windows ----------------------------------------------


def test_calls_per_second_minute_hour_slide_over_the_previous_bucket() -> None:
    t = CallerTraffic(7200.0, 256)  # second 7200, minute 120, hour 2
    for i in range(4):
        t.call(7200.0 + 0.1 * i, None)
    assert t.calls(7200.5) == (4.0, 4.0, 4.0)
    # a quarter into the next second, three quarters of the last one remain
    assert t.calls(7201.25) == (3.0, 4.0, 4.0)
    t.call(7201.5, None)
    assert t.calls(7201.5) == (3.0, 5.0, 5.0)  # 4 * 0.5 + 1
    assert t.calls(7203.0)[0] == 0.0  # both second buckets are stale
    # minute 121, a quarter in: the 5 calls of minute 120 count three quarters
    assert t.calls(7275.0) == (0.0, 3.75, 5.0)
    assert t.calls(7200.0 + 3600 + 900) == (0.0, 0.0, 3.75)  # next hour, a quarter in
    assert t.calls(7200.0 + 7200 + 1) == (0.0, 0.0, 0.0)  # two hours on: nothing


def test_a_gap_of_more_than_one_bucket_resets_the_previous_bucket() -> None:
    t = CallerTraffic(7200.0, 256)
    for _ in range(4):
        t.call(7200.0, None)
    t.call(7202.5, None)  # skipped second 7201: the 4 are not "previous"
    assert t.calls(7202.5) == (1.0, 5.0, 5.0)
    t.call(7200.0 + 150, None)  # minute 122 after 120: minute reset
    assert t.calls(7350.0)[1] == 1.0
    t.call(7200.0 + 2 * 3600 + 10, None)  # hour 4 after hour 2: hour reset
    assert t.calls(7200.0 + 2 * 3600 + 10) == (1.0, 1.0, 1.0)


def test_distinct_items_are_counted_closely_and_repeats_are_not() -> None:
    rng = random.Random(20250301)
    callees = [rng.randrange(12_000_000_000, 19_999_999_999) for _ in range(50)]
    once, thrice = CallerTraffic(0.0, 256), CallerTraffic(0.0, 256)
    for c in callees:
        once.call(10.0, c)
    for c in callees * 3:
        thrice.call(10.0, c)
    assert 50 * 0.85 <= once.distinct(10.0) <= 50 * 1.15
    assert thrice.distinct(10.0) == once.distinct(10.0)
    seq = CallerTraffic(0.0, 256)  # structured keys (one exchange) are spread too
    for i in range(50):
        seq.call(10.0, 13125550000 + i)
    assert 50 * 0.85 <= seq.distinct(10.0) <= 50 * 1.15
    # the last hour slides: half way through the next hour, half the estimate
    assert once.distinct(3600.0 + 1800) == approx(once.distinct(10.0) / 2)
    assert once.distinct(3 * 3600.0) == 0.0
    assert CallerTraffic(0.0, 256).distinct(0.0) == 0.0
    # at a higher fill the collisions matter: linear counting corrects for them
    busy = CallerTraffic(0.0, 256)
    for _ in range(150):
        busy.call(10.0, rng.randrange(12_000_000_000, 19_999_999_999))
    assert 150 * 0.85 <= busy.distinct(10.0) <= 150 * 1.15
    assert busy.fan_cur.bit_count() < 150 * 0.85  # the raw bit count would be far off


def test_near_sequential_callees_are_flagged_far_and_repeat_callees_are_not() -> None:
    t = CallerTraffic(0.0, 256)
    assert not t.dialled(13125550100, 3)  # the first: nothing to be near
    assert t.dialled(13125550101, 3)  # +1
    assert t.dialled(13125550104, 3)  # +3: still within the gap
    assert not t.dialled(13125550108, 3)  # +4: not
    assert not t.dialled(13125550108, 3)  # the same number again: not
    assert not t.dialled(14155550000, 3)  # far away
    t.call(6.0, None)
    assert t.sequential(6.0) == 2.0
    # the ring holds the 4 most recent callees: 0100 and 0101 have left it
    assert not t.dialled(13125550099, 3)
    assert t.dialled(13125550105, 3)  # within 3 of 0108, still in the ring
    assert t.sequential(8.0) == 3.0
    assert not hasattr(Traffic(0.0, 256), "dialled")  # ranges keep no callees


def test_a_peer_measures_near_sequential_runs_across_callers() -> None:
    t = PeerTraffic(0.0, 4096)
    assert [t.dialled(13125550100 + i, 3) for i in range(5)] == [1, 2, 3, 4, 5]
    assert t.dialled(14155550000, 3) == 1  # another exchange: a new run
    assert t.dialled(13125550107, 3) == 6  # +2 from 0105: the run goes on
    assert t.dialled(13125550107, 3) == 6  # the same number again extends 0105 once more
    for i in range(PeerTraffic.WINDOW):  # the window moves on: 0100..0107 leave it
        t.dialled(16460000000 + 10 * i, 3)
    assert t.dialled(13125550108, 3) == 1
    assert len(t.runs) <= PeerTraffic.WINDOW + 1


def test_outcome_counters_share_the_hour_buckets() -> None:
    t = CallerTraffic(3600.0, 256)
    t.final(3610.0, True)
    t.final(3620.0, False)
    t.final(3630.0, False)
    t.ended(3700.0, True)
    t.ended(3800.0, False)
    assert t.outcomes(3900.0) == (3.0, 1.0, 2.0, 1.0)  # finals, answered, ended, short
    assert t.outcomes(7200.0 + 900) == (2.25, 0.75, 1.5, 0.75)  # next hour, a quarter in
    t.final(7200.0 + 900, True)
    t.ended(7200.0 + 900, True)
    assert t.outcomes(7200.0 + 900) == (3.25, 1.75, 2.5, 1.75)
    assert t.outcomes(4 * 3600.0) == (0.0, 0.0, 0.0, 0.0)  # a bucket skipped: all gone
    t.final(4 * 3600.0 + 5, False)
    assert t.outcomes(4 * 3600.0 + 5) == (1.0, 0.0, 0.0, 0.0)


# -- TrafficTable ----------------------------------------------------------


def test_traffic_table_evicts_the_least_recently_touched_and_counts_it() -> None:
    table = TrafficTable(3, 256, CallerTraffic)
    a, b = table.touch("a", 0.0), table.touch("b", 1.0)
    table.touch("c", 2.0)
    assert table.touch("a", 3.0) is a  # touching keeps the entry and refreshes it
    table.touch("d", 4.0)  # over capacity: b is the least recently touched
    assert table.get("b") is None and table.get("a") is a and len(table) == 3
    assert table.evicted == 1 and b is not table.get("b")
    assert table.get("c") is not None
    table.get("c")  # a read is not a touch: c is still the oldest
    table.touch("e", 5.0)
    assert table.get("c") is None and table.evicted == 2


def test_traffic_table_memory_is_bounded_by_capacity() -> None:
    table = TrafficTable(100, 256, CallerTraffic)
    for key in range(10_000):
        table.touch(key, float(key))
    assert len(table) == 100 and table.evicted == 9_900
    assert list(table.entries) == list(range(9_900, 10_000))  # the most recent stay, oldest first
    entry = table.touch(9_999, 0.0)
    assert not hasattr(entry, "__dict__")  # __slots__: a fixed size per entry
    assert entry.fan_bits == 256 and len(entry.recent) == 4


# -- artefact: lists, DNO, FTC complaints ------------------------------------

LISTED, BLOCKED, DNO_NUMBER = "+12125550150", "+12125550160", "+18005550180"
COMPLAINED = "+12125550143"  # 2 complaints (no robocall), last on 2025-03-01
OLDER = "+12125550144"  # 2 complaints, last on 2024-12-01: 90 days earlier
ROBO = "+12125550145"  # 1 complaint, a robocall
MANY = "+12125550146"  # 5 complaints
DAY_2025_03_01 = 20148  # days since 1970-01-01


def ftc_row(number: str, when: str, robo: str = "N") -> str:
    return f"{number},2025-03-03 00:00:00,{when},Austin,Texas,512,Other,{robo}"


@pytest.fixture(scope="module")
def artefact(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Artefact]:
    src = tmp_path_factory.mktemp("rep-src")
    files = {
        "ftc": "\n".join(
            [
                ",".join(FTC_COLUMNS),
                ftc_row("2125550143", "2025-02-20 10:00:00"),
                ftc_row("2125550143", "2025-03-01 09:00:00"),
                ftc_row("2125550144", "2024-11-20 10:00:00"),
                ftc_row("2125550144", "2024-12-01 09:00:00"),
                ftc_row("2125550145", "2025-03-01 09:00:00", "Y"),
                *[ftc_row("2125550146", f"2025-03-0{d} 09:00:00") for d in range(1, 6)],
            ]
        ),
        "list": "2125550150",
        "block": "+12125550160",
        "dno": "8005550180",
    }
    specs = []
    for kind, text in files.items():
        (src / kind).write_text(text + "\n")
        specs.append(parse_source(f"{kind}:{src / kind}"))
    out = tmp_path_factory.mktemp("rep-out")
    build(specs, out)
    art = Artefact.load(out)
    yield art
    art.close()


def listed_engine(art: Artefact, age_days: float = 0.0, **cfg: Any) -> ReputationEngine:
    """An engine over the artefact whose clock reads 2025-03-01 + age_days at now=0."""
    slot = ArtefactSlot()
    slot.current = art
    engine = ReputationEngine(rcfg(**cfg), slot)
    engine.wall_offset = (DAY_2025_03_01 + age_days) * 86400.0
    return engine


def test_artefact_days_are_what_the_decay_tests_assume(artefact: Artefact) -> None:
    entry = artefact.lookup(12125550143)  # COMPLAINED
    assert entry is not None and (entry.complaints, entry.last_seen) == (2, DAY_2025_03_01)
    older = artefact.lookup(12125550144)  # OLDER
    assert older is not None and older.last_seen == DAY_2025_03_01 - 90


@pytest.mark.parametrize(
    ("caller", "code"),
    [(LISTED, "blocklist"), (BLOCKED, "blocklist"), (DNO_NUMBER, "dno-spoofed")],
)
def test_list_signals_fire_with_full_weight(artefact: Artefact, caller: str, code: str) -> None:
    a = place(listed_engine(artefact), facts(caller))
    assert points(a)[code] == 100.0 and a.reasons[0] == code and a.score == 100


def test_a_number_on_no_list_gets_no_list_signal(artefact: Artefact) -> None:
    a = place(listed_engine(artefact), facts("+12125550199"))
    assert not {"blocklist", "dno-spoofed", "complaints"} & set(points(a))
    assert a.score == 5 and a.reasons == ("unattested",)


def test_complaints_are_scored_by_count_and_robocall(artefact: Artefact) -> None:
    engine = listed_engine(artefact)
    full = DEFAULT_WEIGHTS["complaints"]
    two = points(place(engine, facts(COMPLAINED)))["complaints"]
    assert two == approx(full * 2 / COMPLAINTS_FULL)
    robo = points(place(engine, facts(ROBO)))["complaints"]  # one robocall counts 1.5
    assert robo == approx(full * 1.5 / COMPLAINTS_FULL)
    many = place(engine, facts(MANY))
    assert points(many)["complaints"] == full and "complaints" in many.reasons  # capped


def test_complaints_decay_with_the_half_life(artefact: Artefact) -> None:
    full = DEFAULT_WEIGHTS["complaints"] * 2 / COMPLAINTS_FULL
    fresh = points(place(listed_engine(artefact), facts(COMPLAINED)))["complaints"]
    aged = points(place(listed_engine(artefact, 90), facts(COMPLAINED)))["complaints"]
    twice = points(place(listed_engine(artefact, 180), facts(COMPLAINED)))["complaints"]
    assert (fresh, aged, twice) == (approx(full), approx(full / 2), approx(full / 4))
    # the same complaints with a last complaint 90 days older: half the points
    older = points(place(listed_engine(artefact), facts(OLDER)))["complaints"]
    assert older == approx(fresh / 2)
    # a half-life of 30 days: after 90 days an eighth
    short = listed_engine(artefact, 90, complaint_half_life_days=30)
    assert points(place(short, facts(COMPLAINED)))["complaints"] == approx(full / 8)
    # a complaint "in the future" (clock behind the data) is not boosted
    early = listed_engine(artefact, -10)
    assert points(place(early, facts(COMPLAINED)))["complaints"] == approx(full)


def test_a_verified_a_attestation_never_outweighs_a_list_hit(artefact: Artefact) -> None:
    engine = listed_engine(artefact)
    for caller, code in ((COMPLAINED, "complaints"), (LISTED, "blocklist")):
        a = place(engine, facts(caller, verstat=PASSED, attest="A"))
        assert code in points(a) and "attestation-a" not in points(a)
    a = place(engine, facts(COMPLAINED, verstat=PASSED, attest="A"))
    assert a.score == round(DEFAULT_WEIGHTS["complaints"] * 2 / COMPLAINTS_FULL)
    invalid = place(engine, facts("+11005550100", verstat=PASSED, attest="A"))
    assert "attestation-a" not in points(invalid) and invalid.score == 100
    clean = place(engine, facts("+12125550199", verstat=PASSED, attest="A"))
    assert points(clean) == {"attestation-a": -20.0} and clean.score == 0


# -- per-call signals: number, identity, attestation ------------------------


@pytest.mark.parametrize("caller", ["+11005550100", "+14115550100", "+1212555014", "2125550"])
def test_invalid_number_fires(caller: str) -> None:
    a = place(ReputationEngine(rcfg()), facts(caller))
    assert points(a)["invalid-number"] == 100.0 and a.score == 100


@pytest.mark.parametrize("caller", [CALLER, "+442079460958", "12125550142", "alice"])
def test_invalid_number_benign(caller: str) -> None:
    a = place(ReputationEngine(rcfg()), facts(caller))
    assert "invalid-number" not in points(a) and a.score == 5


def test_anonymous_only_without_any_network_identity() -> None:
    engine = ReputationEngine(rcfg())
    a = place(engine, facts(None))
    assert points(a) == {"anonymous": 30.0, "unattested": 5.0} and a.score == 35
    assert a.reasons == ("anonymous", "unattested")
    asserted = place(engine, facts(None, asserted=True))
    assert "anonymous" not in points(asserted)
    signed = place(engine, facts(None, identity="aaa.bbb.ccc;info=<https://x>"))
    assert "anonymous" not in points(signed)
    assert "anonymous" not in points(place(engine, facts(CALLER)))


@pytest.mark.parametrize(
    ("verstat", "attest", "expected"),
    [
        (FAILED, None, {"stir-failed": 40.0}),
        (FAILED, "A", {"stir-failed": 40.0}),  # a failed check beats any claim
        (PASSED, "A", {"attestation-a": -20.0}),
        (None, "A", {"unattested": 5.0}),  # an unverified A claim earns nothing
        ("No-TN-Validation", "A", {"unattested": 5.0}),
        (PASSED, "B", {"attestation-b": 5.0}),
        (PASSED, "C", {"attestation-c": 15.0}),
        (None, "B", {"attestation-b": 5.0}),  # an unverified claim may lower trust
        (None, "C", {"attestation-c": 15.0}),
        (None, None, {"unattested": 5.0}),
        ("No-TN-Validation", None, {"unattested": 5.0}),
        (PASSED, None, {}),
    ],
)
def test_attestation_signals(
    verstat: str | None, attest: str | None, expected: dict[str, float]
) -> None:
    a = place(ReputationEngine(rcfg()), facts(verstat=verstat, attest=attest))
    assert points(a) == expected
    assert a.score == max(0, round(sum(expected.values())))
    assert a.reasons == tuple(c for c, p in expected.items() if p > 0)


def test_a_verified_a_credit_lowers_a_traffic_score_and_an_unverified_one_does_not() -> None:
    verified = burst(ReputationEngine(rcfg()), verstat=PASSED, attest="A")
    unverified = burst(ReputationEngine(rcfg()), verstat=None, attest="A")
    assert points(verified)["call-rate"] == 30.0 and points(verified)["attestation-a"] == -20.0
    assert "unattested" in points(unverified) and "attestation-a" not in points(unverified)
    assert unverified.score - verified.score == 25
    assert "attestation-a" not in verified.reasons  # a credit is not a reason


# -- traffic signals of the caller -------------------------------------------


def test_call_rate_fires_on_a_burst() -> None:
    per_s, per_m, per_h = RATE_RAMPS
    engine = ReputationEngine(rcfg())
    n = int(per_s[1]) + 2  # past full evidence, all within one second
    for i in range(n):
        a = place(engine, facts(callee=far(i), t=100.0 + i * 0.9 / n))
    assert points(a)["call-rate"] == 30.0 and a.reasons[0] == "call-rate"
    # a ramp, not a switch: part way up the per-second ramp, part of the weight
    k = int(per_s[0]) + 1
    assert k < per_s[1]
    engine = ReputationEngine(rcfg())
    for i in range(k):
        a = place(engine, facts(callee=far(i), t=100.0 + i * 0.05))
    expected = 30.0 * max(ramp(k, per_s), ramp(k, per_m), ramp(k, per_h))
    assert 0 < expected < 30 and points(a)["call-rate"] == approx(expected)
    # many in a minute, never more than one a second: the minute ramp alone
    engine = ReputationEngine(rcfg())
    n = int(per_m[1]) + 5
    assert n <= 55
    for i in range(n):
        a = place(engine, facts(callee=far(i), t=60.0 + i * 55.0 / n))
    assert ramp(caller_traffic(engine).calls(115.0)[0], per_s) == 0  # the minute ramp alone
    assert points(a)["call-rate"] == 30.0


def test_call_rate_benign() -> None:
    engine = ReputationEngine(rcfg())
    for i in range(10):  # 10 calls in an hour, 6 minutes apart
        a = place(engine, facts(callee=far(i % 3), t=i * 360.0))
    assert "call-rate" not in points(a) and a.score == 5


def test_fan_out_fires_on_many_distinct_callees_without_a_high_rate() -> None:
    n = int(FANOUT_RAMP[1])
    assert n <= RATE_RAMPS[2][0]  # not enough calls in the hour for call-rate
    engine = ReputationEngine(rcfg())
    for i in range(n):  # one a minute, each to a different number
        a = place(engine, facts(callee=far(i), t=i * 59.0))
    p = points(a)
    # linear counting reads 60 distinct callees within its error: most of the weight
    assert p["fan-out"] >= 0.8 * 15.0 and "fan-out" in a.reasons
    assert "call-rate" not in p and "sequential" not in p


def test_fan_out_benign() -> None:
    engine = ReputationEngine(rcfg())
    for i in range(int(FANOUT_RAMP[1])):  # as many calls, to the same 3 numbers
        a = place(engine, facts(callee=far(i % 3), t=i * 59.0))
    assert "fan-out" not in points(a) and a.score == 5


def test_volume_alone_stays_below_the_label_threshold() -> None:
    """A pharmacy's reminders: many calls to many numbers, answered, normal length."""
    engine = ReputationEngine(rcfg())
    for i in range(300):
        call = facts(callee=far(i % 80), t=i * 2.0)
        answered_call(engine, call, duration=60.0)
        a = engine.assess(call)
        assert a.score < engine.cfg.label_at, (i, a)
    assert {"call-rate", "fan-out"} <= set(a.reasons)


def test_sequential_dialling_by_one_caller() -> None:
    engine = ReputationEngine(rcfg())
    for i in range(SEQUENTIAL_MIN_CALLS + 2):  # 5 minutes apart, to 0100, 0101, ...
        a = place(engine, facts(callee=near(i), t=i * 300.0))
        if i < SEQUENTIAL_MIN_CALLS - 1:  # too few calls in the hour: no judgement yet
            assert "sequential" not in points(a)
    assert points(a)["sequential"] == 40.0 and a.reasons[0] == "sequential"


@pytest.mark.parametrize("callee", [far, lambda i: CALLEE], ids=["far-callees", "same-callee"])
def test_sequential_benign(callee: Any) -> None:
    engine = ReputationEngine(rcfg())
    for i in range(SEQUENTIAL_MIN_CALLS + 2):
        a = place(engine, facts(callee=callee(i), t=i * 300.0))
    assert "sequential" not in points(a) and a.score == 5


def sequential_campaign(engine: ReputationEngine, n: int = PEER_SEQUENTIAL_MIN + 2) -> Assessment:
    """n calls through PEER, each from another number, to callees in sequence."""
    for i in range(n):
        a = place(engine, facts(rotated(i), near(i), t=i * 60.0))
        # the peer must carry PEER_SEQUENTIAL_MIN near-sequential calls first
        assert ("sequential" in points(a)) == (i >= PEER_SEQUENTIAL_MIN), (i, a)
    return a


def test_sequential_through_one_peer_with_rotated_caller_ids() -> None:
    engine = ReputationEngine(rcfg())
    a = sequential_campaign(engine)
    assert points(a)["sequential"] == 40.0 and "sequential" in a.reasons
    # the peer path needs this call to be near a recent one too
    a = place(engine, facts(rotated(40), far(5), t=800.0))
    assert "sequential" not in points(a)
    # and is per peer: the same pattern from another peer starts from nothing
    other = place(engine, facts(rotated(41), near(12), t=810.0, source=OTHER_PEER))
    assert "sequential" not in points(other)


def test_a_caller_with_its_own_history_is_not_blamed_for_the_peers_campaign() -> None:
    engine = ReputationEngine(rcfg())
    sequential_campaign(engine)
    for i in range(SEQUENTIAL_MIN_CALLS):  # a busy caller on the same trunk, far callees
        place(engine, facts(CALLER, far(i), t=720.0 + i))
    a = place(engine, facts(CALLER, near(PEER_SEQUENTIAL_MIN + 2), t=730.0))
    assert "sequential" not in points(a)
    newcomer = place(engine, facts(rotated(50), near(PEER_SEQUENTIAL_MIN + 3), t=731.0))
    assert points(newcomer)["sequential"] == 40.0  # no history: inherits the trunk's


def test_sequential_through_one_peer_benign() -> None:
    engine = ReputationEngine(rcfg())
    for i in range(PEER_SEQUENTIAL_MIN + 5):
        a = place(engine, facts(rotated(i), far(i), t=i * 60.0))
        assert "sequential" not in points(a)


def test_short_calls_of_one_caller() -> None:
    engine = ReputationEngine(rcfg())
    for i in range(MIN_ENDED):  # answered, hung up after 3 s
        answered_call(engine, facts(callee=far(i), t=i * 300.0), duration=3.0)
    a = place(engine, facts(callee=far(9), t=3000.0))
    assert points(a)["short-calls"] == 35.0 and "low-asr" not in points(a)
    few = ReputationEngine(rcfg())  # below MIN_ENDED: not enough evidence
    for i in range(MIN_ENDED - 1):
        answered_call(few, facts(callee=far(i), t=i * 300.0), duration=3.0)
    assert "short-calls" not in points(place(few, facts(callee=far(9), t=3000.0)))


def test_short_calls_benign() -> None:
    engine = ReputationEngine(rcfg())
    for i in range(MIN_ENDED + 3):  # answered, two minutes each
        answered_call(engine, facts(callee=far(i % 3), t=i * 300.0), duration=120.0)
    a = place(engine, facts(callee=far(1), t=3000.0))
    assert "short-calls" not in points(a) and a.score == 5


def test_short_call_seconds_is_configurable() -> None:
    engine = ReputationEngine(rcfg(short_call_seconds=200))
    for i in range(MIN_ENDED + 3):
        answered_call(engine, facts(callee=far(i % 3), t=i * 300.0), duration=120.0)
    assert points(place(engine, facts(callee=far(1), t=3000.0)))["short-calls"] == 35.0


def test_low_asr_of_one_caller() -> None:
    n = MIN_FINALS  # exactly enough evidence
    engine = ReputationEngine(rcfg())
    answered_call(engine, facts(callee=far(0), t=0.0), duration=120.0)
    for i in range(1, n):  # 1 answered out of n
        rejected_call(engine, facts(callee=far(i % 3), t=i * 3000.0 / n))
    a = place(engine, facts(callee=far(1), t=3100.0))
    assert points(a)["low-asr"] == 25.0 and "short-calls" not in points(a)
    few = ReputationEngine(rcfg())
    for i in range(MIN_FINALS - 1):  # below MIN_FINALS: not enough evidence
        rejected_call(few, facts(callee=far(i % 3), t=i * 3000.0 / n))
    assert "low-asr" not in points(place(few, facts(callee=far(1), t=3100.0)))


def test_low_asr_benign() -> None:
    n = MIN_FINALS + 2
    engine = ReputationEngine(rcfg())
    for i in range(n):  # half answered: a normal answer rate
        call = facts(callee=far(i % 3), t=i * 3000.0 / n)
        if i % 2:
            rejected_call(engine, call, 480)
        else:
            answered_call(engine, call, duration=90.0)
    a = place(engine, facts(callee=far(1), t=3100.0))
    assert "low-asr" not in points(a) and a.score == 5


def neighbour(i: int) -> str:
    return f"+1212555{17 + 300 * i:04d}"  # the caller's own exchange, far apart


def test_neighbour_spoofing() -> None:
    n = int(NEIGHBOUR_FANOUT[1]) + 4
    engine = ReputationEngine(rcfg())
    for i in range(n):  # one number of 212-555 calling many numbers of 212-555
        a = place(engine, facts(callee=neighbour(i), t=i * 100.0))
    p = points(a)
    assert p["neighbour-spoofing"] == 35.0 and a.reasons[0] == "neighbour-spoofing"
    assert "call-rate" not in p and "sequential" not in p
    # the same caller calling outside its exchange: not this signal
    other = place(engine, facts(callee=CALLEE, t=3000.0))
    assert "neighbour-spoofing" not in points(other) and "fan-out" in points(other)
    same_npa = place(engine, facts(callee="+12125560187", t=3001.0))  # 212-556: another NXX
    assert "neighbour-spoofing" not in points(same_npa)
    # a verified A attestation suppresses it (and earns the credit)
    signed = place(engine, facts(callee=neighbour(n), t=3010.0, verstat=PASSED, attest="A"))
    assert "neighbour-spoofing" not in points(signed)
    assert points(signed)["attestation-a"] == -20.0


def test_neighbour_spoofing_benign() -> None:
    engine = ReputationEngine(rcfg())
    for i in range(int(NEIGHBOUR_FANOUT[0]) - 1):  # a few neighbours: too few callees
        a = place(engine, facts(callee=neighbour(i), t=i * 120.0))
    assert "neighbour-spoofing" not in points(a) and a.score == 5


SNOWSHOE_N = int(max(SNOWSHOE_CALLERS[1], RANGE_MIN_ENDED)) + 5


def block_caller(i: int) -> str:
    return f"+1646555{2000 + 31 * i:04d}"  # numbers of the block +1 646 555 2xxx


def test_snowshoe() -> None:
    engine = ReputationEngine(rcfg())
    for i in range(SNOWSHOE_N):  # many numbers of one block, one short call each
        call = facts(block_caller(i), far(i), t=i * 100.0, source=f"192.0.2.{i}")
        answered_call(engine, call, duration=2.0)
    a = place(engine, facts("+16465552999", far(40), t=3000.0))  # a new number of the block
    p = points(a)
    assert p["snowshoe"] == 45.0 and a.reasons[0] == "snowshoe"
    assert "short-calls" not in p  # no single number has the evidence
    # the block's number alone, as `explain` sees it
    assert points(engine.assess_number("+16465552999", 16465552999, 3000.0)) == {"snowshoe": 45.0}
    # unanswered instead of short: the same
    unanswered = ReputationEngine(rcfg())
    for i in range(max(SNOWSHOE_N, RANGE_MIN_FINALS + 5)):
        call = facts(block_caller(i), far(i), t=i * 100.0, source=f"192.0.2.{i}")
        rejected_call(unanswered, call, 480)
    a = place(unanswered, facts("+16465552999", far(40), t=3000.0))
    assert points(a)["snowshoe"] == 45.0


def test_snowshoe_grows_with_the_number_of_callers_in_the_block() -> None:
    n = int(RANGE_MIN_ENDED) + 2  # enough outcomes, fewer callers than full evidence
    assert SNOWSHOE_CALLERS[0] < n < SNOWSHOE_CALLERS[1]
    engine = ReputationEngine(rcfg())
    for i in range(n):
        call = facts(block_caller(i), far(i), t=i * 100.0, source=f"192.0.2.{i}")
        answered_call(engine, call, duration=2.0)
    block = engine.ranges.get(16465552)
    assert block is not None and n <= block.distinct(3000.0) < SNOWSHOE_CALLERS[1]
    a = engine.assess_number("+16465552999", 16465552999, 3000.0)
    expected = 45.0 * ramp(block.distinct(3000.0), SNOWSHOE_CALLERS)
    assert 0 < expected < 45 and points(a) == {"snowshoe": approx(expected)}


@pytest.mark.parametrize("spread", [False, True], ids=["long-calls", "many-blocks"])
def test_snowshoe_benign(spread: bool) -> None:
    engine = ReputationEngine(rcfg())
    for i in range(SNOWSHOE_N):
        caller = rotated(i) if spread else block_caller(i)
        call = facts(caller, far(i), t=i * 100.0, source=f"192.0.2.{i}")
        answered_call(engine, call, duration=2.0 if spread else 90.0)
    a = place(engine, facts("+16465552999", far(40), t=3000.0))
    assert "snowshoe" not in points(a)


def test_peer_short_calls() -> None:
    engine = ReputationEngine(rcfg())
    n = PEER_MIN_ENDED + 5
    for i in range(n):  # many callers through one peer, each one short call
        answered_call(engine, facts(rotated(i), far(i), t=i * 3000.0 / n), duration=2.0)
    a = place(engine, facts(CALLER, CALLEE, t=3100.0))  # a caller with no history
    p = points(a)
    assert p["peer-short-calls"] == 20.0 and "short-calls" not in p
    if n < PEER_MIN_FINALS:
        assert "peer-low-asr" not in p
    elsewhere = place(engine, facts(CALLER, CALLEE, t=3101.0, source=OTHER_PEER))
    assert "peer-short-calls" not in points(elsewhere) and elsewhere.score == 5
    few = ReputationEngine(rcfg())
    for i in range(PEER_MIN_ENDED - 1):
        answered_call(few, facts(rotated(i), far(i), t=i * 3000.0 / n), duration=2.0)
    assert "peer-short-calls" not in points(place(few, facts(CALLER, CALLEE, t=3100.0)))


def test_peer_low_asr() -> None:
    engine = ReputationEngine(rcfg())
    n = PEER_MIN_FINALS + 10
    for i in range(n):  # many callers, one in 12 answered
        call = facts(rotated(i), far(i), t=i * 3000.0 / n)
        if i % 12 == 0:
            answered_call(engine, call, duration=60.0)
        else:
            rejected_call(engine, call)
    a = place(engine, facts(CALLER, CALLEE, t=3100.0))
    p = points(a)
    assert p["peer-low-asr"] == 10.0 and "low-asr" not in p and "peer-short-calls" not in p
    elsewhere = place(engine, facts(CALLER, CALLEE, t=3101.0, source=OTHER_PEER))
    assert "peer-low-asr" not in points(elsewhere)


def test_peer_signals_benign() -> None:
    engine = ReputationEngine(rcfg())
    n = PEER_MIN_FINALS + 10
    for i in range(n):  # a normal peer: most calls answered, normal length
        call = facts(rotated(i), far(i), t=i * 3000.0 / n)
        if i % 3 == 0:
            rejected_call(engine, call)
        else:
            answered_call(engine, call, duration=60.0)
    a = place(engine, facts(CALLER, CALLEE, t=3100.0))
    assert not {"peer-short-calls", "peer-low-asr"} & set(points(a)) and a.score == 5


# -- call outcomes and bookkeeping -------------------------------------------


def caller_traffic(engine: ReputationEngine, caller: str = CALLER) -> Traffic:
    t = engine.callers.get(e164_key(caller))
    assert t is not None
    return t


def test_a_new_invite_reusing_a_call_id_is_a_new_call() -> None:
    """The engine counts what it is given; telling a retransmission is the
    core's (tests/test_reputation_wiring.py, tests/test_transactions.py)."""
    engine = ReputationEngine(rcfg())
    call = facts(t=10.0)
    engine.record(call)
    engine.record(dataclasses.replace(call, received=10.5))  # same Call-ID
    assert caller_traffic(engine).calls(10.5)[2] == 2.0
    peer = engine.peers.get(PEER)
    rng = engine.ranges.get(CALLER_KEY // 1000)
    assert peer is not None and peer.calls(10.5)[2] == 2.0
    assert rng is not None and rng.calls(10.5)[2] == 2.0
    assert len(engine.calls) == 1  # outcomes belong to the newest call


def test_forget_leaves_the_answer_rate_untouched() -> None:
    engine = ReputationEngine(rcfg())
    call = facts(t=10.0)
    engine.record(call)
    engine.forget(call.call_id)
    engine.final(call.call_id, 486, 11.0)
    engine.ended(call.call_id, 12.0)
    assert not engine.tracking(call.call_id)
    assert caller_traffic(engine).outcomes(12.0) == (0.0, 0.0, 0.0, 0.0)
    assert caller_traffic(engine).calls(12.0)[2] == 1.0  # the call itself still counts
    peer = engine.peers.get(PEER)
    assert peer is not None and peer.outcomes(12.0) == (0.0, 0.0, 0.0, 0.0)


def test_only_the_first_final_counts() -> None:
    engine = ReputationEngine(rcfg())
    ok = facts(t=10.0)
    engine.record(ok)
    engine.final(ok.call_id, 200, 11.0)
    engine.final(ok.call_id, 200, 11.5)  # a retransmitted 200
    engine.final(ok.call_id, 486, 11.6)
    assert caller_traffic(engine).outcomes(12.0) == (1.0, 1.0, 0.0, 0.0)
    busy = facts(t=20.0)
    engine.record(busy)
    engine.final(busy.call_id, 486, 21.0)
    engine.final(busy.call_id, 200, 22.0)
    assert caller_traffic(engine).outcomes(22.0) == (2.0, 1.0, 0.0, 0.0)
    engine.ended(ok.call_id, 15.0)  # the answered call ends after 4 s: short
    engine.ended(ok.call_id, 16.0)  # a retransmitted BYE
    assert caller_traffic(engine).outcomes(22.0) == (2.0, 1.0, 1.0, 1.0)


def test_a_bye_without_an_answer_is_ignored() -> None:
    engine = ReputationEngine(rcfg())
    early = facts(t=10.0)
    engine.record(early)
    engine.ended(early.call_id, 12.0)  # BYE before any final
    rejected = facts(t=20.0)
    rejected_call(engine, rejected)
    engine.ended(rejected.call_id, 22.0)
    engine.ended("never-seen", 23.0)
    assert caller_traffic(engine).outcomes(23.0) == (1.0, 0.0, 0.0, 0.0)


def test_message_counts_in_the_rate_but_has_no_outcome() -> None:
    engine = ReputationEngine(rcfg())
    msg = facts(t=10.0, method="MESSAGE")
    engine.record(msg)
    engine.final(msg.call_id, 200, 10.2)
    engine.ended(msg.call_id, 10.3)
    t = caller_traffic(engine)
    assert t.calls(10.3) == (1.0, 1.0, 1.0) and t.outcomes(10.3) == (0.0, 0.0, 0.0, 0.0)
    assert not engine.tracking(msg.call_id)


def test_the_calls_in_progress_are_bounded_by_max_calls() -> None:
    engine = ReputationEngine(rcfg(max_calls=100))
    calls = [facts(t=i * 0.1, callee=far(i % 50)) for i in range(130)]
    for c in calls:
        engine.record(c)
    assert len(engine.calls) == 100
    assert not engine.tracking(calls[0].call_id) and not engine.tracking(calls[29].call_id)
    assert engine.tracking(calls[30].call_id)
    engine.final(calls[0].call_id, 200, 20.0)  # evicted: its outcome goes uncounted
    engine.final(calls[129].call_id, 200, 20.0)
    assert caller_traffic(engine).outcomes(20.0) == (1.0, 1.0, 0.0, 0.0)


def test_the_traffic_tables_are_bounded_by_their_config() -> None:
    engine = ReputationEngine(rcfg(max_numbers=100, max_ranges=100, max_peers=3))
    for i in range(150):
        engine.record(facts(f"+1646{200 + i:03d}1234", t=float(i), source=f"192.0.2.{i % 5}"))
    assert (len(engine.callers), engine.callers.evicted) == (100, 50)
    assert (len(engine.ranges), engine.ranges.evicted) == (100, 50)
    assert len(engine.peers) == 3
    assert engine.callers.get(16462001234) is None and engine.callers.get(16463491234) is not None


def test_lowering_the_bounds_on_reload_brings_the_tables_within_them() -> None:
    engine = ReputationEngine(rcfg())
    for i in range(300):
        engine.record(facts(f"+1646555{i:04d}", t=float(i)))
    engine.configure(rcfg(max_numbers=100, max_calls=100))
    assert len(engine.callers) <= 100 and len(engine.calls) <= 100  # trimmed at once
    for i in range(300, 400):  # another 100 calls after the reload
        engine.record(facts(f"+1646555{i:04d}", t=float(i)))
    assert len(engine.callers) <= 100 and len(engine.calls) <= 100


# -- observe mode, weights, configure ----------------------------------------


def test_a_signal_in_observe_mode_is_observed_not_scored() -> None:
    enforced = burst(ReputationEngine(rcfg()))
    observed = burst(ReputationEngine(rcfg(modes={"call-rate": "observe"})))
    assert "call-rate" in enforced.reasons and "call-rate" not in enforced.observed
    assert "call-rate" not in observed.reasons and observed.observed == ("call-rate",)
    assert points(observed)["call-rate"] == 30.0  # still shown with its points
    assert enforced.score - observed.score == 30
    assert observed.score == round(sum(p for c, p in observed.points if c != "call-rate"))


def test_a_negative_signal_in_observe_mode_gives_no_credit_and_is_logged() -> None:
    engine = ReputationEngine(rcfg(modes={"attestation-a": "observe"}))
    burst(engine)
    signed = place(engine, facts(callee=far(BURST), t=100.6, verstat=PASSED, attest="A"))
    assert points(signed)["attestation-a"] == -20.0 and points(signed)["call-rate"] == 30.0
    assert signed.score == round(sum(p for c, p in signed.points if c != "attestation-a"))
    assert "attestation-a" not in signed.reasons and signed.observed == ("attestation-a",)


def test_weight_zero_switches_a_signal_off() -> None:
    a = burst(ReputationEngine(rcfg(weights={"call-rate": 0})))
    assert "call-rate" not in points(a) and "call-rate" not in a.reasons + a.observed
    quiet = place(ReputationEngine(rcfg(weights={"unattested": 0})), facts())
    assert quiet == Assessment(0, (), (), ())


def test_configure_changes_weights_and_modes_and_keeps_the_traffic() -> None:
    engine = ReputationEngine(rcfg())
    before = burst(engine)
    last = facts(callee=far(0), t=100.5)
    traffic, calls = caller_traffic(engine), dict(engine.calls)
    engine.configure(rcfg(weights={"call-rate": 60}, modes={"unattested": "observe"}, label_at=50))
    after = engine.assess(last)
    assert points(before)["call-rate"] == 30.0 and points(after)["call-rate"] == 60.0
    assert after.observed == ("unattested",) and "unattested" in before.reasons
    assert caller_traffic(engine) is traffic and traffic.calls(100.5)[2] == BURST
    assert engine.calls == calls and engine.cfg.label_at == 50


def test_points_come_strongest_first_and_score_is_clamped() -> None:
    engine = ReputationEngine(rcfg(weights={"anonymous": 90}))
    a = place(engine, facts(None, verstat=FAILED))
    assert a.points == (("anonymous", 90.0), ("stir-failed", 40.0))
    assert a.score == 100 and a.reasons == ("anonymous", "stir-failed")
    credit_engine = ReputationEngine(rcfg(weights={"attestation-a": -100}))
    credit = place(credit_engine, facts(verstat=PASSED, attest="A"))
    assert credit.score == 0


# -- decide() and ReputationCheck ---------------------------------------------

P, L, B = Action.PASS, Action.LABEL, Action.BLOCK


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        # scores: 0, 59, 60 (label_at), 89, 90 (block_at), 100
        ("off", (P, P, P, P, P, P)),
        ("label", (P, P, L, L, L, L)),
        ("block-high-confidence", (P, P, L, L, B, B)),
        ("block-all-suspected", (P, P, B, B, B, B)),
    ],
)
def test_decide_every_policy_and_score_band(policy: str, expected: tuple[Action, ...]) -> None:
    got = tuple(decide(policy, s, 60, 90) for s in (0, 59, 60, 89, 90, 100))
    assert got == expected
    assert set(POLICIES) == {"off", "label", "block-high-confidence", "block-all-suspected"}


def test_decide_honours_other_thresholds() -> None:
    assert decide("block-high-confidence", 45, 40, 45) is B
    assert decide("block-high-confidence", 44, 40, 45) is L
    assert decide("label", 39, 40, 45) is P


SUBSCRIBER, OPTED_OUT, STRICT = "+13125550101", "+13125550102", "+13125550103"


def checked(check: ReputationCheck, call: CallFacts) -> Any:
    check.engine.record(call)
    return check.check(call)


def policy_lookup(seen: list[int | None]) -> Any:
    policies = {
        e164_key(SUBSCRIBER): "block-all-suspected",
        e164_key(OPTED_OUT): "off",
        e164_key(STRICT): "block-high-confidence",
    }

    def lookup(key: int | None) -> str | None:
        seen.append(key)
        return policies.get(key)

    return lookup


def test_reputation_check_uses_the_subscriber_policy_before_the_carrier_default() -> None:
    seen: list[int | None] = []
    engine = ReputationEngine(rcfg())  # carrier_policy "label"
    check = ReputationCheck(engine, policy_lookup(seen))

    def verdict(callee: str) -> Any:  # anonymous + failed STIR: 70 points
        v = checked(check, facts(None, callee, verstat=FAILED))
        assert v is not None and v.score == 70 and v.reasons == ("stir-failed", "anonymous")
        return v.action

    assert verdict(CALLEE) is L  # no policy of their own: the carrier's
    assert verdict(SUBSCRIBER) is B
    assert verdict(OPTED_OUT) is P
    assert verdict(STRICT) is L  # 70 < block_at
    assert seen == [e164_key(c) for c in (CALLEE, SUBSCRIBER, OPTED_OUT, STRICT)]


def test_analytics_block_only_for_block_policies() -> None:
    high = rcfg(weights={"anonymous": 100})  # anonymous alone scores 100
    for carrier, expected in [("label", L), ("off", P), ("block-high-confidence", B)]:
        engine = ReputationEngine(dataclasses.replace(high, carrier_policy=carrier))
        v = checked(ReputationCheck(engine), facts(None))
        assert v is not None and v.score == 100 and v.action is expected, carrier
    engine = ReputationEngine(high)
    strict = ReputationCheck(engine, policy_lookup([]))
    v = checked(strict, facts(None, STRICT))
    assert v is not None and v.action is B


def test_reputation_check_has_no_opinion_on_a_clean_call_and_reports_observed() -> None:
    engine = ReputationEngine(rcfg())
    assert checked(ReputationCheck(engine), facts(verstat=PASSED)) is None
    observing = ReputationEngine(rcfg(modes={"unattested": "observe"}))
    v = checked(ReputationCheck(observing), facts())
    assert v is not None
    assert (v.action, v.score, v.reasons, v.observed) == (P, 0, (), ("unattested",))
    below = checked(ReputationCheck(engine), facts())  # a score below label_at: pass
    assert below is not None
    assert (below.action, below.score, below.reasons) == (P, 5, ("unattested",))


# -- [reputation] config -------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "key", "problem"),
    [
        ({"weights": {"robocalls": 10}}, "reputation.weights.robocalls", "unknown key"),
        ({"modes": {"callrate": "observe"}}, "reputation.modes.callrate", "unknown key"),
        (
            {"modes": {"call-rate": "shadow"}},
            "reputation.modes.call-rate",
            "expected one of enforce, observe",
        ),
        (
            {"label_at": 80, "block_at": 70},
            "reputation.block_at",
            "must not be below reputation.label_at",
        ),
        ({"carrier_policy": "block"}, "reputation.carrier_policy", "expected one of off, label"),
        (
            {"weights": {"call-rate": 150}},
            "reputation.weights.call-rate",
            "expected an integer from -100 to 100",
        ),
        ({"weights": {"call-rate": "high"}}, "reputation.weights.call-rate", "expected an integer"),
        ({"label_at": 0}, "reputation.label_at", "expected an integer from 1 to 100"),
        ({"max_calls": 10}, "reputation.max_calls", "expected an integer"),
        ({"short_call_seconds": 0.5}, "reputation.short_call_seconds", "expected a number"),
        ({"enable": True}, "reputation.enable", "unknown key"),
        ({"enabled": "yes"}, "reputation.enabled", "expected true or false"),
        ({"weights": 5}, "reputation.weights", "expected a table"),
    ],
)
def test_reputation_config_errors_name_the_key(
    section: dict[str, Any], key: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"reputation": section})
    assert info.value.key == key and problem in info.value.problem, str(info.value)
    assert str(info.value).startswith(f"{key}: ")


def test_reputation_config_from_toml() -> None:
    text = """
    [blocklists]
    ftc_action = "label"
    [reputation]
    label_at = 50
    block_at = 50
    carrier_policy = "block-high-confidence"
    complaint_half_life_days = 30
    [reputation.weights]
    call-rate = 50
    attestation-a = -40
    snowshoe = 0
    [reputation.modes]
    neighbour-spoofing = "observe"
    """
    cfg = parse_config(tomllib.loads(text))
    rep = cfg.reputation
    assert (rep.label_at, rep.block_at, rep.carrier_policy) == (50, 50, "block-high-confidence")
    assert rep.complaint_half_life_days == 30.0 and cfg.blocklists.ftc_action == "label"
    assert rep.weights == {**DEFAULT_WEIGHTS, "call-rate": 50, "attestation-a": -40, "snowshoe": 0}
    assert rep.modes["neighbour-spoofing"] == "observe"
    assert {m for c, m in rep.modes.items() if c != "neighbour-spoofing"} == {"enforce"}


def test_reputation_defaults() -> None:
    cfg = parse_config({})
    assert cfg.reputation == ReputationConfig() and cfg.reputation.enabled
    assert cfg.blocklists.ftc_action == "reputation"
    assert cfg.sip.record_route  # reputation needs the BYEs
    assert set(cfg.reputation.weights) == set(SIGNALS) == set(SIGNAL_HELP)
    assert set(cfg.reputation.modes.values()) == {"enforce"}
    with pytest.raises(ConfigError) as info:
        parse_config({"blocklists": {"ftc_action": "ignore"}})
    assert info.value.key == "blocklists.ftc_action"


# -- call_facts: verstat and attest -------------------------------------------


def parsed(data: bytes) -> SipRequest:
    msg = parse_datagram(data)
    assert isinstance(msg, SipRequest)
    return msg


def passport(payload: dict[str, Any]) -> str:
    def b64(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    header = b64({"alg": "ES256", "ppt": "shaken", "typ": "passport", "x5u": "https://c/x.pem"})
    return f"{header}.{b64(payload)}.c2lnbmF0dXJl;info=<https://c/x.pem>;alg=ES256;ppt=shaken"


def test_verstat_as_a_user_parameter_inside_the_user_part() -> None:
    call = call_facts(parsed(request(caller=f"+12125550142;verstat={PASSED}")), PEER)
    assert call.verstat == PASSED and call.caller == CALLER and call.caller_key == CALLER_KEY


@pytest.mark.parametrize(
    "pai",
    [
        f"<sip:+12125550142@peer.example.net;user=phone;verstat={FAILED}>",
        f"<sip:+12125550142@peer.example.net;VERSTAT={FAILED};user=phone>",
        f"<tel:+12125550142;verstat={FAILED}>",
    ],
)
def test_verstat_as_a_uri_parameter_of_the_asserted_identity(pai: str) -> None:
    call = call_facts(parsed(request(extra=(f"P-Asserted-Identity: {pai}",))), PEER)
    assert call.verstat == FAILED and call.caller_key == CALLER_KEY and call.asserted


def test_no_verstat() -> None:
    assert call_facts(parsed(request()), PEER).verstat is None
    # the identity in use is the PAI: a verstat on From alone does not apply
    pai = "P-Asserted-Identity: <sip:+12125550142@peer.example.net;user=phone>"
    call = call_facts(parsed(request(caller=f"+12125550142;verstat={PASSED}", extra=(pai,))), PEER)
    assert call.verstat is None


def test_attest_from_the_shared_shaken_invite() -> None:
    path = shared_dir("sip-corpus") / "invite_identity_shaken.sip"
    call = call_facts(parsed(path.read_bytes()), PEER)
    assert call.attest == "A" and call.verstat is None
    # an A claim read without verification earns no credit
    a = place(ReputationEngine(rcfg()), dataclasses.replace(call, received=1.0))
    assert "attestation-a" not in points(a) and "unattested" in points(a)


def test_attest_from_a_crafted_identity_header() -> None:
    for level in "ABC":
        identity = passport({"attest": level, "orig": {"tn": "12125550142"}})
        call = call_facts(parsed(request(extra=(f"Identity: {identity}",))), PEER)
        assert call.attest == level and call.identity == identity
        assert attest_claim(identity) == level
    spaced = passport({"orig": {"tn": "1"}, "attest" : "B"}).replace('"attest"', '"attest" ')  # fmt: skip
    assert attest_claim(spaced) == "B"
    second = f"{passport({'attest': 'C'})}, {passport({'attest': 'A'})}"
    assert attest_claim(second) == "C"  # the first PASSporT's claim
    bare = passport({"attest": "C"}).split(";", 1)[0]  # no parameters on the first one
    assert attest_claim(f"{bare}, {passport({'attest': 'A'})}") == "C"


def test_attest_needs_three_parts_and_a_bounded_payload() -> None:
    good = passport({"attest": "A"}).split(";", 1)[0]
    assert attest_claim(good) == "A"
    assert attest_claim(good + ".extra") is None  # four parts: not a JWS
    header, _, sig = good.split(".")
    big = (
        base64.urlsafe_b64encode(json.dumps({"attest": "A", "pad": "x" * 4000}).encode())
        .rstrip(b"=")
        .decode()
    )
    assert len(big) > 4096 and attest_claim(f"{header}.{big}.{sig}") is None


@pytest.mark.parametrize(
    "identity",
    [
        "eyJhbGciOiJFUzI1NiJ9..c2lnbmF0dXJl;info=<https://c/x.pem>",  # compact form: no payload
        "garbage",
        "a.b",
        "a.b.c.d",
        "!!!.%%%.###",
        "eyJhbGciOiJFUzI1NiJ9.eyJhdHRlc3QiOiJEIn0.c2ln",  # attest "D"
        "eyJhbGciOiJFUzI1NiJ9.eyJvcmlnIjp7fX0.c2ln",  # no attest claim
        "eyJhbGciOiJFUzI1NiJ9.e.c2ln",  # payload of one character: not base64
        "x." + "A" * 5000 + ".y",  # absurdly long payload
    ],
)
def test_attest_is_none_for_compact_or_garbage_identity(identity: str) -> None:
    assert attest_claim(identity) is None
    call = call_facts(parsed(request(extra=(f"Identity: {identity}",))), PEER)
    assert call.attest is None and call.identity == identity


# -- explain_number -------------------------------------------------------------


def busy_engine(**cfg: Any) -> ReputationEngine:
    engine = ReputationEngine(rcfg(**cfg))
    for i in range(30):  # 30 calls, one a minute, to consecutive numbers; answered ones short
        call = facts(callee=near(i), t=100.0 + i * 60.0)
        if i % 5:
            answered_call(engine, call, duration=2.0)
        else:
            rejected_call(engine, call)
    return engine


def explain(engine: ReputationEngine, number: str, now: float) -> tuple[int, Any]:
    return explain_number(engine, number, now)


def enforced_sum(body: dict[str, Any]) -> float:
    return float(sum(s["points"] for s in body["signals"] if s["mode"] == "enforce"))


def test_explain_breaks_the_score_down_by_signal() -> None:
    engine = busy_engine()
    status, body = explain(engine, CALLER, 1900.0)
    assert status == 200 and body["number"] == CALLER
    signals = {s["signal"]: s for s in body["signals"]}
    assert set(signals) == {"sequential", "short-calls", "fan-out"}
    assert 75 < body["score"] < 100
    assert abs(enforced_sum(body) - body["score"]) <= 0.5 + 0.05 * len(signals)
    assert body["score"] == engine.assess_number(CALLER, CALLER_KEY, 1900.0).score
    assert signals["sequential"] == {
        "signal": "sequential", "points": 40.0, "weight": 40, "strength": 1.0,
        "mode": "enforce", "what": SIGNAL_HELP["sequential"],
    }  # fmt: skip
    assert 0 < signals["fan-out"]["strength"] < 1
    exact = dict(engine.assess_number(CALLER, CALLER_KEY, 1900.0).points)["fan-out"]
    assert signals["fan-out"]["points"] == round(exact, 1) != round(exact)
    assert body["reasons"][0] in signals and body["observed"] == []
    assert (
        body["action_by_policy"] == {p: decide(p, body["score"], 60, 90).value for p in POLICIES}
        and body["carrier_policy"] == "label"
    )
    traffic = body["traffic"]
    assert traffic["calls_last_hour"] == 30.0 and traffic["distinct_callees_last_hour"] > 25
    assert traffic["near_sequential_last_hour"] == 29.0
    assert traffic["answer_seizure_ratio"] == 0.8 and traffic["short_call_share"] == 1.0
    assert body["thousands_block"]["distinct_callers_last_hour"] == 1.0
    assert "per-call signals" in body["not_included"]
    json.dumps(body)  # served as JSON as it is


def test_explain_sum_with_an_observed_signal_and_no_traffic() -> None:
    engine = busy_engine(modes={"sequential": "observe"})
    status, body = explain(engine, "2125550142", 1900.0)  # NANP form works too
    assert status == 200 and body["number"] == CALLER
    modes = {s["signal"]: s["mode"] for s in body["signals"]}
    assert modes["sequential"] == "observe" and body["observed"] == ["sequential"]
    assert "sequential" not in body["reasons"]
    assert abs(enforced_sum(body) - body["score"]) <= 0.5 + 0.05 * len(modes)
    status, quiet = explain(engine, "+13125559999", 1900.0)
    assert status == 200 and quiet["score"] == 0 and quiet["signals"] == []
    assert quiet["traffic"] is None and quiet["thousands_block"] is None


def test_explain_rendering_marks_observed_signals() -> None:
    status, body = explain(busy_engine(modes={"sequential": "observe"}), CALLER, 1900.0)
    text = render(body).splitlines()
    assert status == 200 and text[0].startswith(f"{CALLER}: score {body['score']} ")
    sequential = next(line for line in text if "sequential" in line)
    assert sequential.endswith("[observe]") and "+40.0" in sequential
    assert not next(line for line in text if "short-calls" in line).endswith("[observe]")
    status, quiet = explain(ReputationEngine(rcfg()), "+13125559999", 0.0)
    assert "  no signal fired" in render(quiet).splitlines()


def test_explain_clamped_score_and_invalid_number() -> None:
    engine = ReputationEngine(rcfg())
    status, body = explain(engine, "+11005550100", 0.0)
    assert status == 200 and body["score"] == 100 and body["reasons"] == ["invalid-number"]
    assert body["action_by_policy"]["block-high-confidence"] == "block"


@pytest.mark.parametrize("number", ["hello", "555", "", "+0123456789", "tel:+12125550142"])
def test_explain_bad_number_is_400(number: str) -> None:
    status, body = explain(ReputationEngine(rcfg()), number, 0.0)
    assert status == 400 and "not a telephone number" in str(body["error"])


def test_verstat_is_believed_only_from_the_configured_sources() -> None:
    trusting = ReputationEngine(rcfg(verstat_from=["198.51.100.0/24"]))
    wary = ReputationEngine(rcfg(verstat_from=[]))
    forged = facts(verstat="TN-Validation-Passed", attest="A")
    assert "attestation-a" in points(place(trusting, forged))
    untrusted = place(wary, forged)  # a peer wrote verstat on its own call: ignored
    assert "attestation-a" not in points(untrusted) and "unattested" in points(untrusted)
    lower = facts(verstat="tn-validation-failed")  # matched without regard to case
    assert "stir-failed" in points(place(trusting, lower))
    assert "stir-failed" not in points(place(wary, lower))
    with pytest.raises(ConfigError, match=r"reputation.verstat_from\[0\]"):
        rcfg(verstat_from=["not-an-address"])
