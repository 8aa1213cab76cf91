"""A labelled, seeded simulation of one carrier's terminating call traffic.

Pure: ``generate(seed, minutes, scale)`` returns the calls, time-ordered,
each with its ground truth; no I/O, one ``random.Random``. The replay and the
report are in accuracy.py. Every number below is an assumption about a
mid-sized US local carrier, stated here so it can be argued with; none was
chosen by looking at what the reputation engine scores.

Period. Simulated time starts at Unix 1_790_000_000. A warm-up hour of legit
traffic only, then ``minutes`` (default 60) in which the campaigns run as
well. Rates are flat over the two hours (a daytime window, no diurnal curve).

Subscribers. 300,000 numbers in 40 NPA-NXX exchanges the carrier holds (8
exchanges in each of NPAs 212, 646, 718, 312 and 415; NXX drawn from 200-999
without N11 and 555), 7,500 lines of 10,000 in use per exchange: dense, so a
neighbouring number is usually a subscriber too. Callees are drawn uniformly
from the subscribers unless a class says otherwise.

Peers. Two carrier interconnects, 198.51.100.10 and 198.51.100.20, carry
domestic traffic; a wholesale/international gateway, 203.0.113.66, carries
international and least-cost-routed traffic.

Call outcomes. Unanswered calls end 487 (caller gave up while ringing, 50%,
after 5-30 s), 480 (no answer or unreachable, 30%: half at once, half after
a 20-35 s no-answer timer) or 486 (busy, 20%, within 3 s). Answered calls
(voicemail included: it answers with 200) ring lognormally, median 8 s,
capped at 40 s. A call to an unassigned number in a held exchange gets 404
within half a second.

Legitimate classes (ground truth "legit"):

* residential: 50,000 caller numbers (x scale): 35% inside the 40
  subscriber exchanges (neighbours and the carrier's own subscribers), 25% in
  other exchanges of the same five NPAs, 40% anywhere in a list of ~110 real
  US geographic NPAs; so thousands of thousands-blocks. Each is a Poisson
  caller of 0.5-1 calls/hour (uniform per number). ASR 60%. Talk time is one
  lognormal with median 90 s whose spread puts 12% of answered calls under
  10 s (sigma = ln 9 / z(0.88) = 1.87; that makes the mean ~9 min, so it is
  capped at 2 h). Attestation is a property of the originating carrier, so
  it is drawn per number: 75% verified A, 10% B, 15% unsigned. 2% of the
  numbers withhold their identity (per-line CLIR): no number, no PAI, no
  Identity. Each number reaches us over one of the two carrier peers.
* business: 500 numbers (x scale), half in the subscriber exchanges (local
  shops, surgeries), half elsewhere; 10-30 calls/hour each; ASR 55%; median
  talk 120 s, same spread; attestation per number: 85% A, 10% B, 5% unsigned.
* pharmacy: one reminder line of a national chain (an out-of-area number),
  one 30-minute batch at 1 call/s to random subscribers, A, via
  198.51.100.10, ASR 55%, answered calls play the 25-40 s recording.
* school-alert: one school number in a subscriber exchange, 3,000 calls in
  5 minutes (10/s), 60% of callees in the school's own exchange, A, via
  198.51.100.20, ASR 65%, answered calls ~30 s (the message: normal, sd 4 s).
* gateway: 640 callers (x scale) at 0.5-1 calls/hour, ~1% of legit volume,
  through the gateway: 60% international numbers (+44, +52, +91, +63, +49),
  40% NANP numbers on least-cost routes; 60% unsigned, 40% C; ASR 55%,
  residential talk times.
* school-alert-unsigned (stress case, reported apart): a second school, the
  same alert but unsigned (its provider does not sign), via 198.51.100.10. It is the known limit
  of pattern scoring: a verified-A bulk caller is the case the issue protects.

The pharmacy batch starts 25% into the campaign phase, the school alert at
40%, the unsigned one at 70%: bulk legit traffic runs while campaigns do.

Campaign classes (ground truth "campaign"), starting after the warm-up at
5%, 15%, ... 55% of the campaign phase (+-1 min jitter), each running a third
of it (20 min by default, at least 10): their arrivals are Poisson at the
stated rate, answered talk is "short" (1-8 s, the callee hangs up on the
recording) for 70% of answered calls unless stated, otherwise lognormal,
median 45 s (someone pressed 1).

1. warranty: one caller ID, 3 calls/s to random subscribers, C, via the
   gateway, ASR 20%, 80% of answered calls under 8 s.
2. sequential: one caller ID, 2 calls/s dialling one exchange in order
   (callee+1 each call, from a random line, wrapping); unassigned lines get
   404, answered share of the others is 1/3 so ASR is ~25%; unsigned, via
   198.51.100.20.
3. neighbour: 5 subscriber exchanges, each hit by a caller ID spoofed inside
   that exchange (random last four digits, possibly a real subscriber's),
   1 call/s per exchange to subscribers of that exchange; C (a wholesale
   carrier signing as gateway), via 198.51.100.10, ASR 30%.
4. snowshoe: numbers from two thousands-blocks of one out-of-area exchange,
   3 calls/s in all. 300 numbers are in use at a time; each is retired after
   2-4 calls and replaced by a fresh one from the blocks, so no number makes
   more than ~4 calls in an hour (the issue's "~300 DIDs, 2-4 calls/hour, ~3
   calls/s" only fit together with rotation: 3 calls/s is 1,200 numbers in
   20 minutes). C, via the gateway, ASR 15%.
5. dno: 1 call/s, each claiming one of 200 Do-Not-Originate numbers (150
   inbound-only toll-free numbers, 50 unassignable NPA-555-01XX numbers);
   unsigned, via the gateway, ASR 20% should they get through.
6. low-and-slow: one caller ID, 20 calls/min to random subscribers,
   unsigned, via 198.51.100.10, ASR 20%.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from statistics import NormalDist

T0 = 1_790_000_000.0
WARMUP_S = 3600.0
CARRIER_A, CARRIER_B = "198.51.100.10", "198.51.100.20"
GATEWAY = "203.0.113.66"
LEGIT, CAMPAIGN = "legit", "campaign"
STRESS_CLASSES = frozenset({"school-alert-unsigned"})

PASSED = "TN-Validation-Passed"
Sig = tuple[str | None, str | None]  # (verstat, attest)
SIG_A: Sig = (PASSED, "A")
SIG_B: Sig = (PASSED, "B")
SIG_C: Sig = (PASSED, "C")  # a valid signature at gateway level verifies, attesting C
UNSIGNED: Sig = (None, None)

SUB_NPAS = (212, 646, 718, 312, 415)
EXCHANGES_PER_NPA = 8
LINES_PER_EXCHANGE = 7500  # of 10,000: 300,000 subscribers in all
NANP = 10_000_000_000
# Real US geographic NPAs for callers from elsewhere (no toll-free, no N11).
_OTHER_NPAS = (
    "201 202 203 205 206 207 208 209 210 213 214 215 216 217 218 219 224 225 228 229 "
    "231 234 239 240 248 251 252 253 254 256 260 262 267 269 270 276 281 301 302 303 "
    "304 305 307 308 309 310 313 314 316 317 318 319 320 321 323 330 334 336 337 339 "
    "352 360 361 385 386 401 402 404 405 406 407 408 409 410 412 413 414 417 419 423 "
    "425 430 432 434 435 440 443 469 470 478 479 480 484 501 502 503 504 505 507 508 "
    "509 512 513 515 516 517 518 520 530 540 541 559 561 562 563 570 571 573 574 575"
)
OTHER_NPAS = tuple(int(n) for n in _OTHER_NPAS.split())
INTL_PREFIXES = ((44, 10), (52, 10), (91, 10), (63, 10), (49, 11))  # (country, national digits)
TOLL_FREE = (800, 833, 844, 855, 866, 877, 888)

# Talk-time spread: median 90 s with 12% of answered calls under 10 s.
LEGIT_SIGMA = math.log(90 / 10) / NormalDist().inv_cdf(0.88)
MAX_TALK = 7200.0


@dataclass(frozen=True, slots=True)
class SimCall:
    t: float  # INVITE time
    call_id: str
    caller: int | None  # E.164 key; None: withheld
    callee: int
    peer: str
    verstat: str | None
    attest: str | None
    label: str  # LEGIT or CAMPAIGN
    cls: str  # e.g. "residential", "campaign:warranty"
    campaign_start: float | None
    answered: bool
    status: int  # the final response
    ring: float  # seconds from the INVITE to the final response
    talk: float  # seconds from the 200 to the BYE; 0 if unanswered


@dataclass(slots=True)
class Simulation:
    seed: int
    start: float
    warmup_end: float
    end: float
    calls: list[SimCall]
    dno_numbers: list[int]
    campaign_starts: dict[str, float] = field(default_factory=dict)


Outcome = tuple[bool, int, float, float]  # answered, status, ring, talk


def _not_answered(rng: random.Random) -> Outcome:
    r = rng.random()
    if r < 0.5:
        return False, 487, rng.uniform(5, 30), 0.0
    if r < 0.8:
        late = rng.random() < 0.5
        return False, 480, rng.uniform(20, 35) if late else rng.uniform(0.5, 3), 0.0
    return False, 486, rng.uniform(0.5, 3), 0.0


def _answer_ring(rng: random.Random) -> float:
    return min(40.0, rng.lognormvariate(math.log(8), 0.5))


def legit_outcome(rng: random.Random, asr: float, median: float) -> Outcome:
    if rng.random() >= asr:
        return _not_answered(rng)
    talk = min(MAX_TALK, rng.lognormvariate(math.log(median), LEGIT_SIGMA))
    return True, 200, _answer_ring(rng), talk


def fixed_outcome(rng: random.Random, asr: float, lo: float, hi: float) -> Outcome:
    if rng.random() >= asr:
        return _not_answered(rng)
    return True, 200, _answer_ring(rng), rng.uniform(lo, hi)


def campaign_outcome(rng: random.Random, asr: float, short: float = 0.7) -> Outcome:
    if rng.random() >= asr:
        return _not_answered(rng)
    if rng.random() < short:
        talk = rng.uniform(1, 8)
    else:
        talk = min(MAX_TALK, rng.lognormvariate(math.log(45), 0.8))
    return True, 200, _answer_ring(rng), talk


def _nanp(npa: int, nxx: int, line: int) -> int:
    return NANP + npa * 10_000_000 + nxx * 10_000 + line


def _valid_nxx(rng: random.Random) -> int:
    while True:
        nxx = rng.randrange(200, 1000)
        if nxx % 100 != 11 and nxx != 555:
            return nxx


class _Builder:
    def __init__(self, seed: int, minutes: float) -> None:
        self.rng = random.Random(seed)
        self.start = T0
        self.warmup_end = T0 + WARMUP_S
        self.end = self.warmup_end + minutes * 60
        self.calls: list[SimCall] = []
        self.starts: dict[str, float] = {}
        rng = self.rng
        exchanges: set[tuple[int, int]] = set()
        for npa in SUB_NPAS:
            mine = {e for e in exchanges if e[0] == npa}
            while len(mine) < EXCHANGES_PER_NPA:
                mine.add((npa, _valid_nxx(rng)))
            exchanges |= mine
        self.exchanges = sorted(exchanges)
        self.subs_by_exchange: dict[tuple[int, int], list[int]] = {}
        for npa, nxx in self.exchanges:
            lines = sorted(rng.sample(range(10_000), LINES_PER_EXCHANGE))
            self.subs_by_exchange[npa, nxx] = [_nanp(npa, nxx, ln) for ln in lines]
        self.subs = [s for e in self.exchanges for s in self.subs_by_exchange[e]]
        self.sub_set = frozenset(self.subs)
        self.dno = self.dno_list()

    def subscriber(self) -> int:
        return self.subs[self.rng.randrange(len(self.subs))]

    def add(
        self, t: float, caller: int | None, callee: int, peer: str, sig: Sig, cls: str,
        out: Outcome, campaign_start: float | None = None,
    ) -> None:  # fmt: skip
        answered, status, ring, talk = out
        self.calls.append(
            SimCall(
                t, f"sim-{len(self.calls)}", caller, callee, peer, sig[0], sig[1],
                CAMPAIGN if campaign_start is not None else LEGIT, cls, campaign_start,
                answered, status, ring, talk,
            )
        )  # fmt: skip

    def arrivals(self, start: float, end: float, per_s: float) -> list[float]:
        """Poisson arrival times in [start, end)."""
        out: list[float] = []
        rng = self.rng
        t = start + rng.expovariate(per_s)
        while t < end:
            out.append(t)
            t += rng.expovariate(per_s)
        return out

    # -- caller numbers ------------------------------------------------------

    def local_number(self) -> int:
        npa, nxx = self.exchanges[self.rng.randrange(len(self.exchanges))]
        return _nanp(npa, nxx, self.rng.randrange(10_000))

    def same_npa_number(self) -> int:
        rng = self.rng
        npa = SUB_NPAS[rng.randrange(len(SUB_NPAS))]
        while True:
            nxx = _valid_nxx(rng)
            if (npa, nxx) not in self.subs_by_exchange:
                return _nanp(npa, nxx, rng.randrange(10_000))

    def far_number(self) -> int:
        rng = self.rng
        return _nanp(
            OTHER_NPAS[rng.randrange(len(OTHER_NPAS))], _valid_nxx(rng), rng.randrange(10_000)
        )

    def intl_number(self) -> int:
        cc, digits = INTL_PREFIXES[self.rng.randrange(len(INTL_PREFIXES))]
        lo = 10 ** (digits - 1)
        return int(cc * 10**digits + self.rng.randrange(lo, 10 * lo))

    def _sig(self, a: float, b: float) -> Sig:
        r = self.rng.random()
        return SIG_A if r < a else SIG_B if r < a + b else UNSIGNED

    # -- legit ---------------------------------------------------------------

    def poisson_callers(
        self, cls: str, n: int, per_hour: tuple[float, float], number: Callable[[], int | None],
        sig: Callable[[], Sig], peer: Callable[[], str], outcome: Callable[[], Outcome],
    ) -> None:  # fmt: skip
        rng = self.rng
        for _ in range(n):
            caller, s, p = number(), sig(), peer()
            if caller is None:
                s = UNSIGNED  # withheld: no PAI, no Identity
            for t in self.arrivals(self.start, self.end, rng.uniform(*per_hour) / 3600):
                self.add(t, caller, self.subscriber(), p, s, cls, outcome())

    def residential(self, n: int) -> None:
        rng = self.rng

        def number() -> int | None:
            if rng.random() < 0.02:
                return None
            r = rng.random()
            if r < 0.35:
                return self.local_number()
            return self.same_npa_number() if r < 0.60 else self.far_number()

        self.poisson_callers(
            "residential", n, (0.5, 1.0), number, lambda: self._sig(0.75, 0.10),
            self.carrier, lambda: legit_outcome(rng, 0.60, 90),
        )  # fmt: skip

    def business(self, n: int) -> None:
        rng = self.rng
        self.poisson_callers(
            "business", n, (10, 30),
            lambda: self.local_number() if rng.random() < 0.5 else self.far_number(),
            lambda: self._sig(0.85, 0.10), self.carrier, lambda: legit_outcome(rng, 0.55, 120),
        )  # fmt: skip

    def gateway(self, n: int) -> None:
        rng = self.rng
        self.poisson_callers(
            "gateway", n, (0.5, 1.0),
            lambda: self.intl_number() if rng.random() < 0.6 else self.far_number(),
            lambda: UNSIGNED if rng.random() < 0.6 else SIG_C, lambda: GATEWAY,
            lambda: legit_outcome(rng, 0.55, 90),
        )  # fmt: skip

    def carrier(self) -> str:
        return CARRIER_A if self.rng.random() < 0.5 else CARRIER_B

    def pharmacy(self, start: float) -> None:
        caller = self.far_number()
        for t in self.arrivals(start, min(self.end, start + 1800), 1.0):
            out = fixed_outcome(self.rng, 0.55, 25, 40)
            self.add(t, caller, self.subscriber(), CARRIER_A, SIG_A, "pharmacy", out)

    def school(self, start: float, cls: str, sig: Sig, peer: str) -> None:
        rng = self.rng
        exchange = self.exchanges[rng.randrange(len(self.exchanges))]
        caller = _nanp(*exchange, rng.randrange(10_000))
        own = self.subs_by_exchange[exchange]
        for t in self.arrivals(start, min(self.end, start + 300), 10.0):
            callee = own[rng.randrange(len(own))] if rng.random() < 0.6 else self.subscriber()
            if rng.random() < 0.65:
                out: Outcome = (True, 200, _answer_ring(rng), max(5.0, rng.gauss(30, 4)))
            else:
                out = _not_answered(rng)
            self.add(t, caller, callee, peer, sig, cls, out)

    # -- campaigns -----------------------------------------------------------

    def campaign(self, name: str, start: float, end: float) -> None:
        rng = self.rng
        cls = f"campaign:{name}"
        self.starts[cls] = start

        def add(t: float, caller: int, callee: int, peer: str, sig: Sig, out: Outcome) -> None:
            self.add(t, caller, callee, peer, sig, cls, out, start)

        if name == "warranty":
            caller = self.far_number()
            for t in self.arrivals(start, end, 3.0):
                add(t, caller, self.subscriber(), GATEWAY, SIG_C, campaign_outcome(rng, 0.2, 0.8))
        elif name == "sequential":
            caller = self.far_number()
            npa, nxx = self.exchanges[rng.randrange(len(self.exchanges))]
            line = rng.randrange(10_000)
            for t in self.arrivals(start, end, 2.0):
                callee = _nanp(npa, nxx, line)
                line = (line + 1) % 10_000
                if callee not in self.sub_set:
                    out: Outcome = (False, 404, rng.uniform(0.1, 0.5), 0.0)
                else:
                    out = campaign_outcome(rng, 1 / 3)
                add(t, caller, callee, CARRIER_B, UNSIGNED, out)
        elif name == "neighbour":
            for npa, nxx in rng.sample(self.exchanges, 5):
                spoofed = _nanp(npa, nxx, rng.randrange(10_000))
                own = self.subs_by_exchange[npa, nxx]
                for t in self.arrivals(start, end, 1.0):
                    callee = own[rng.randrange(len(own))]
                    add(t, spoofed, callee, CARRIER_A, SIG_C, campaign_outcome(rng, 0.3))
        elif name == "snowshoe":
            npa, nxx = OTHER_NPAS[rng.randrange(len(OTHER_NPAS))], _valid_nxx(rng)
            blocks = rng.sample(range(10), 2)
            pool = [_nanp(npa, nxx, b * 1000 + i) for b in blocks for i in range(1000)]
            rng.shuffle(pool)
            active = [[pool[i], rng.randint(2, 4)] for i in range(300)]
            nxt = 300
            for t in self.arrivals(start, end, 3.0):
                slot = active[rng.randrange(len(active))]
                add(t, slot[0], self.subscriber(), GATEWAY, SIG_C, campaign_outcome(rng, 0.15))
                slot[1] -= 1
                if slot[1] == 0:  # retired: the next fresh number takes its place
                    slot[0], slot[1] = pool[nxt % len(pool)], rng.randint(2, 4)
                    nxt += 1
        elif name == "dno":
            for t in self.arrivals(start, end, 1.0):
                caller = self.dno[rng.randrange(len(self.dno))]
                add(t, caller, self.subscriber(), GATEWAY, UNSIGNED, campaign_outcome(rng, 0.2))
        elif name == "low-and-slow":
            caller = self.far_number()
            for t in self.arrivals(start, end, 20 / 60):
                add(t, caller, self.subscriber(), CARRIER_A, UNSIGNED, campaign_outcome(rng, 0.2))
        else:
            raise ValueError(f"unknown campaign {name!r}")

    def dno_list(self) -> list[int]:
        rng = self.rng
        out: set[int] = set()
        while len(out) < 150:  # inbound-only toll-free lines (banks, agencies)
            out.add(_nanp(rng.choice(TOLL_FREE), _valid_nxx(rng), rng.randrange(10_000)))
        while len(out) < 200:  # 555-0100..0199 is never assigned
            out.add(_nanp(rng.choice(OTHER_NPAS), 555, rng.randrange(100, 200)))
        return sorted(out)


CAMPAIGNS = ("warranty", "sequential", "neighbour", "snowshoe", "dno", "low-and-slow")


def generate(seed: int = 1, minutes: float = 60.0, scale: float = 1.0) -> Simulation:
    """The whole period's calls, sorted by INVITE time."""
    if minutes <= 0 or scale <= 0:
        raise ValueError("minutes and scale must be positive")
    b = _Builder(seed, minutes)
    rng = b.rng
    b.residential(round(50_000 * scale))
    b.business(round(500 * scale))
    b.gateway(round(640 * scale))
    phase = minutes * 60
    w = b.warmup_end
    b.pharmacy(w + 0.25 * phase)
    b.school(w + 0.40 * phase, "school-alert", SIG_A, CARRIER_B)
    b.school(w + 0.70 * phase, "school-alert-unsigned", UNSIGNED, CARRIER_A)
    length = max(600.0, phase / 3)
    for i, name in enumerate(CAMPAIGNS):
        start = w + (0.05 + 0.10 * i) * phase + rng.uniform(-60, 60)
        start = max(w, start)
        b.campaign(name, start, min(b.end, start + length))
    b.calls.sort(key=lambda c: c.t)
    return Simulation(seed, b.start, w, b.end, b.calls, b.dno, b.starts)
