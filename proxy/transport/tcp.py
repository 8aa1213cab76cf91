"""TCP edge: framing per connection, responses back on the connection a
request came in on, and outbound connections opened on demand.

Hostile peers are bounded by [sip.limits]: connections in total and per
source IP, bytes of unfinished messages in total and per source IP, and a
deadline to finish a message once started (slowloris). A peer that does not
read what we write stops being read (so it cannot make us buffer its
answers), and beyond WRITE_LIMIT it is cut off."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable
from typing import cast

from ..core import StatelessProxy
from ..events import Address
from ..sip import KeepAlivePing, Limits, SipParseError, StreamFramer
from .udp import Dispatch

log = logging.getLogger("robocall_shield.tcp")
Key = tuple[str, int]

# Idle connections are closed like Kamailio's tcp_connection_lifetime (RFC
# 5626 keep-alives count as activity).
IDLE_TIMEOUT = 300.0
MAX_PENDING = 64  # messages queued per destination while connecting
WRITE_HIGH = 65536  # past this much unsent, stop reading the peer
WRITE_LIMIT = 1 << 20  # past this much unsent, drop the connection


class _Source:
    """What one IP address holds: inbound connections, buffered bytes."""

    __slots__ = ("buffered", "connections")

    def __init__(self) -> None:
        self.connections = 0
        self.buffered = 0


class TcpConnection(asyncio.Protocol):
    def __init__(self, edge: TcpEdge, outbound: bool = False) -> None:
        self.edge = edge
        self.outbound = outbound
        self.framer = StreamFramer(edge.limits)
        self.transport: asyncio.Transport | None = None
        self.peer: Address | None = None
        self.alias: Key | None = None  # the key we dialled, if not the peername
        self.last_active = time.monotonic()
        self.buffered = 0  # the framer's bytes, as counted in the edge's totals
        self.started = 0.0  # when the unfinished message began; 0: none
        self._source: _Source | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        host, port = transport.get_extra_info("peername")[:2]
        refused = self.edge.admit(host, self.outbound)
        if refused is not None:
            self.edge.on_close(refused)
            self.transport.abort()
            return
        self.peer = Address(host, port, self.edge.transport)
        self._source = self.edge.source(host, inbound=not self.outbound)
        self.edge.connections[(host, port)] = self
        self.transport.set_write_buffer_limits(high=WRITE_HIGH)

    def data_received(self, data: bytes) -> None:
        transport = self.transport
        if self.peer is None or transport is None or transport.is_closing():
            return  # refused in connection_made, or being cut off
        now = self.last_active = time.monotonic()
        try:
            framed = self.framer.feed(data)
        except SipParseError as exc:
            # The stream cannot be resynchronised: say so if we can, then close.
            self._release()
            self.edge.on_close("bad-framing")
            self.edge.dispatch(self.edge.core.reject(exc, self.peer), None)
            transport.close()
            return
        for event in framed:
            self.edge.on_receive()
            if isinstance(event, KeepAlivePing):
                transport.write(b"\r\n")
                continue
            try:
                msg = self.framer.parse(event)
            except SipParseError as exc:
                self.edge.dispatch(self.edge.core.reject(exc, self.peer), now)
                continue  # framed by Content-Length, so the stream is still in step
            self.edge.dispatch(self.edge.core.receive_message(msg, self.peer, now), now)
        if transport.is_closing():  # cut off while dispatching (write-limit)
            self._release()
            return
        self._account(now, bool(framed))

    def _account(self, now: float, progressed: bool) -> None:
        """Book the framer's buffer in the totals; cut the connection off if a
        limit is passed, and start the deadline of a newly begun message."""
        size = self.framer.buffered
        delta, self.buffered = size - self.buffered, size
        edge, source, limits = self.edge, self._source, self.edge.limits
        edge.buffered += delta
        if source is not None:
            source.buffered += delta
            if source.buffered > limits.max_buffered_bytes_per_source:
                self.cut_off("source-buffer-limit")
                return
        if edge.buffered > limits.max_buffered_bytes:
            self.cut_off("buffer-limit")
            return
        if progressed or not self.framer.partial:
            self.started = 0.0
        if self.framer.partial and not self.started and limits.message_timeout:
            self.started = now
            if self._timer is None:
                self._timer = asyncio.get_running_loop().call_later(
                    limits.message_timeout, self._deadline
                )

    def _deadline(self) -> None:
        self._timer = None
        if not self.started or self.transport is None or self.transport.is_closing():
            return
        left = self.started + self.edge.limits.message_timeout - time.monotonic()
        if left > 0:  # a later message began since: its own deadline
            self._timer = asyncio.get_running_loop().call_later(left, self._deadline)
            return
        self.cut_off("message-timeout")

    def cut_off(self, reason: str) -> None:
        """Drop the connection now, unsent bytes and all."""
        self._release()
        self.edge.on_close(reason)
        if self.transport is not None:
            self.transport.abort()

    def _release(self) -> None:
        self.started = 0.0
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.edge.buffered -= self.buffered
        if self._source is not None:
            self._source.buffered -= self.buffered
        self.buffered = 0

    def pause_writing(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()  # no new requests until it reads our answers

    def resume_writing(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    @property
    def key(self) -> Key | None:
        return None if self.peer is None else (self.peer.host, self.peer.port)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is None:
            return
        self._release()
        self.edge.forget(self)

    def write(self, data: bytes) -> bool:
        transport = self.transport
        if transport is None or transport.is_closing():
            return False
        if transport.get_write_buffer_size() + len(data) > WRITE_LIMIT:
            self.cut_off("write-limit")
            return False
        self.last_active = time.monotonic()
        transport.write(data)
        return True


class TcpEdge:
    def __init__(
        self,
        core: StatelessProxy,
        dispatch: Dispatch,
        limits: Limits,
        transport: str = "tcp",
        client_tls: ssl.SSLContext | None = None,
    ) -> None:
        self.transport = transport  # "tls": the same edge over TLS connections
        self.client_tls = client_tls  # for connections we open ourselves
        self.core = core
        self.dispatch = dispatch
        self.limits = limits
        self.connections: dict[Key, TcpConnection] = {}
        self.sources: dict[str, _Source] = {}
        self.buffered = 0  # bytes of unfinished messages over all connections
        self._pending: dict[Key, list[bytes]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.on_receive: Callable[[], None] = lambda: None
        self.on_error: Callable[[], None] = lambda: None
        # a connection refused or cut off, with why (a metric label)
        self.on_close: Callable[[str], None] = lambda reason: None

    def protocol(self) -> TcpConnection:
        return TcpConnection(self)

    def admit(self, host: str, outbound: bool) -> str | None:
        """Why a new connection must be refused, or None."""
        if outbound:
            return None  # counted when send() began dialling it
        if len(self.connections) + len(self._pending) >= self.limits.max_connections:
            return "connection-limit"
        src = self.sources.get(host)
        if src is not None and src.connections >= self.limits.max_connections_per_source:
            return "source-limit"
        return None

    def source(self, host: str, inbound: bool) -> _Source:
        src = self.sources.get(host)
        if src is None:
            src = self.sources[host] = _Source()
        if inbound:
            src.connections += 1
        return src

    def forget(self, conn: TcpConnection) -> None:
        assert conn.peer is not None
        for key in (conn.key, conn.alias):
            if key is not None and self.connections.get(key) is conn:
                del self.connections[key]
        src = self.sources.get(conn.peer.host)
        if src is not None:
            if not conn.outbound:
                src.connections -= 1
            if src.connections <= 0 and src.buffered <= 0:
                del self.sources[conn.peer.host]

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
        if len(self.connections) + len(self._pending) >= self.limits.max_connections:
            self.on_close("connection-limit")
            return False
        self._pending[key] = [data]
        task = asyncio.get_running_loop().create_task(self._connect(key))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    def close_idle(self, now: float) -> int:
        """Close connections idle for longer than IDLE_TIMEOUT; returns how many."""
        idle = [c for c in self.connections.values() if now - c.last_active > IDLE_TIMEOUT]
        for conn in idle:
            transport = conn.transport
            if transport is None:
                continue
            if transport.get_write_buffer_size() or transport.is_closing():
                conn.cut_off("idle-unread")  # close() would wait for a reader forever
            else:
                transport.close()
        return len(idle)

    async def _connect(self, key: Key) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(
                    lambda: TcpConnection(self, True),
                    key[0],
                    key[1],
                    ssl=self.client_tls,
                    server_hostname=key[0] if self.client_tls is not None else None,
                ),
                timeout=5.0,
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
        queued = self._pending.pop(key, [])
        if conn.peer is None or conn.transport is None or conn.transport.is_closing():
            for _ in queued:  # lost before we got it: the messages go with it
                self.on_error()
            return
        if self.connections.setdefault(key, conn) is conn and key != conn.key:
            conn.alias = key
        for data in queued:
            conn.write(data)

    def close(self) -> None:
        for conn in list(self.connections.values()):
            if conn.transport is not None:
                conn.transport.close()
