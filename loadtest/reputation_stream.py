"""The simulated carrier stream of the reputation benchmark and the engine it
warms: numbers, the artefact, INVITEs with their finals and BYEs second by
second, and the loop that feeds them to the engine, timing each kind of work."""

from __future__ import annotations

import datetime
import random
import time
from bisect import bisect_left
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from blocklists.build import build
from blocklists.sources import FTC_COLUMNS, Kind, Source
from blocklists.store import Artefact
from proxy.reputation import ReputationConfig, ReputationEngine
from proxy.screening.reputation_check import ReputationCheck
from proxy.sip.identity import CallFacts
from proxy.sip.limits import DEFAULT_LIMITS

RATE = 200  # INVITEs per simulated second
SEED = 20261122
NANP = 10_000_000_000
# `now` is the proxy's monotonic clock: 11.6 days of uptime, so second,
# minute and hour bucket numbers are ints beyond CPython's small-int cache
T_START = 1_000_000.0
# the simulated clock maps to this Unix day (complaint ages count from it)
BENCH_DAY = datetime.date(2025, 9, 1)
EPOCH = datetime.date(1970, 1, 1)
SUBSCRIBER_NPAS = (312, 773, 872, 847, 630, 708)
FAIL_STATUSES = (486, 480, 487, 404, 603)
N_PEERS, KNOWN_CALLERS, HEAVY_CALLERS = 200, 100_000, 500
# the carrier's own SBCs, whose verstat is believed: two peers in three
VERSTAT_FROM = ("198.51.0.0/16", "203.51.0.0/16")
# Call-ID length a carrier SBC typically sends, and the longest one the parser
# lets through (one header line of max_line_bytes, compact form "i: ")
TYPICAL_CALL_ID = 40
MAX_CALL_ID = DEFAULT_LIMITS.max_line_bytes - len("i: ")


# -- numbers and the artefact ---------------------------------------------------------------------


VALID_NPA = [a for a in range(200, 1000) if a % 100 != 11]


def random_nanp(rnd: random.Random, npa: int | None = None, nxx: int | None = None) -> int:
    """A valid NANP key: NPA and NXX 200-999, no N11 area code."""
    r = rnd.random
    if npa is None:
        npa = VALID_NPA[int(r() * len(VALID_NPA))]
    if nxx is None:
        nxx = 200 + int(r() * 800)
    return NANP + npa * 10_000_000 + nxx * 10_000 + int(r() * 10_000)


@dataclass
class Listed:
    keys: list[int]  # every listed number, for the hit case
    sources: dict[str, int]


def build_artefact(work: Path, rnd: random.Random) -> tuple[Artefact, Listed]:
    """A small artefact from the three kinds of number source: a plain list,
    a Do-Not-Originate list and an FTC complaints CSV (repeat complaints,
    robocall flags, violation dates over the year before BENCH_DAY)."""
    plain = [random_nanp(rnd) for _ in range(20_000)]
    dno = [random_nanp(rnd) for _ in range(2_000)]
    ftc_numbers = [random_nanp(rnd) for _ in range(8_000)]
    rows = [",".join(FTC_COLUMNS)]
    for i in range(10_000):
        key = ftc_numbers[i % len(ftc_numbers)] if i >= 8_000 else ftc_numbers[i]
        when = BENCH_DAY - datetime.timedelta(days=rnd.randrange(1, 365))
        robo = "Y" if rnd.random() < 0.6 else "N"
        rows.append(
            f"{str(key)[1:]},{when} 00:00:00,{when} 10:00:00,Springfield,Illinois,217,Other,{robo}"
        )
    (work / "list.txt").write_text("".join(f"{str(k)[1:]}\n" for k in plain))
    (work / "dno.txt").write_text("".join(f"{str(k)[1:]}\n" for k in dno))
    (work / "ftc.csv").write_text("\r\n".join(rows) + "\r\n")
    sources = [
        Source(Kind.LIST, work / "list.txt"),
        Source(Kind.DNO, work / "dno.txt"),
        Source(Kind.FTC, work / "ftc.csv"),
    ]
    out = work / "artefact"
    build(sources, out)
    art = Artefact.load(out)
    listed = Listed(
        keys=sorted({*plain, *dno, *ftc_numbers}),
        sources={"list": len(plain), "dno": len(dno), "ftc_rows": 10_000},
    )
    return art, listed


