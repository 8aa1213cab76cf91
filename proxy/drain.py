"""When a draining worker may exit (SIGTERM, ``[sip] drain_seconds``).

A stateless proxy keeps no dialog state, so "the calls in flight" has to be
read off something else. The nearest thing is the reputation engine's table
of calls awaiting their outcome: an INVITE forwarded and not yet finally
answered, or answered and not yet ended by a BYE. It holds leftovers too (a
BYE that never came, or went to a sibling worker), which would keep an idle
worker waiting the whole window; so a drain also ends once nothing of an
existing call (an in-dialog request or a response) has been relayed for
``QUIET`` seconds. Under load calls keep ending, so the window is what
bounds the drain; an idle worker exits at once. Sans-I/O: the clock is
passed in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .events import Event, Forwarded

QUIET = 2.0  # seconds without a relayed message after which no call is in flight


@dataclass(slots=True)
class Drain:
    seconds: float  # the bound: [sip] drain_seconds
    started: float
    last_relay: float = -1.0

    def __post_init__(self) -> None:
        self.last_relay = self.started

    def saw(self, events: Sequence[Event], now: float) -> None:
        """Events of one message: a relayed one shows a call still in flight."""
        for ev in events:
            if type(ev) is Forwarded:
                self.last_relay = now
                return

    def done(self, now: float, in_flight: int | None) -> str | None:
        """Why the drain may end now, or None to go on. ``in_flight``: calls
        awaiting their outcome, None when nothing tracks them."""
        if now - self.started >= self.seconds:
            return "drain_seconds over"
        if in_flight == 0:
            return "no call awaiting its final response or BYE"
        if now - self.last_relay >= QUIET:
            return f"nothing relayed for {QUIET:g} s"
        return None
