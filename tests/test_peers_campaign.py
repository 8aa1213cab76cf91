"""End to end through the proxy core, in simulated time: two peers carry
ordinary traffic; ten minutes in, one of them starts carrying a robocall
campaign (one caller ID, 3 calls/s, C-attested, few answers, short calls).
The reputation engine labels the campaign's calls; the peer's rolling
statistics show its flagged share rising within minutes while the other
peer's stays flat, and the exported gauge crosses an alert threshold. Then
the operator blocks the peer: its calls get 603 and the statistics count
them as refused, not as findings.

Every message goes through ``StatelessProxy.receive_datagram``: the
INVITE, the switch's final response, and the caller's BYE, so ASR, ACD and
the short-call share come from what the proxy saw.
"""

from __future__ import annotations

import heapq
import random
from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from blocklists.slot import ArtefactSlot
from loadtest.records_sim import identity_header
from proxy.core import StatelessProxy
from proxy.events import Address, Event, Replied, Send
from proxy.gateway.actions import Setting
from proxy.gateway.metrics import StatsMetrics
from proxy.gateway.service import PeerService
from proxy.reputation import ReputationEngine
from proxy.routing import SwitchPool
from proxy.screening import build_pipeline
from proxy.screening.peer_check import PeerStages
from proxy.sip import SipRequest, parse_datagram
from tests.conftest import make_config
from tests.sipmsg import request, response

CARRIER = Address("198.51.100.10", 5060, "udp")
GATEWAY = Address("203.0.113.66", 5060, "udp")
SWITCH = Address("192.0.2.20", 5080, "udp")
T0 = 7_200_000.0  # simulated seconds (a monotonic clock: any origin does)
CAMPAIGN_AT = T0 + 600.0  # ten minutes of ordinary traffic first
END = T0 + 1200.0
CAMPAIGN_CALLER = 14075550123 + 100  # one caller ID, out of area
ALERT_AT = 0.3  # the suggested alert: rs_peer_flagged_ratio{window="5m"} > 0.3


class Sim:
    """The proxy core with its reputation engine and peer machinery, the
    switch answering, the callers hanging up, and a clock."""

    def __init__(self, tmp_path: Path) -> None:
        cfg = make_config(
            peers=[
                {"name": "carrier-a", "addresses": ["198.51.100.0/28"], "frn": "0099900101"},
                {"name": "gateway-x", "addresses": ["203.0.113.64/28"], "frn": "0099900113"},
            ],
            peer_policy={"store": str(tmp_path / "peers.sqlite3")},
        )
        self.now = T0
        slot = ArtefactSlot()
        self.engine = ReputationEngine(cfg.reputation, slot)
        self.peers = PeerService(cfg.peers, cfg.peer_policy, cfg.reputation.short_call_seconds)
        pipeline = build_pipeline(
            cfg.screening, slot, cfg.blocklists, self.engine,
            peers=PeerStages(self.peers.actions, self.peers.mode),
        )  # fmt: skip
        pool = SwitchPool(cfg.switches, cfg.routing)
        self.core = StatelessProxy(cfg, pipeline, pool, "sim", self.engine)
        self.metrics = StatsMetrics(pool, self.peers, clock=lambda: self.now)
        self.queue: list[tuple[float, int, str, str, SipRequest | None, Address]] = []
        self.seq = 0
        self.answered_603 = 0

    def feed(self, data: bytes, source: Address) -> list[Event]:
        events = self.core.receive_datagram(data, source, self.now)
        self.metrics.record(events)
        return events

    def later(
        self, t: float, what: str, call_id: str, fwd: SipRequest | None, src: Address
    ) -> None:
        self.seq += 1
        heapq.heappush(self.queue, (t, self.seq, what, call_id, fwd, src))

    def invite(self, rng: random.Random, src: Address, caller: int, attest: str | None,
               asr: float, short: float) -> None:  # fmt: skip
        self.seq += 1
        call_id = f"sim-{self.seq}@{src.host}"
        callee = 13122000000 + rng.randrange(800_000)  # subscribers in 312-2xx..9xx
        extra = ()
        if attest is not None:
            ident = identity_header(caller, callee, attest, "orig", int(self.now))
            extra = (f"Identity: {ident}",)
        data = request(
            ruri=f"sip:+{callee}@192.0.2.5;user=phone", caller=f"+{caller}", call_id=call_id,
            branch=f"z9hG4bK-{self.seq}", via_host=f"{src.host}:5060", extra=extra,
        )  # fmt: skip
        events = self.feed(data, src)
        if any(isinstance(e, Replied) and e.status == 603 for e in events):
            self.answered_603 += 1
            return
        (send,) = [e for e in events if isinstance(e, Send)]
        fwd = parse_datagram(send.data)
        assert send.dest == SWITCH and isinstance(fwd, SipRequest)
        if rng.random() < asr:
            talk = rng.uniform(1.0, 8.0) if rng.random() < short else rng.uniform(20.0, 300.0)
            answer_at = self.now + rng.uniform(2.0, 12.0)
            self.later(answer_at, "200", call_id, fwd, src)
            self.later(answer_at + talk, "bye", call_id, None, src)
        else:
            self.later(self.now + rng.uniform(1.0, 20.0), "480", call_id, fwd, src)

    def due(self, until: float) -> None:
        """Deliver the responses and BYEs due by ``until``."""
        for _ in range(len(self.queue)):  # bounded: what is queued now
            if not self.queue or self.queue[0][0] > until:
                return
            t, _, what, call_id, fwd, src = heapq.heappop(self.queue)
            self.now = max(self.now, t)
            if what == "bye":
                data = request(
                    "BYE", "sip:+13125550187@192.0.2.20:5080", to_tag="switch-tag",
                    call_id=call_id, cseq=102, branch=f"z9hG4bK-bye-{call_id}",
                    via_host=f"{src.host}:5060",
                )  # fmt: skip
                self.feed(data, src)
                continue
            assert fwd is not None
            vias = tuple(v for k, _, v in fwd.headers if k == "via")
            status = int(what)
            answer = response(status, "OK" if status == 200 else "Temporarily Unavailable",
                              vias=vias, call_id=call_id)  # fmt: skip
            self.feed(answer, SWITCH)

    def flagged(self, peer: str) -> float | None:
        share = self.peers.stats.summary(peer, self.now)["5m"]
        assert isinstance(share, dict)
        value = share["flagged_share"]
        assert value is None or isinstance(value, float)
        return value

    def gauge(self, name: str, peer: str, window: str = "5m") -> float | None:
        text = generate_latest(self.metrics.registry).decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and sample.labels == {"peer": peer, "window": window}:
                    return float(sample.value)
        return None