# -- the simulated traffic ------------------------------------------------------------------------


@dataclass
class Batch:
    """One simulated second: its INVITEs, then the finals and BYEs due in it."""

    second: int
    calls: list[CallFacts]
    finals: list[tuple[str, int]]
    ends: list[str]


@dataclass
class Mix:
    """Shares of INVITEs by caller class; the rest come from brand-new numbers."""

    listed: float = 0.01  # a number in the artefact
    sequential: float = 0.04  # a campaign dialling one exchange in order
    snowshoe: float = 0.04  # a campaign spread over many numbers of a few blocks
    neighbour: float = 0.03  # caller spoofed into the callee's NPA-NXX
    heavy: float = 0.10  # pharmacies, schools, call centres: many calls each
    known: float = 0.38  # repeat callers from a population of 100k
    anonymous: float = 0.03
    invalid: float = 0.005
    leak: bool = False  # no final or BYE ever arrives


class Stream:
    """A deterministic carrier stream, generated second by second."""

    def __init__(self, seed: int, listed: list[int]) -> None:
        self.rnd = rnd = random.Random(seed)
        self.mix = Mix()
        self.listed = listed
        self.peers = [
            f"{(198, 203, 192)[i % 3]}.51.{100 + i // 3}.{10 + i % 7}" for i in range(N_PEERS)
        ]
        cum, acc = [], 0.0
        for i in range(N_PEERS):  # Zipf: a few big carriers, a long tail
            acc += 1.0 / (i + 1)
            cum.append(acc)
        self.peer_cum = cum
        self.known = [random_nanp(rnd) for _ in range(KNOWN_CALLERS)]
        self.heavy = [random_nanp(rnd) for _ in range(HEAVY_CALLERS)]
        self.seq_callers = [random_nanp(rnd) for _ in range(20)]
        self.seq_next = random_nanp(rnd, 312, 555) // 10_000 * 10_000
        self.snow_blocks = [random_nanp(rnd) // 1000 for _ in range(50)]
        self.second = int(T_START)
        self.n = 0
        self.finals: dict[int, list[tuple[str, int]]] = {}
        self.ends: dict[int, list[str]] = {}
        self.new_callers = 0
        self.calls_made = 0

    def pick(self, seq: list[int]) -> int:
        return seq[int(self.rnd.random() * len(seq))]

    def invite(self, t: float) -> tuple[CallFacts, bool]:
        """One INVITE at time t; returns it and whether it is campaign traffic."""
        rnd, mix, pick = self.rnd, self.mix, self.pick
        r = rnd.random
        self.n += 1
        peer = self.peers[bisect_left(self.peer_cum, r() * self.peer_cum[-1])]
        callee = random_nanp(rnd, SUBSCRIBER_NPAS[int(r() * len(SUBSCRIBER_NPAS))])
        campaign = False
        x = r()
        caller: int | None
        if (x := x - mix.listed) < 0:
            caller = pick(self.listed)
        elif (x := x - mix.sequential) < 0:
            caller = pick(self.seq_callers)
            self.seq_next += 1 + (r() < 0.5)
            callee, campaign = self.seq_next, True
            peer = self.peers[20 + self.n % 5]
        elif (x := x - mix.snowshoe) < 0:
            caller = pick(self.snow_blocks) * 1000 + int(r() * 1000)
            campaign = True
            peer = self.peers[30 + self.n % 7]
        elif (x := x - mix.neighbour) < 0:
            caller = callee // 10_000 * 10_000 + int(r() * 10_000)
            campaign = True
        elif (x := x - mix.heavy) < 0:
            caller = pick(self.heavy)
        elif (x := x - mix.known) < 0:
            caller = pick(self.known)
        elif (x := x - mix.anonymous) < 0:
            caller = None
        elif (x := x - mix.invalid) < 0:
            caller = NANP + 10_000_000 + int(r() * 10_000_000)  # NPA 001: cannot exist
        else:
            caller = random_nanp(rnd)
            self.new_callers += 1
        a = r()
        verstat: str | None = "TN-Validation-Passed"
        attest: str | None = None
        if caller is None or a < 0.27:
            verstat = None
        elif a < 0.72:
            attest = "A"
        elif a < 0.84:
            attest = "B"
        elif a < 0.97:
            attest = "C"
        else:
            verstat = "TN-Validation-Failed"
        call_id = f"{rnd.getrandbits(64):016x}{self.n:08x}@{peer}"[:TYPICAL_CALL_ID]
        known = caller is not None
        facts = CallFacts(  # positional: twice as fast to build as with keywords
            "INVITE",  # method
            call_id,
            peer,  # source
            f"+{caller}" if known else None,  # caller
            caller,  # caller_key
            None,  # caller_display
            known,  # asserted
            not known,  # anonymous
            not known,  # privacy_id
            f"+{callee}",  # callee
            callee,  # callee_key
            False,  # emergency_urn
            "eyJhbGciOiJFUzI1NiJ9.e30.sig" if attest else None,  # identity
            t,  # received
            verstat,
            attest,
        )
        return facts, campaign

    def outcome(self, call_id: str, t: float, campaign: bool) -> None:
        """Schedule the call's final response and, if answered, its BYE."""
        r = self.rnd.random
        answered = r() < (0.2 if campaign else 0.55)
        ring = 2.0 + 23.0 * r() if answered else 0.5 + 14.5 * r()
        status = 200 if answered else FAIL_STATUSES[int(r() * len(FAIL_STATUSES))]
        self.finals.setdefault(int(t + ring), []).append((call_id, status))
        if answered:
            short = r() < (0.7 if campaign else 0.1)
            dur = 1.0 + 8.0 * r() if short else 15.0 + 585.0 * r()
            self.ends.setdefault(int(t + ring + dur), []).append(call_id)

    def batches(self, n_calls: int) -> list[Batch]:
        out: list[Batch] = []
        made = 0
        while made < n_calls:
            s = self.second
            calls = []
            for j in range(RATE):
                facts, campaign = self.invite(s + j / RATE)
                calls.append(facts)
                if not self.mix.leak:
                    self.outcome(facts.call_id, facts.received, campaign)
            made += len(calls)
            self.calls_made += len(calls)
            out.append(Batch(s, calls, self.finals.pop(s, []), self.ends.pop(s, [])))
            self.second += 1
        return out


# -- feeding the engine ---------------------------------------------------------------------------


class GcClock:
    """Time spent in cyclic garbage collections, from gc.callbacks."""

    def __init__(self) -> None:
        self.total = 0
        self._start = 0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._start = time.perf_counter_ns()
        else:
            self.total += time.perf_counter_ns() - self._start


GC_CLOCK = GcClock()


@dataclass
class Segments:
    """ns of wall clock, thread CPU and GC per timed segment of a repeat, and counts."""

    wall: dict[str, int] = field(default_factory=dict)
    cpu: dict[str, int] = field(default_factory=dict)
    gc: dict[str, int] = field(default_factory=dict)
    ops: dict[str, int] = field(default_factory=dict)

    def add(self, name: str, wall: int, cpu: int, gc_ns: int, ops: int) -> None:
        self.wall[name] = self.wall.get(name, 0) + wall
        self.cpu[name] = self.cpu.get(name, 0) + cpu
        self.gc[name] = self.gc.get(name, 0) + gc_ns
        self.ops[name] = self.ops.get(name, 0) + ops


def run_batches(
    engine: ReputationEngine, check: ReputationCheck, batches: list[Batch], mode: str
) -> Segments:
    """Feed the batches in time order, timing each kind of work apart.

    mode "together": record then check per INVITE, as the proxy does, and the
    same loop calling a no-op (the loop's own cost); "split": a second's
    records, then its checks; "untimed": record, final, ended only (check
    only reads the state, so the state is the same without it)."""
    record, assess, final, ended = engine.record, check.check, engine.final, engine.ended
    clock, cpu_clock, gc_clock = time.perf_counter_ns, time.thread_time_ns, GC_CLOCK
    seg = Segments()

    def noop(c: object) -> None:
        return None

    for b in batches:
        calls, finals, ends = b.calls, b.finals, b.ends
        now = b.second + 0.999
        if mode == "untimed":
            for c in calls:
                record(c)
            for cid, status in finals:
                final(cid, status, now)
            for cid in ends:
                ended(cid, now)
            continue
        if mode == "together":
            g0, c0, t0 = gc_clock.total, cpu_clock(), clock()
            for c in calls:
                noop(c)
                noop(c)
            t1, c1 = clock(), cpu_clock()
            seg.add("noop", t1 - t0, c1 - c0, gc_clock.total - g0, len(calls))
            g0, c0, t0 = gc_clock.total, cpu_clock(), clock()
            for c in calls:
                record(c)
                assess(c)
            t1, c1 = clock(), cpu_clock()
            seg.add("record+check", t1 - t0, c1 - c0, gc_clock.total - g0, len(calls))
        else:
            g0, c0, t0 = gc_clock.total, cpu_clock(), clock()
            for c in calls:
                record(c)
            t1, c1 = clock(), cpu_clock()
            seg.add("record", t1 - t0, c1 - c0, gc_clock.total - g0, len(calls))
            g0, c0, t0 = gc_clock.total, cpu_clock(), clock()
            for c in calls:
                assess(c)
            t1, c1 = clock(), cpu_clock()
            seg.add("check", t1 - t0, c1 - c0, gc_clock.total - g0, len(calls))
        g0, c0, t0 = gc_clock.total, cpu_clock(), clock()
        for cid, status in finals:
            final(cid, status, now)
        t1, c1 = clock(), cpu_clock()
        seg.add("final", t1 - t0, c1 - c0, gc_clock.total - g0, len(finals))
        g0, c0, t0 = gc_clock.total, cpu_clock(), clock()
        for cid in ends:
            ended(cid, now)
        t1, c1 = clock(), cpu_clock()
        seg.add("ended", t1 - t0, c1 - c0, gc_clock.total - g0, len(ends))
    return seg


def state_of(engine: ReputationEngine) -> dict[str, int]:
    return {
        "callers": len(engine.callers),
        "ranges": len(engine.ranges),
        "peers": len(engine.peers),
        "calls": len(engine.calls),
        "callers_evicted": engine.callers.evicted,
    }


def warm_up(
    engine: ReputationEngine, check: ReputationCheck, stream: Stream, cfg: ReputationConfig
) -> dict[str, Any]:
    """Feed the stream untimed until the caller table is full, and ten
    simulated minutes at least (calls in progress reach their level); the
    INVITEs it took, its seconds and the state."""
    t0 = time.perf_counter()
    warm_calls = 0
    while (
        len(engine.callers) < cfg.max_numbers
        or warm_calls < 600 * RATE
    ):
        batches = stream.batches(20_000)
        run_batches(engine, check, batches, "untimed")
        warm_calls += sum(len(b.calls) for b in batches)
    return {
        "invites": warm_calls,
        "seconds": round(time.perf_counter() - t0, 1),
        **state_of(engine),
    }


def fill_calls_table(engine: ReputationEngine, check: ReputationCheck, stream: Stream) -> None:
    """Lose every outcome until max_calls calls await one."""
    stream.mix = replace(stream.mix, leak=True)
    while len(engine.calls) < engine.max_calls:
        need = engine.max_calls - len(engine.calls)
        run_batches(engine, check, stream.batches(min(need, 20_000)), "untimed")
