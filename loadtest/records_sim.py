"""Screened calls for the decision records: a seeded mix of ordinary
callers and one robocall campaign, each with the ground truth.

traffic_sim.py models call outcomes for the reputation engine but carries
no verdicts and runs its campaigns at fixed rates (thousands of calls each),
too many for a unit test; this borrows its peers' addresses and reasoning
but makes ``Screened`` events with verdicts and Identity headers (a
PASSporT with attest and origid), so the records are what the proxy would
write.

Ordinary callers: random valid NANP numbers, each calling a few random
subscribers at random times over the period through one of the two carrier
peers; 75% attested A, 10% B, 15% unsigned; 3% of their calls are labelled
(score 65) and 1% blocked, scattered, as a reputation engine would do now
and then.

The campaign: through the gateway peer only, callers rotating inside one
NPA-NXX (a fresh number every few calls), callees dialled in sequence in
one subscriber exchange, a call every 2-8 s, attested C (one in ten failing
our own verification); 70% blocked, the rest labelled.
"""

from __future__ import annotations

import base64
import json
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

from proxy.events import Screened
from proxy.screening import Action, Screening, Verdict
from proxy.sip.identity import CallFacts

if TYPE_CHECKING or __package__:  # imported as loadtest.records_sim (the tests)
    from loadtest.traffic_sim import CARRIER_A, CARRIER_B, GATEWAY
else:  # beside a benchmark run as python loadtest/bench_records.py
    from traffic_sim import CARRIER_A, CARRIER_B, GATEWAY

PEERS = {CARRIER_A: "carrier-a", CARRIER_B: "carrier-b", GATEWAY: "gateway"}
NANP = 10_000_000_000
CAMPAIGN_EXCHANGE = (469, 382)  # the callers' NPA-NXX
TARGET_EXCHANGE = (212, 736)  # the subscribers dialled in order
PASSED, FAILED = "TN-Validation-Passed", "TN-Validation-Failed"
_SIG = base64.urlsafe_b64encode(bytes(range(64))).rstrip(b"=").decode()


@dataclass(frozen=True, slots=True)
class SimRecord:
    wall_time: float
    peer: str
    event: Screened


@dataclass(frozen=True, slots=True)
class CampaignTruth:
    peer: str
    prefix: str  # "469-382"
    calls: int
    callers: int
    callees: int
    blocked: int
    first: float
    last: float


def _b64(obj: dict[str, object]) -> str:
    raw = json.dumps(obj, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def identity_header(caller: int, callee: int, attest: str, origid: str, iat: int) -> str:
    head = _b64({"alg": "ES256", "ppt": "shaken", "typ": "passport",
                 "x5u": "https://cert.example.net/sp.pem"})  # fmt: skip
    body = _b64({"attest": attest, "dest": {"tn": [str(callee)]}, "iat": iat,
                 "orig": {"tn": str(caller)}, "origid": origid})  # fmt: skip
    return f"{head}.{body}.{_SIG};info=<https://cert.example.net/sp.pem>;alg=ES256;ppt=shaken"


def screened(
    n: int, t: float, source: str, caller: int, callee: int, attest: str | None,
    action: Action, score: int, reasons: tuple[str, ...], origid: str = "",
    verified: str | None = None,
) -> Screened:  # fmt: skip
    identity = None
    if attest is not None:
        identity = identity_header(caller, callee, attest, origid or f"orig-{n % 7}", int(t))
    call = CallFacts(
        method="INVITE", call_id=f"{n:08x}-sim@{source}", source=source,
        caller=f"+{caller}", caller_key=caller, caller_display=None, asserted=True,
        anonymous=False, privacy_id=False, callee=f"+{callee}", callee_key=callee,
        emergency_urn=False, identity=identity, received=t, attest=attest,
        verstat="TN-Validation-Passed" if attest else None, verified=verified,
    )  # fmt: skip
    decided = "reputation" if action is not Action.PASS else None
    return Screened(call, Screening(Verdict(action, score, reasons), decided), action)


def _nanp(npa: int, nxx: int, line: int) -> int:
    return NANP + npa * 10_000_000 + nxx * 10_000 + line


def _random_number(rng: random.Random) -> int:
    npa = rng.randrange(201, 990)
    while npa % 100 == 11:
        npa = rng.randrange(201, 990)
    nxx = rng.randrange(200, 1000)
    while nxx % 100 == 11 or nxx == 555:
        nxx = rng.randrange(200, 1000)
    return _nanp(npa, nxx, rng.randrange(10_000))


def generate(
    seed: int, start: float, hours: float, callers: int = 300, campaign_calls: int = 400,
    campaign_at: float = 0.3,
) -> tuple[list[SimRecord], CampaignTruth]:  # fmt: skip
    """Records over ``hours`` from ``start``, time-ordered, and the truth
    about the campaign (which starts ``campaign_at`` into the period)."""
    rng = random.Random(seed)
    span = hours * 3600.0
    out: list[SimRecord] = []
    n = 0
    for _ in range(callers):
        caller = _random_number(rng)
        source = CARRIER_A if rng.random() < 0.5 else CARRIER_B
        r = rng.random()
        attest = "A" if r < 0.75 else ("B" if r < 0.85 else None)
        for _ in range(rng.randint(1, 6)):
            t = start + rng.uniform(0, span)
            r = rng.random()
            action, score, why = Action.PASS, rng.randrange(0, 40), ()
            if r < 0.01:
                action, score, why = Action.BLOCK, 95, ("reputation:burst",)
            elif r < 0.04:
                action, score, why = Action.LABEL, 65, ("reputation:short-calls",)
            verified = PASSED if attest else None
            callee = _random_number(rng)
            ev = screened(n, t, source, caller, callee, attest, action, score, why, "", verified)
            out.append(SimRecord(t, PEERS[source], ev))
            n += 1
    t = start + campaign_at * span
    first = last = t
    npa, nxx = CAMPAIGN_EXCHANGE
    line = rng.randrange(10_000)
    caller, uses = 0, 0
    seen_callers: set[int] = set()
    blocked = 0
    for i in range(campaign_calls):
        if uses == 0:  # rotate to a fresh caller ID in the same exchange
            caller, uses = _nanp(npa, nxx, rng.randrange(10_000)), rng.randint(2, 5)
        uses -= 1
        seen_callers.add(caller)
        callee = _nanp(*TARGET_EXCHANGE, (line + i) % 10_000)
        block = rng.random() < 0.7
        blocked += block
        action = Action.BLOCK if block else Action.LABEL
        score = 92 if block else 72
        verified = FAILED if i % 10 == 0 else PASSED  # one in ten fails our own check
        ev = screened(n, t, GATEWAY, caller, callee, "C", action, score,
                      ("reputation:sequential", "reputation:snowshoe"), "gw-orig-1",
                      verified)  # fmt: skip
        out.append(SimRecord(t, PEERS[GATEWAY], ev))
        n += 1
        last = t
        t += rng.uniform(2.0, 8.0)
    out.sort(key=lambda r: r.wall_time)
    truth = CampaignTruth(
        PEERS[GATEWAY], f"{npa}-{nxx}", campaign_calls, len(seen_callers),
        min(campaign_calls, 10_000), blocked, first, last,
    )  # fmt: skip
    return out, truth
