"""Rolling statistics per upstream peer (by [[peers]] name, plus "unknown"),
in memory, O(1) per call: volume, the share the analytics flagged
(labelled or blocked), the attestation mix, ASR, ACD and the short-call
share, over the last 5 minutes, hour and day.

Counts go into a ring of one-minute slots (the 5-minute and hour windows)
and a ring of one-hour slots (the day): a call touches one slot of each; a
slot is zeroed when its minute or hour comes round again. Reading a window
sums its slots (the current, partial one included), which only the admin
API and scrapes do. Time is passed in: no clock here.

With several workers each keeps its own rings; for the admin API the first
worker gathers its siblings' raw slots (``raw``/``decode_raw``) and sums
them slot by slot into a copy (``combined``), so every share and average
is computed from the node's summed counts, never averaged across workers.

Calls a peer action refused (peer-blocked, peer-throttled) are counted but
not assessed: the chain stopped before the analytics, so they are left out
of the flagged share, which would otherwise only echo the action.
"""

from __future__ import annotations

import json
import math

from ..events import CallOutcome, Event, Screened
from ..peers import PeerDirectory
from ..screening.peer_check import BLOCKED, LABELLED, NAME, THROTTLED
from ..screening.verdict import Action
from ..versioned_json import load_versioned

# what one slot counts, by index
CALLS, ASSESSED, FLAGGED, LABEL, BLOCK, REFUSED = range(6)
ATTEST_A, ATTEST_B, ATTEST_C, ATTEST_NONE = range(6, 10)
FINALS, ANSWERED, ENDED, TALK, SHORT = range(10, 15)
WIDTH = 15
_ATTEST = {"A": ATTEST_A, "B": ATTEST_B, "C": ATTEST_C}
ATTESTATIONS = (("A", ATTEST_A), ("B", ATTEST_B), ("C", ATTEST_C), ("none", ATTEST_NONE))
MINUTE_SLOTS, HOUR_SLOTS = 60, 24
# window name -> (ring: 0 minutes, 1 hours; slots summed)
WINDOWS = {"5m": (0, 5), "1h": (0, 60), "24h": (1, 24)}
RAW_FORMAT = 1  # the version of what ``raw`` writes
_MAX_COUNT = 1e15  # a slot count (or seconds of talk) past this is not a real figure
# one ring's live slots: (epoch, its WIDTH counts)
RawSlots = list[tuple[int, list[float]]]
# peer name -> (its minute ring's slots, its hour ring's slots)
RawStats = dict[str, tuple[RawSlots, RawSlots]]


class Ring:
    """``n`` slots of ``width`` seconds, each a list of WIDTH counts."""

    __slots__ = ("epochs", "n", "slots", "width")

    def __init__(self, n: int, width: int) -> None:
        self.n = n
        self.width = width
        self.epochs = [-1] * n
        self.slots = [[0.0] * WIDTH for _ in range(n)]

    def slot(self, now: float) -> list[float]:
        epoch = int(now) // self.width
        i = epoch % self.n
        if self.epochs[i] != epoch:
            self.epochs[i] = epoch
            self.slots[i] = [0.0] * WIDTH
        return self.slots[i]

    def live(self, now: float) -> RawSlots:
        """The slots still inside the ring's span at ``now``."""
        newest = int(now) // self.width
        return [
            (epoch, list(counts))
            for epoch, counts in zip(self.epochs, self.slots, strict=True)
            if newest - self.n < epoch <= newest and epoch >= 0  # -1: never used
        ]

    def add(self, epoch: int, counts: list[float]) -> None:
        """Another worker's slot: summed into ours of the same epoch; it
        replaces an older one in its place; an older one than ours is gone."""
        i = epoch % self.n
        if self.epochs[i] == epoch:
            mine = self.slots[i]
            for k in range(WIDTH):
                mine[k] += counts[k]
        elif self.epochs[i] < epoch:
            self.epochs[i] = epoch
            self.slots[i] = list(counts)

    def total(self, now: float, count: int) -> list[float]:
        """The sums over the last ``count`` slots, the current one included."""
        newest = int(now) // self.width
        out = [0.0] * WIDTH
        for epoch, counts in zip(self.epochs, self.slots, strict=True):
            if newest - count < epoch <= newest:
                for k in range(WIDTH):
                    out[k] += counts[k]
        return out


