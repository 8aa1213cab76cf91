"""Reference target for python -m loadtest and load_sipp.py: a bare uvloop UDP
forwarder, no SIP.

Every datagram from a client goes to the upstream (the SIPp UAS); every
datagram from the upstream goes back to the client that sent last. That is
exact with the single SIPp UAC the harness runs (with several clients it
would need Call-ID routing, i.e. parsing, which is what this avoids). SIPp
answers to the source address of a request, not its Via, so the forwarder
needs no header rewriting for the UAS to answer through it.

Its CPU time per 1000 calls is the floor that uvloop and the kernel set for
any Python proxy on this machine, measured by the same harness as the proxy.

A datagram to --control-port gets the counters back as JSON, so the harness
can count calls in a measuring window the same way as with the proxy's
/metrics.

    .venv/bin/python loadtest/bare_forwarder.py --port 5060 --upstream-port 5080 \\
        --control-port 5061
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from typing import Any

import uvloop

Addr = tuple[str | Any, int]


class Forwarder(asyncio.DatagramProtocol):
    def __init__(self, upstream: Addr) -> None:
        self.upstream = upstream
        self.client: Addr | None = None
        self.transport: asyncio.DatagramTransport | None = None
        self.datagrams = 0
        self.invites = 0  # new calls (and INVITE retransmissions), like rs_screening_verdicts

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Addr) -> None:
        assert self.transport is not None
        self.datagrams += 1
        if addr == self.upstream:
            if self.client is not None:
                self.transport.sendto(data, self.client)
            return
        self.client = addr
        if data.startswith(b"INVITE "):
            self.invites += 1
        self.transport.sendto(data, self.upstream)


class Control(asyncio.DatagramProtocol):
    def __init__(self, fwd: Forwarder) -> None:
        self.fwd = fwd
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Addr) -> None:
        assert self.transport is not None
        stats = {"datagrams": self.fwd.datagrams, "invites": self.fwd.invites}
        self.transport.sendto(json.dumps(stats).encode(), addr)


async def serve(host: str, port: int, upstream: Addr, control_port: int) -> None:
    loop = asyncio.get_running_loop()
    fwd = Forwarder(upstream)
    sip, _ = await loop.create_datagram_endpoint(lambda: fwd, local_addr=(host, port))
    ctl, _ = await loop.create_datagram_endpoint(
        lambda: Control(fwd), local_addr=(host, control_port)
    )
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        sip.close()
        ctl.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="bare uvloop UDP forwarder (no SIP parsing)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True, help="port the clients send to")
    ap.add_argument("--upstream-host", default="127.0.0.1")
    ap.add_argument("--upstream-port", type=int, required=True)
    ap.add_argument("--control-port", type=int, required=True, help="UDP port for counters")
    args = ap.parse_args(argv)
    upstream = (args.upstream_host, args.upstream_port)
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(serve(args.host, args.port, upstream, args.control_port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
