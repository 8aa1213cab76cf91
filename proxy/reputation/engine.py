"""The reputation engine: rolling traffic state fed by what the proxy sees
(INVITE, final response, BYE), and a score from 0 to 100 per call.

Sans-I/O and in memory: every method takes the time from its caller. The
score is a sum of weighted signals, each with a strength from 0 to 1, so
every point of a score can be explained by a reason code.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from collections.abc import Callable
from typing import NamedTuple

from blocklists.nanp import invalid_caller
from blocklists.slot import ArtefactSlot
from blocklists.sources import Flag
from blocklists.store import Entry

from ..sip.identity import CallFacts
from .settings import ReputationConfig
from .traffic import CallerTraffic, PeerTraffic, Traffic, TrafficTable

# What counts as "many": ramps from (no evidence, full evidence). Chosen so
# that volume alone (a pharmacy's reminders, a school's closure alert) stays
# below the default label threshold; see README "Reputation".
RATE_RAMPS = ((2.0, 5.0), (5.0, 20.0), (60.0, 300.0))  # calls per second, minute, hour
FANOUT_RAMP = (10.0, 60.0)  # distinct callees per hour
SEQUENTIAL_GAP = 3  # a callee within 3 of a recent callee is "near-sequential"
SEQUENTIAL_SHARE = (0.2, 0.5)
SEQUENTIAL_MIN_CALLS = 4
PEER_SEQUENTIAL_MIN = 10  # near-sequential calls a peer must carry before one counts
PEER_RUN = (2.0, 5.0)  # a trunk-level run of 3 weighs a third; of 5 or more, fully
SHORT_SHARE = (0.3, 0.6)
FAIL_SHARE = (0.65, 0.85)  # 1 - ASR: 35% answered is normal, 15% is a campaign
MIN_ENDED, MIN_FINALS = 5, 20  # per caller number: no verdict on a handful of calls
PEER_MIN_ENDED, PEER_MIN_FINALS = 30, 50
RANGE_MIN_ENDED, RANGE_MIN_FINALS = 10, 20
NEIGHBOUR_FANOUT = (5.0, 20.0)
SNOWSHOE_CALLERS = (5.0, 20.0)  # distinct callers active in one thousands-block
COMPLAINTS_FULL = 3.0  # decayed complaints that give the full complaint weight
CALLER_FAN_BITS, PEER_FAN_BITS, RANGE_FAN_BITS = 256, 1, 256  # a trunk counts none
_NANP_LO, _NANP_HI = 10_000_000_000, 20_000_000_000
_LIST_FLAGS = Flag.BLOCK | Flag.LIST
PASSED, FAILED = "tn-validation-passed", "tn-validation-failed"  # verstat, lower-cased
_Add = Callable[[tuple[str, float]], None]


def ramp(x: float, span: tuple[float, float]) -> float:
    lo, hi = span
    if x <= lo:
        return 0.0
    return 1.0 if x >= hi else (x - lo) / (hi - lo)


class Assessment(NamedTuple):
    """A NamedTuple, not a frozen dataclass: one is built per INVITE, and a
    tuple costs a fraction of a frozen dataclass's field-by-field setattr."""

    score: int
    reasons: tuple[str, ...]  # enforced signals that added points, strongest first
    observed: tuple[str, ...]  # signals in observe mode that would have added points
    points: tuple[tuple[str, float], ...]  # every signal that fired, with its points


class _Call:
    """A call in progress, to attribute its outcome to the right keys."""

    __slots__ = (
        "answered_at",
        "caller",
        "final",
        "invite",
        "key",
        "peer",
        "range",
        "run",
        "source",
    )

    def __init__(
        self,
        invite: bool,
        caller: CallerTraffic | None,
        peer: PeerTraffic,
        rng: Traffic | None,
        run: int,
        source: str,
        key: int | None,
    ) -> None:
        self.invite = invite
        self.key = key  # the caller's, for [cluster] outcome sharing
        self.source = source
        self.caller = caller
        self.peer = peer
        self.range = rng
        self.run = run  # the near-sequential run this callee extends on the trunk
        self.final = False
        self.answered_at: float | None = None


