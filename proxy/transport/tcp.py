"""TCP edge: framing per connection, responses back on the connection a
request came in on, and outbound connections opened on demand."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import cast

from ..core import StatelessProxy
from ..events import Address
from ..sip import KeepAlivePing, Limits, SipParseError, StreamFramer
from .udp import Dispatch

log = logging.getLogger("robocall_shield.tcp")
Key = tuple[str, int]

# Like Kamailio's tcp_max_connections and tcp_connection_lifetime: a peer
# cannot hold unbounded sockets, and idle ones are closed (RFC 5626 keep-alives
# count as activity).
MAX_CONNECTIONS = 4096
IDLE_TIMEOUT = 300.0
MAX_PENDING = 64  # messages queued per destination while connecting


class TcpConnection(asyncio.Protocol):
    def __init__(self, edge: TcpEdge) -> None:
        self.edge = edge
        self.framer = StreamFramer(edge.limits)
        self.transport: asyncio.Transport | None = None
        self.peer: Address | None = None
        self.last_active = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        if len(self.edge.connections) >= MAX_CONNECTIONS:
            log.warning("tcp connection limit %d reached; refusing a connection", MAX_CONNECTIONS)
            self.edge.on_error()
            transport.close()
            return
        host, port = transport.get_extra_info("peername")[:2]
        self.peer = Address(host, port, "tcp")
        self.edge.connections[(host, port)] = self

    def data_received(self, data: bytes) -> None:
        if self.peer is None or self.transport is None:
            return  # refused in connection_made
        self.last_active = time.monotonic()
        try:
            framed = self.framer.feed(data)
        except SipParseError as exc:
            # The stream cannot be resynchronised: say so if we can, then close.
            self.edge.dispatch(self.edge.core.reject(exc, self.peer), None)
            self.transport.close()
            return
        for event in framed:
            self.edge.on_receive()
            if isinstance(event, KeepAlivePing):
                self.transport.write(b"\r\n")
                continue
            now = time.monotonic()
            try:
                msg = self.framer.parse(event)
            except SipParseError as exc:
                self.edge.dispatch(self.edge.core.reject(exc, self.peer), now)
                continue  # framed by Content-Length, so the stream is still in step
            self.edge.dispatch(self.edge.core.receive_message(msg, self.peer, now), now)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None:
            key = (self.peer.host, self.peer.port)
            if self.edge.connections.get(key) is self:
                del self.edge.connections[key]

    def write(self, data: bytes) -> bool:
        if self.transport is None or self.transport.is_closing():
            return False
        self.last_active = time.monotonic()
        self.transport.write(data)
        return True


class TcpEdge:
    def __init__(self, core: StatelessProxy, dispatch: Dispatch, limits: Limits) -> None:
        self.core = core
        self.dispatch = dispatch
        self.limits = limits
        self.connections: dict[Key, TcpConnection] = {}
        self._pending: dict[Key, list[bytes]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.on_receive: Callable[[], None] = lambda: None
        self.on_error: Callable[[], None] = lambda: None

    def protocol(self) -> TcpConnection:
        return TcpConnection(self)

    def send(self, dest: Address, data: bytes) -> bool:
        key = (dest.host, dest.port)
        conn = self.connections.get(key)
        if conn is not None:
            return conn.write(data)
        queued = self._pending.get(key)
        if queued is not None:
            if len(queued) >= MAX_PENDING:
                return False
            queued.append(data)
            return True
        self._pending[key] = [data]
        task = asyncio.get_running_loop().create_task(self._connect(key))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    def close_idle(self, now: float) -> int:
        """Close connections idle for longer than IDLE_TIMEOUT; returns how many."""
        idle = [c for c in self.connections.values() if now - c.last_active > IDLE_TIMEOUT]
        for conn in idle:
            if conn.transport is not None:
                conn.transport.close()
        return len(idle)

    async def _connect(self, key: Key) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(self.protocol, key[0], key[1]), timeout=5.0
            )
        except (OSError, TimeoutError) as exc:
            dropped = self._pending.pop(key, [])
            log.warning(
                "tcp connect to %s:%d failed (%s); %d message(s) dropped",
                key[0],
                key[1],
                exc,
                len(dropped),
            )
            for _ in dropped:
                self.on_error()
            return
        self.connections[key] = conn
        for data in self._pending.pop(key, []):
            conn.write(data)

    def close(self) -> None:
        for conn in list(self.connections.values()):
            if conn.transport is not None:
                conn.transport.close()
