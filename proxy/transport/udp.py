"""UDP edge: one socket both receives from peers and sends to switches, so
the port in our Via is the port responses come back to."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable
from typing import Any, cast

from ..core import StatelessProxy
from ..events import Address, Event

# the edge hands the core's events over with the time the message arrived
Dispatch = Callable[[list[Event], float | None], None]


class UdpEdge(asyncio.DatagramProtocol):
    def __init__(self, core: StatelessProxy, dispatch: Dispatch) -> None:
        self.core = core
        self.dispatch = dispatch
        self.transport: asyncio.DatagramTransport | None = None
        self.on_receive: Callable[[], None] = lambda: None
        self.on_error: Callable[[], None] = lambda: None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDPTransport does not subclass asyncio.DatagramTransport
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, ...]) -> None:
        self.on_receive()
        source = Address(str(addr[0]), int(addr[1]), "udp")
        now = time.monotonic()
        self.dispatch(self.core.receive_datagram(data, source, now), now)

    def error_received(self, exc: Exception) -> None:
        self.on_error()  # ICMP errors from earlier sends; nothing to retry statelessly

    def send(self, dest: Address, data: bytes) -> bool:
        if self.transport is None or self.transport.is_closing():
            return False
        try:
            self.transport.sendto(data, (dest.host, dest.port))
        except (OSError, ValueError):
            # uvloop raises ValueError for an address of the other family
            # (an IPv6 Via on an IPv4 socket): a send error, not a traceback
            # per datagram in the log
            return False
        return True


SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)


def grow_receive_buffer(sock: socket.socket, size: int) -> None:
    """Ask for ``size`` bytes; as root, past net.core.rmem_max. Linux reports
    twice the value it books, hence the halving when logging."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    if sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2 < size:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
    got = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2
    level = logging.INFO if got >= size else logging.WARNING
    logging.getLogger("robocall_shield").log(
        level, "UDP receive buffer %d bytes (asked %d)", got, size
    )