class PeerStats:
    def __init__(self, directory: PeerDirectory, short_call_seconds: float = 10.0) -> None:
        self.directory = directory
        self.short_s = short_call_seconds  # as [reputation] short_call_seconds
        self.rings = {
            name: (Ring(MINUTE_SLOTS, 60), Ring(HOUR_SLOTS, 3600)) for name in directory.names
        }

    def observe(self, ev: Event, now: float) -> None:
        if isinstance(ev, Screened):
            self.screened(ev, now)
        elif isinstance(ev, CallOutcome):
            self.outcome(ev, now)

    def screened(self, ev: Screened, now: float) -> None:
        if ev.repeat:  # a retransmission: the call is counted once
            return
        minutes, hours = self.rings[self.directory.name_of(ev.call.source)]
        a, b = minutes.slot(now), hours.slot(now)
        attest = _ATTEST.get(ev.call.attest or "", ATTEST_NONE)
        a[CALLS] += 1
        b[CALLS] += 1
        a[attest] += 1
        b[attest] += 1
        result = ev.screening
        first = result.verdict.reasons[0] if result.verdict.reasons else ""
        ours = result.decided_by == NAME
        if ours and first in (BLOCKED, THROTTLED):
            a[REFUSED] += 1
            b[REFUSED] += 1
            return
        a[ASSESSED] += 1
        b[ASSESSED] += 1
        action = ev.action
        if action is Action.PASS or (ours and first == LABELLED):
            return  # a label only the peer's action put on is no finding
        kind = LABEL if action is Action.LABEL else BLOCK
        for counts in (a, b):
            counts[FLAGGED] += 1
            counts[kind] += 1

    def outcome(self, ev: CallOutcome, now: float) -> None:
        minutes, hours = self.rings[self.directory.name_of(ev.source)]
        a, b = minutes.slot(now), hours.slot(now)
        if ev.answered is not None:
            a[FINALS] += 1
            b[FINALS] += 1
            if ev.answered:
                a[ANSWERED] += 1
                b[ANSWERED] += 1
        if ev.duration is not None:
            short = 1 if ev.duration < self.short_s else 0
            for counts in (a, b):
                counts[ENDED] += 1
                counts[TALK] += ev.duration
                counts[SHORT] += short

    # -- several workers (admin path only) -----------------------------------

    def raw(self, now: float) -> RawStats:
        """Every peer's live slots, for the first worker to sum."""
        out: RawStats = {}
        for name, (minutes, hours) in self.rings.items():
            slots = minutes.live(now), hours.live(now)
            if slots[0] or slots[1]:
                out[name] = slots
        return out

    def combined(self, others: list[RawStats], now: float) -> PeerStats:
        """A copy of these statistics with ``others`` added slot by slot."""
        into = PeerStats(self.directory, self.short_s)
        for source in (self.raw(now), *others):
            for name, (minutes, hours) in source.items():
                rings = into.rings.get(name)
                if rings is None:
                    continue  # a peer this worker does not declare (a config being changed)
                for ring, slots in zip(rings, (minutes, hours), strict=True):
                    for epoch, counts in slots:
                        ring.add(epoch, counts)
        return into

    # -- reading -------------------------------------------------------------

    def totals(self, name: str, window: str, now: float) -> list[float]:
        ring, count = WINDOWS[window]
        return self.rings[name][ring].total(now, count)

    def summary(self, name: str, now: float) -> dict[str, object]:
        """Every window's figures, for the admin API."""
        return {w: figures(self.totals(name, w, now)) for w in WINDOWS}


def share(part: float, whole: float) -> float | None:
    return part / whole if whole else None


def figures(t: list[float]) -> dict[str, object]:
    calls = t[CALLS]
    return {
        "calls": int(calls),
        "assessed": int(t[ASSESSED]),
        "refused_by_peer_action": int(t[REFUSED]),
        "flagged": int(t[FLAGGED]),
        "labelled": int(t[LABEL]),
        "blocked": int(t[BLOCK]),
        "flagged_share": share(t[FLAGGED], t[ASSESSED]),
        "attestation": {level: share(t[k], calls) for level, k in ATTESTATIONS},
        "finals": int(t[FINALS]),
        "asr": share(t[ANSWERED], t[FINALS]),
        "ended": int(t[ENDED]),
        "acd_seconds": share(t[TALK], t[ENDED]),
        "short_call_share": share(t[SHORT], t[ENDED]),
    }


def encode_raw(raw: RawStats) -> bytes:
    peers = {name: {"minutes": m, "hours": h} for name, (m, h) in raw.items()}
    return json.dumps({"v": RAW_FORMAT, "peers": peers}, separators=(",", ":")).encode()


def decode_raw(data: bytes) -> RawStats:
    """What ``encode_raw`` wrote; ValueError for anything else, so a bad
    answer is left out whole, never summed in part."""
    doc = load_versioned(data, RAW_FORMAT, "peer statistics")
    peers = doc.get("peers")
    if not isinstance(peers, dict):
        raise ValueError("no peers object")
    out: RawStats = {}
    for name, rings in peers.items():
        if not isinstance(rings, dict) or set(rings) != {"minutes", "hours"}:
            raise ValueError(f"peer {name[:40]!r}: expected minutes and hours")
        out[name] = (_slots(rings["minutes"], name), _slots(rings["hours"], name))
    return out


def _slots(raw: object, name: str) -> RawSlots:
    if not isinstance(raw, list) or len(raw) > MINUTE_SLOTS:
        raise ValueError(f"peer {name[:40]!r}: expected a list of at most {MINUTE_SLOTS} slots")
    out: RawSlots = []
    for slot in raw:
        if not (isinstance(slot, list) and len(slot) == 2):
            raise ValueError(f"peer {name[:40]!r}: a slot is [epoch, counts]")
        epoch, counts = slot
        if type(epoch) is not int or epoch < 0:
            raise ValueError(f"peer {name[:40]!r}: bad epoch {str(epoch)[:40]}")
        if not (isinstance(counts, list) and len(counts) == WIDTH and all(map(_count, counts))):
            raise ValueError(f"peer {name[:40]!r}: a slot holds {WIDTH} non-negative counts")
        out.append((epoch, [float(c) for c in counts]))
    return out


def _count(c: object) -> bool:
    if isinstance(c, bool) or not isinstance(c, int | float):
        return False
    return math.isfinite(c) and 0 <= c < _MAX_COUNT
