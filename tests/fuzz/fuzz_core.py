"""atheris harness: the fully equipped proxy core (reputation, subscribers,
declared peers, metrics) fed datagrams from a peer, a stranger and the
switch, and answers to what it forwarded, with its state kept across inputs
as in production.

    python -m tests.fuzz.fuzz_core CORPUS_DIR -max_total_time=60

Fails when anything raises or an answer breaks tests/fuzz/invariants.py
(well-formed events; requests from peers only to switches; answers only
back to the source or down the Via path)."""

from __future__ import annotations

import importlib
import itertools
import re
import sys
from collections import deque
from pathlib import Path

import atheris

with atheris.instrument_imports():
    # what the harness drives, imported here so atheris instruments it
    for _module in ("proxy.core", "proxy.metrics", "proxy.reputation", "proxy.screening"):
        importlib.import_module(_module)
    from proxy.events import Address, Send

from tests.conftest import make_equipped_core
from tests.fuzz.invariants import check_events, header_values
from tests.fuzz.seeds import seed
from tests.sipmsg import response

SOURCES = [
    Address("192.0.2.99", 5060, "udp"),  # a declared peer
    Address("192.0.2.99", 40312, "tcp"),
    Address("203.0.113.7", 5060, "udp"),  # a stranger
    Address("192.0.2.20", 5080, "udp"),  # the switch
]
CLOCK = itertools.count(1_800_000_000.0, 0.41)
FORWARDED: deque[bytes] = deque(maxlen=32)
STATUS = re.compile(rb"^\d{3}")


CORE, METRICS = make_equipped_core()


def one_input(data: bytes) -> None:
    """Byte 0 picks the source; bit 7 set: the switch answers something we
    forwarded earlier, with the status the next three digits give (if any)."""
    if not data:
        return
    selector, wire = data[0], data[1:]
    source = SOURCES[selector % len(SOURCES)]
    if selector & 0x80 and FORWARDED:
        sent = FORWARDED[selector % len(FORWARDED)]
        vias = tuple(v.strip() for v in header_values(sent, "via|v"))
        status = int(m.group()) if (m := STATUS.match(wire)) else 200
        wire = response(status, "Fuzz", vias=vias) + wire[3:]
        source = SOURCES[3]
    events = CORE.receive_datagram(wire, source, next(CLOCK))
    check_events(CORE, events, wire, source.host)
    METRICS.record(events)
    for ev in events:
        if isinstance(ev, Send) and ev.dest.host == "192.0.2.20":
            FORWARDED.append(ev.data)


def main(argv: list[str]) -> None:
    dirs = [a for a in argv[1:] if not a.startswith("-")]
    for d in dirs[:1]:
        seed(Path(d), prefix=b"\x00")
    atheris.Setup(argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
