"""Which switch gets a new call: health state and selection, sans-I/O.

Switches are pinged with OPTIONS; any response means alive, silence for
``ping_timeout`` counts as a failure. A stateless proxy must send the CANCEL,
the ACK and every retransmission of a request to the switch that got the
INVITE, so selection is keyed by Call-ID:

* ``hash``: weighted rendezvous hashing on Call-ID. Deterministic without
  state and moves only the calls of a switch that goes down.
* ``round-robin``: smooth weighted round-robin for new Call-IDs, with a
  bounded affinity table so a transaction's later requests follow it.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from dataclasses import dataclass

from .config import RoutingConfig, SwitchConfig

_MASK = (1 << 64) - 1
# An INVITE transaction lives as long as the phone rings: past Timer C (180 s),
# so a late CANCEL or ACK still finds its switch. Refreshed on every hit.
AFFINITY_TTL = 200.0
AFFINITY_MAX = 200_000


def _mix(x: int) -> int:
    """splitmix64 finaliser: spreads a 64-bit value evenly."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


@dataclass(slots=True)
class SwitchState:
    cfg: SwitchConfig
    seed: int
    up: bool = True
    failures: int = 0
    successes: int = 0
    ping_call_id: str | None = None
    ping_sent_at: float = 0.0
    next_ping_at: float = 0.0
    current_weight: int = 0


class SwitchPool:
    def __init__(self, switches: tuple[SwitchConfig, ...], cfg: RoutingConfig) -> None:
        self.cfg = cfg
        self.states = [
            SwitchState(
                sw, int.from_bytes(hashlib.blake2b(sw.name.encode(), digest_size=8).digest())
            )
            for sw in switches
        ]
        self._affinity: OrderedDict[str, tuple[SwitchState, float]] = OrderedDict()

    def healthy(self) -> list[SwitchState]:
        return [s for s in self.states if s.up]

    def choose(self, call_id: str, now: float) -> SwitchConfig | None:
        if self.cfg.policy == "round-robin":
            return self._round_robin(call_id, now)
        return self._rendezvous(call_id)

    def _rendezvous(self, call_id: str) -> SwitchConfig | None:
        key = int.from_bytes(
            hashlib.blake2b(call_id.encode("utf-8", "surrogateescape"), digest_size=8).digest()
        )
        best: SwitchState | None = None
        best_score = -1.0
        for s in self.states:
            if not s.up:
                continue
            unit = (_mix(key ^ s.seed) + 1) / (_MASK + 2)  # in (0, 1)
            score = -s.cfg.weight / math.log(unit)
            if score > best_score:
                best, best_score = s, score
        return best.cfg if best else None

    def _round_robin(self, call_id: str, now: float) -> SwitchConfig | None:
        hit = self._affinity.get(call_id)
        if hit is not None and hit[0].up and hit[1] > now:
            self._affinity[call_id] = (hit[0], now + AFFINITY_TTL)
            self._affinity.move_to_end(call_id)
            return hit[0].cfg
        up = self.healthy()
        if not up:
            return None
        total = 0
        best = up[0]
        for s in up:  # nginx's smooth weighted round-robin
            s.current_weight += s.cfg.weight
            total += s.cfg.weight
            if s.current_weight > best.current_weight:
                best = s
        best.current_weight -= total
        self._affinity[call_id] = (best, now + AFFINITY_TTL)
        self._affinity.move_to_end(call_id)
        while len(self._affinity) > AFFINITY_MAX:
            self._affinity.popitem(last=False)
        while self._affinity:
            oldest = next(iter(self._affinity.values()))
            if oldest[1] > now:
                break
            self._affinity.popitem(last=False)
        return best.cfg

    # -- health checks -------------------------------------------------

    def due_pings(self, now: float) -> list[SwitchState]:
        """Time out unanswered pings, then list switches to ping now."""
        due: list[SwitchState] = []
        for s in self.states:
            if s.ping_call_id is not None and now - s.ping_sent_at >= self.cfg.ping_timeout:
                s.ping_call_id = None
                self._failure(s)
            if s.ping_call_id is None and now >= s.next_ping_at:
                due.append(s)
        return due

    def ping_sent(self, state: SwitchState, call_id: str, now: float) -> None:
        state.ping_call_id = call_id
        state.ping_sent_at = now
        state.next_ping_at = now + self.cfg.ping_interval

    def ping_answered(self, call_id: str) -> SwitchState | None:
        for s in self.states:
            if s.ping_call_id == call_id:
                s.ping_call_id = None
                s.failures = 0
                s.successes += 1
                if not s.up and s.successes >= self.cfg.successes_before_up:
                    s.up = True
                return s
        return None

    def _failure(self, s: SwitchState) -> None:
        s.successes = 0
        s.failures += 1
        if s.up and s.failures >= self.cfg.failures_before_down:
            s.up = False