def run(sim: Sim, rng: random.Random, start: float, end: float, campaign: bool,
        minutes: list[tuple[float, float | None, float | None]]) -> None:  # fmt: skip
    """One simulated second at a time: Poisson-ish arrivals per peer."""
    second = start
    while second < end:  # bounded: end - start seconds
        for _ in range(3):  # ordinary callers on the carrier: ~2 calls/s
            if rng.random() < 0.67:
                sim.due(second)
                sim.now = max(sim.now, second + rng.random() * 0.9)
                caller = 12123000000 + rng.randrange(3000) * 97
                attest = rng.choices(["A", "B", None], [75, 10, 15])[0]
                sim.invite(rng, CARRIER, caller, attest, asr=0.6, short=0.12)
        if rng.random() < 0.8:  # ordinary callers on the gateway: ~0.8 calls/s
            sim.due(second)
            sim.now = max(sim.now, second + rng.random() * 0.9)
            caller = 16463000000 + rng.randrange(2000) * 89
            sim.invite(rng, GATEWAY, caller, rng.choice(["C", None]), asr=0.55, short=0.12)
        if campaign:
            for k in range(3):  # the campaign: 3 calls/s from one caller ID
                sim.due(second)
                sim.now = max(sim.now, second + 0.3 * k + 0.05)
                sim.invite(rng, GATEWAY, CAMPAIGN_CALLER, "C", asr=0.2, short=0.8)
        second += 1.0
        sim.due(second)
        sim.now = max(sim.now, second)
        if int(second - T0) % 60 == 0:
            minutes.append((second, sim.flagged("gateway-x"), sim.flagged("carrier-a")))


async def test_a_peer_carrying_a_campaign_is_flagged_within_minutes(tmp_path: Path) -> None:
    sim = Sim(tmp_path)
    rng = random.Random(7)
    minutes: list[tuple[float, float | None, float | None]] = []
    run(sim, rng, T0, CAMPAIGN_AT, False, minutes)
    before = [m for m in minutes if m[0] <= CAMPAIGN_AT]
    assert len(before) == 10
    assert all(g is not None and g <= 0.05 for _, g, _ in before), before
    quiet_asr = sim.peers.stats.summary("gateway-x", sim.now)["5m"]
    run(sim, rng, CAMPAIGN_AT, END, True, minutes)
    after = [m for m in minutes if m[0] > CAMPAIGN_AT]
    crossed = next(t for t, g, _ in after if g is not None and g > ALERT_AT)
    assert crossed - CAMPAIGN_AT <= 180.0, after  # within three simulated minutes
    assert all(c is not None and c <= 0.05 for _, _, c in minutes), "the carrier stays flat"
    final = sim.peers.stats.summary("gateway-x", sim.now)["5m"]
    assert isinstance(final, dict) and isinstance(quiet_asr, dict)
    assert final["flagged_share"] is not None and final["flagged_share"] > 0.6
    assert final["asr"] < quiet_asr["asr"] - 0.15  # the campaign's calls go unanswered
    assert final["short_call_share"] > quiet_asr["short_call_share"] + 0.3
    assert final["attestation"]["C"] > 0.7
    # the alert-worthy gauge, as Prometheus would scrape it
    gauge = sim.gauge("rs_peer_flagged_ratio", "gateway-x")
    assert gauge is not None and gauge > ALERT_AT
    carrier_gauge = sim.gauge("rs_peer_flagged_ratio", "carrier-a")
    assert carrier_gauge is not None and carrier_gauge <= 0.05
    calls = sim.gauge("rs_peer_window_calls", "gateway-x")
    assert calls is not None and calls > 800  # 5 minutes at ~3.8 calls/s

    # the operator mitigates: the peer is blocked, its calls refused, not "flagged"
    await sim.peers.change("gateway-x", Setting("block"), "campaign, see dashboard", "ops", "")
    blocked_before = sim.answered_603
    refused_before = sim.peers.stats.totals("gateway-x", "5m", sim.now)
    run(sim, rng, END, END + 60.0, True, minutes)
    assert sim.answered_603 - blocked_before > 180  # every gateway call for a minute
    window = sim.peers.stats.summary("gateway-x", sim.now)["5m"]
    assert isinstance(window, dict)
    assert window["refused_by_peer_action"] > 180
    assert window["assessed"] < refused_before[1]  # no new assessed calls from the gateway