class ReputationEngine:
    def __init__(self, cfg: ReputationConfig, slot: ArtefactSlot | None = None) -> None:
        self.slot = slot or ArtefactSlot()
        self.callers = TrafficTable(cfg.max_numbers, CALLER_FAN_BITS, CallerTraffic)
        self.peers = TrafficTable(cfg.max_peers, PEER_FAN_BITS, PeerTraffic)
        self.ranges = TrafficTable(cfg.max_ranges, RANGE_FAN_BITS, Traffic)
        # keyed by hash(Call-ID): a Call-ID may be kilobytes long, its hash is 8 bytes
        # OrderedDicts: popping the oldest of a plain dict that has seen many
        # deletions scans the holes they left, O(n) per call
        self.calls: OrderedDict[int, _Call] = OrderedDict()
        # `now` is whatever clock the caller uses (the proxy: monotonic);
        # adding this gives Unix time, which complaint ages are counted in
        self.wall_offset = 0.0
        # [cluster]: what this node saw, for the other nodes; None when alone.
        # (now, caller key, callee key, kind): kind as in cluster/journal.py
        self.journal: list[tuple[float, int, int | None, int]] | None = None
        self.configure(cfg)

    def configure(self, cfg: ReputationConfig) -> None:
        """New weights, modes and thresholds; the traffic state is kept."""
        self.cfg = cfg
        for table, capacity in (
            (self.callers, cfg.max_numbers),
            (self.ranges, cfg.max_ranges),
            (self.peers, cfg.max_peers),
        ):
            table.capacity = capacity
            table.trim()
        while len(self.calls) > cfg.max_calls:
            self.calls.popitem(last=False)
        self.weights = dict(cfg.weights)
        self.observe = frozenset(c for c, m in cfg.modes.items() if m == "observe")
        self.max_calls = cfg.max_calls
        self.short_s = cfg.short_call_seconds
        self.verstat_nets = tuple(ipaddress.ip_network(n, strict=False) for n in cfg.verstat_from)
        self._verstat_trust: dict[str, bool] = {}
        self.half_life = cfg.complaint_half_life_days

    # -- what the proxy saw ----------------------------------------------

    def record(self, call: CallFacts) -> None:
        """A new initial INVITE or MESSAGE. Retransmissions are the caller's
        to tell (the proxy core does, by transaction: proxy/transactions.py);
        a new INVITE reusing a Call-ID is a new call."""
        calls = self.calls
        cid = hash(call.call_id)
        now = call.received
        callee = call.callee_key
        peer = self.peers.touch(call.source, now)
        peer.call(now, None)  # no signal uses a trunk's distinct callees: not counted
        run = peer.dialled(callee, SEQUENTIAL_GAP) if callee is not None else 0
        caller = rng = None
        key = call.caller_key
        if key is not None:
            caller = self.callers.touch(key, now)
            caller.call(now, callee)
            if callee is not None:
                caller.dialled(callee, SEQUENTIAL_GAP)
            rng = self.ranges.touch(key // 1000, now)
            rng.call(now, key)
        calls.pop(cid, None)  # a reused Call-ID: outcomes belong to the newest call
        calls[cid] = _Call(call.method == "INVITE", caller, peer, rng, run, call.source, key)
        journal = self.journal
        if journal is not None and key is not None:
            journal.append((now, key, callee, 0))
        if len(calls) > self.max_calls:
            calls.popitem(last=False)  # the oldest call; its outcome goes uncounted

    def _finish(self, cid: int) -> None:
        self.calls.pop(cid, None)

    def final(self, call_id: str, status: int, now: float) -> tuple[str, bool] | None:
        """The first final response to a recorded INVITE, relayed from the
        switch. Returns (source, answered) when it counted."""
        cid = hash(call_id)
        rec = self.calls.get(cid)
        if rec is None or rec.final:
            return None
        if not rec.invite:
            self._finish(cid)
            return None
        rec.final = True
        answered = 200 <= status < 300
        for t in (rec.caller, rec.peer, rec.range):
            if t is not None:
                t.final(now, answered)
        if self.journal is not None and rec.key is not None:
            self.journal.append((now, rec.key, None, 2 if answered else 1))  # ANSWERED, FINAL
        if answered:
            rec.answered_at = now
        else:
            self._finish(cid)
        return rec.source, answered

    def ended(self, call_id: str, now: float) -> tuple[str, float] | None:
        """A BYE: the call's duration tells a short call from a normal one.
        Returns (source, duration) of an answered call."""
        cid = hash(call_id)
        rec = self.calls.get(cid)
        if rec is None or rec.answered_at is None:
            return None  # a BYE before any answer: the final response still counts
        self._finish(cid)
        duration = now - rec.answered_at
        short = duration < self.short_s
        for t in (rec.caller, rec.peer, rec.range):
            if t is not None:
                t.ended(now, short)
        if self.journal is not None and rec.key is not None:
            self.journal.append((now, rec.key, None, 4 if short else 3))  # SHORT, ENDED
        return rec.source, duration

    def tracking(self, call_id: str) -> bool:
        """Whether a call is awaiting its outcome."""
        return hash(call_id) in self.calls

    def forget(self, call_id: str) -> None:
        """The proxy answered the call itself (blocked, no switch): it has no
        outcome that says anything about the caller."""
        self._finish(hash(call_id))

    # -- scoring ---------------------------------------------------------

    def assess(self, call: CallFacts) -> Assessment:
        now = call.received
        key = call.caller_key
        if call.verified is not None:  # our own verification: no upstream to trust
            verstat: str | None = call.verified.lower()
        else:
            verstat = call.verstat.lower() if call.verstat and self._trusted(call.source) else None
        verified_a = verstat == PASSED and call.attest == "A"
        fired: list[tuple[str, float]] = []
        add = fired.append
        listed, traffic = self._number_signals(call.caller, key, now, add)
        if call.anonymous and not call.asserted and call.identity is None:
            add(("anonymous", 1.0))
        rec = self.calls.get(hash(call.call_id))
        if (
            rec is not None
            and rec.run >= 3
            and rec.peer.sequential(now) >= PEER_SEQUENTIAL_MIN
            and self._rotated(key, now)
        ):
            add(("sequential", ramp(rec.run, PEER_RUN)))
        callee = call.callee_key
        if (
            key is not None
            and callee is not None
            and _NANP_LO <= key < _NANP_HI
            and key // 10_000 == callee // 10_000
            and not verified_a
            and traffic is not None
            and traffic.distinct_bound() > NEIGHBOUR_FANOUT[0]
        ):
            s = ramp(traffic.distinct(now), NEIGHBOUR_FANOUT)
            if s:
                add(("neighbour-spoofing", s))
        peer = rec.peer if rec is not None else self.peers.get(call.source)
        if peer is not None:
            # a trunk's figures move slowly: computed once a second, not per call
            second = int(now)
            if peer.memo[0] != second:
                memo: list[tuple[str, float]] = []
                _outcome_signals(
                    peer, now, PEER_MIN_ENDED, PEER_MIN_FINALS, "peer-short-calls",
                    "peer-low-asr", memo.append,
                )  # fmt: skip
                peer.memo = (second, tuple(memo))
            fired.extend(peer.memo[1])
        self._attestation(verstat, verified_a, call.attest, listed, add)
        return self._total(fired)

    def _trusted(self, source: str) -> bool:
        """Whether verstat from this source is believed (memoised per source)."""
        known = self._verstat_trust.get(source)
        if known is None:
            try:
                ip = ipaddress.ip_address(source)
                known = any(ip in net for net in self.verstat_nets)
            except ValueError:
                known = False
            if len(self._verstat_trust) < 65536:
                self._verstat_trust[source] = known
        return known

    def _rotated(self, key: int | None, now: float) -> bool:
        """A caller with too little history of its own to judge (rotated
        caller IDs): it inherits the trunk's sequential-dialling evidence. A
        caller with history is judged on its own dialling, so a busy caller
        sharing a trunk with a sequential campaign is not blamed for it."""
        t = self.callers.get(key) if key is not None else None
        return t is None or not t.busy(1) or t.calls(now)[2] < SEQUENTIAL_MIN_CALLS

    def assess_number(self, caller: str, key: int | None, now: float) -> Assessment:
        """The part of a score that belongs to the number alone (lists,
        complaints, its traffic): what `explain` shows."""
        fired: list[tuple[str, float]] = []
        self._number_signals(caller, key, now, fired.append)
        return self._total(fired)

    def _number_signals(
        self, caller: str | None, key: int | None, now: float, add: _Add
    ) -> tuple[bool, CallerTraffic | None]:
        """Signals of the caller number. Returns (a list hit, its traffic)."""
        listed = self._list_signals(caller, key, now, add)
        t = None
        if key is not None:
            t = self.callers.get(key)
            # below the lowest threshold (over 2 calls a second) nothing can fire
            if t is not None and t.busy(2):
                self._caller_signals(t, now, add)
            rng = self.ranges.get(key // 1000)
            if rng is not None and rng.distinct_bound() > SNOWSHOE_CALLERS[0]:
                second = int(now)
                if rng.memo[0] != second:
                    memo: list[tuple[str, float]] = []
                    self._range_signal(rng, now, memo.append)
                    rng.memo = (second, tuple(memo))
                for signal in rng.memo[1]:
                    add(signal)
        return listed, t

    def _list_signals(self, caller: str | None, key: int | None, now: float, add: _Add) -> bool:
        """Lists, complaints and invalid numbers. True on any hit."""
        listed = False
        art = self.slot.current
        if art is not None and key is not None:
            entry = art.lookup(key)
            if entry is not None:
                flags = entry.flags
                if flags & _LIST_FLAGS:
                    add(("blocklist", 1.0))
                    listed = True
                if flags & Flag.DNO:
                    add(("dno-spoofed", 1.0))
                    listed = True
                if flags & Flag.FTC:
                    strength = self._complaint_strength(entry, now)
                    add(("complaints", strength))
                    listed = True
        if caller is not None and invalid_caller(caller, key):
            add(("invalid-number", 1.0))
            listed = True
        return listed

    def _complaint_strength(self, entry: Entry, now: float) -> float:
        """Complaints decay with a half-life from the last one; a complaint
        about a recording counts half again."""
        last = entry.last_seen
        age = max(0.0, (now + self.wall_offset) / 86400 - last) if last is not None else 0.0
        weight = entry.complaints * (1.5 if entry.flags & Flag.ROBOCALL else 1.0)
        decayed: float = weight * 0.5 ** (age / self.half_life)
        return min(1.0, decayed / COMPLAINTS_FULL)

    def _caller_signals(self, t: CallerTraffic, now: float, add: _Add) -> None:
        # each figure is computed only when the raw bucket counts could pass
        # its lowest threshold: most callers place a call or two an hour
        calls: tuple[float, float, float] | None = None  # (per s, min, hour), once at most
        rate = 0.0
        if t.s_cur + t.s_prev > RATE_RAMPS[0][0] or t.m_cur + t.m_prev > RATE_RAMPS[1][0]:
            calls = t.calls(now)
            rate = max(ramp(calls[0], RATE_RAMPS[0]), ramp(calls[1], RATE_RAMPS[1]))
        if t.h_cur + t.h_prev > RATE_RAMPS[2][0]:
            calls = calls or t.calls(now)
            rate = max(rate, ramp(calls[2], RATE_RAMPS[2]))
        if rate:
            add(("call-rate", rate))
        if t.distinct_bound() > FANOUT_RAMP[0]:
            fan = ramp(t.distinct(now), FANOUT_RAMP)
            if fan:
                add(("fan-out", fan))
        if t.seq_cur + t.seq_prev and t.h_cur + t.h_prev >= SEQUENTIAL_MIN_CALLS:
            per_h = (calls or t.calls(now))[2]
            if per_h >= SEQUENTIAL_MIN_CALLS:
                seq = ramp(t.sequential(now) / per_h, SEQUENTIAL_SHARE)
                if seq:
                    add(("sequential", seq))
        if t.end_cur + t.end_prev >= MIN_ENDED or t.fin_cur + t.fin_prev >= MIN_FINALS:
            _outcome_signals(t, now, MIN_ENDED, MIN_FINALS, "short-calls", "low-asr", add)

    def _range_signal(self, t: Traffic, now: float, add: _Add) -> None:
        callers = ramp(t.distinct(now), SNOWSHOE_CALLERS)
        if not callers:
            return
        finals, answered, ended, short = t.outcomes(now)
        bad = 0.0
        if ended >= RANGE_MIN_ENDED:
            bad = ramp(short / ended, SHORT_SHARE)
        if finals >= RANGE_MIN_FINALS:
            bad = max(bad, ramp(1 - answered / finals, FAIL_SHARE))
        if bad:
            add(("snowshoe", callers * bad))

    @staticmethod
    def _attestation(
        verstat: str | None, verified_a: bool, attest: str | None, listed: bool, add: _Add
    ) -> None:
        if verstat == FAILED:
            add(("stir-failed", 1.0))
        elif verified_a:
            if not listed:  # a passed attestation never outweighs a list hit
                add(("attestation-a", 1.0))
        elif attest == "B":
            add(("attestation-b", 1.0))
        elif attest == "C":
            add(("attestation-c", 1.0))
        elif verstat != PASSED:
            add(("unattested", 1.0))

    def _total(self, fired: list[tuple[str, float]]) -> Assessment:
        weights, observe = self.weights, self.observe
        total = 0.0
        points: list[tuple[str, float]] = []
        for code, strength in fired:
            p = weights[code] * strength
            if p:
                points.append((code, p))
                if code not in observe:
                    total += p
        if not points:
            return NOTHING
        if len(points) > 1:
            points.sort(key=_by_points)
        reasons: list[str] = []
        observed: list[str] = []
        for code, p in points:
            if code in observe:
                observed.append(code)  # credits too
            elif p > 0:
                reasons.append(code)
        score = round(total)
        score = 0 if score < 0 else 100 if score > 100 else score
        return Assessment(score, tuple(reasons), tuple(observed), tuple(points))


NOTHING = Assessment(0, (), (), ())


def _by_points(cp: tuple[str, float]) -> float:
    return -cp[1]


def _outcome_signals(
    t: Traffic, now: float, min_ended: int, min_finals: int, short_code: str, asr_code: str,
    add: _Add,
) -> None:  # fmt: skip
    finals, answered, ended, short = t.outcomes(now)
    if ended >= min_ended:
        s = ramp(short / ended, SHORT_SHARE)
        if s:
            add((short_code, s))
    if finals >= min_finals:
        s = ramp(1 - answered / finals, FAIL_SHARE)
        if s:
            add((asr_code, s))
