"""[sip.limits] on the TCP edge of a live worker on loopback: connections per
source and in total, unfinished bytes per source and in total, the deadline
to finish a message (slowloris), and a peer that never reads its answers.

Sources are told apart by their loopback address (127.0.0.2, 127.0.0.3...)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from proxy.config import parse_config
from proxy.server import Worker
from proxy.transport.tcp import WRITE_HIGH, WRITE_LIMIT
from tests.sipmsg import request
from tests.test_server import free_port

Start = Callable[..., Awaitable[Worker]]
Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    workers: list[Worker] = []

    async def run(**limits: Any) -> Worker:
        cfg = parse_config(
            {
                "sip": {"host": "127.0.0.1", "port": free_port(), "limits": limits},
                "switches": [{"name": "sw", "host": "127.0.0.1", "port": free_port()}],
                "routing": {"health_checks": False},
                "admin": {"enabled": False},
                "log": {"verdict_log": ""},
                "subscribers": {"enabled": False},
            }
        )
        worker = Worker(cfg)
        await worker.start()
        workers.append(worker)
        return worker

    yield run
    for worker in workers:
        await worker.stop()


async def connect(worker: Worker, source: str = "127.0.0.2") -> Stream:
    return await asyncio.open_connection("127.0.0.1", worker.cfg.sip.port, local_addr=(source, 0))


async def alive(stream: Stream) -> bool:
    """A CRLFCRLF ping gets its CRLF pong: the proxy still serves the connection."""
    reader, writer = stream
    try:
        writer.write(b"\r\n\r\n")
        return await asyncio.wait_for(reader.readexactly(2), 3) == b"\r\n"
    except (ConnectionError, asyncio.IncompleteReadError):
        return False


async def closed_by_proxy(stream: Stream, within: float = 3.0) -> bool:
    reader, _ = stream
    try:
        return await asyncio.wait_for(reader.read(4096), within) == b""
    except ConnectionError:
        return True  # aborted: RST
    except TimeoutError:
        return False


def closed_count(worker: Worker, reason: str) -> float:
    value = worker.metrics.registry.get_sample_value("rs_tcp_closed_total", {"reason": reason})
    return value or 0.0


async def until(check: Callable[[], bool], what: str, timeout: float = 3.0) -> None:
    for _ in range(int(timeout / 0.01)):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def drained(worker: Worker) -> None:
    """Every connection gone leaves no count and no booked byte behind."""
    tcp = worker.tcp
    assert tcp is not None
    await until(lambda: not tcp.connections, "all connections to close")
    assert tcp.buffered == 0 and not tcp.sources


def close_all(streams: list[Stream]) -> None:
    for _, writer in streams:
        writer.close()


async def test_connections_per_source_are_capped(start: Start) -> None:
    worker = await start(max_connections_per_source=3)
    mine = [await connect(worker) for _ in range(3)]
    extra = [await connect(worker) for _ in range(2)]
    for stream in extra:
        assert await closed_by_proxy(stream)
    for stream in mine:
        assert await alive(stream)
    other = await connect(worker, "127.0.0.3")  # another source is not affected
    assert await alive(other)
    assert closed_count(worker, "source-limit") == 2
    close_all([*mine, *extra, other])
    await drained(worker)
    # the count follows closes: the source may connect again
    again = await connect(worker)
    assert await alive(again)
    close_all([again])


async def test_connections_in_total_are_capped(start: Start) -> None:
    worker = await start(max_connections=4)
    mine = [await connect(worker, f"127.0.0.{i}") for i in range(2, 6)]
    late = await connect(worker, "127.0.0.9")
    assert await closed_by_proxy(late)
    for stream in mine:
        assert await alive(stream)
    assert closed_count(worker, "connection-limit") == 1
    close_all([*mine, late])
    await drained(worker)


def partial_invite(size: int, call_id: str = "slow-1") -> bytes:
    """The start of an INVITE whose header section is ``size`` bytes so far."""
    data = request(call_id=call_id, transport="TCP").split(b"Content-Length")[0]
    while len(data) < size:  # header lines of at most 1000 bytes
        pad = min(1000, size - len(data)) - 9
        data += b"X-Pad: " + b"a" * max(pad, 0) + b"\r\n"
    assert len(data) == size
    return data


async def test_unfinished_bytes_in_total_are_capped(start: Start) -> None:
    worker = await start(max_buffered_bytes=65536, max_buffered_bytes_per_source=65536)
    tcp = worker.tcp
    assert tcp is not None
    first, second = await connect(worker, "127.0.0.2"), await connect(worker, "127.0.0.3")
    first[1].write(partial_invite(40000))
    await until(lambda: tcp.buffered == 40000, "the first 40000 bytes to be booked")
    second[1].write(partial_invite(30000, "slow-2"))
    assert await closed_by_proxy(second)  # 70000 > 65536: the one going past is cut off
    assert closed_count(worker, "buffer-limit") == 1
    assert tcp.buffered == 40000
    first[1].write(b"Content-Length: 0\r\n\r\n")  # the first still completes its message
    await until(lambda: tcp.buffered == 0, "the first message to complete")
    assert await alive(first)
    close_all([first, second])
    await drained(worker)


async def test_unfinished_bytes_per_source_are_capped(start: Start) -> None:
    worker = await start(max_buffered_bytes_per_source=8192)
    tcp = worker.tcp
    assert tcp is not None
    a, b, c = [await connect(worker, s) for s in ("127.0.0.2", "127.0.0.2", "127.0.0.3")]
    a[1].write(partial_invite(5000))
    await until(lambda: tcp.buffered == 5000, "5000 bytes booked")
    b[1].write(partial_invite(5000, "slow-2"))  # same source: 10000 > 8192
    assert await closed_by_proxy(b)
    c[1].write(partial_invite(5000, "slow-3"))  # another source: its own allowance
    await until(lambda: tcp.buffered == 10000, "the other source's bytes booked")
    assert closed_count(worker, "source-limit") == 0
    assert closed_count(worker, "source-buffer-limit") == 1
    close_all([a, b, c])
    await drained(worker)


async def test_slowloris_is_cut_off_at_the_message_deadline(start: Start) -> None:
    worker = await start(message_timeout=0.5)
    loop = asyncio.get_running_loop()
    slow, idle, quick = [await connect(worker) for _ in range(3)]
    began = loop.time()
    data = partial_invite(2000)
    for i in range(0, 400, 20):  # a trickle that is never finished
        slow[1].write(data[i : i + 20])
        await asyncio.sleep(0.05)
        if slow[0].at_eof():
            break
    assert await closed_by_proxy(slow)
    assert 0.45 <= loop.time() - began < 2.5
    assert closed_count(worker, "message-timeout") == 1
    # nothing started, or only CRLF keep-alive bytes, is not a message
    idle[1].write(b"\r\n")
    whole = request("OPTIONS", f"sip:127.0.0.1:{worker.cfg.sip.port}", transport="TCP")
    for i in range(0, len(whole), 40):  # slow, but each message within its deadline
        quick[1].write(whole[i : i + 40])
        await asyncio.sleep(0.02)
    head = await asyncio.wait_for(quick[0].readuntil(b"\r\n\r\n"), 3)
    assert head.startswith(b"SIP/2.0 200 ")
    await asyncio.sleep(0.7)
    assert await alive(idle) and await alive(quick)
    assert closed_count(worker, "message-timeout") == 1
    close_all([slow, idle, quick])
    await drained(worker)


async def test_a_peer_that_never_reads_stops_being_read(start: Start) -> None:
    worker = await start()
    tcp = worker.tcp
    assert tcp is not None
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fill up quickly
    sock.bind(("127.0.0.2", 0))
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", worker.cfg.sip.port))
    options = request("OPTIONS", f"sip:127.0.0.1:{worker.cfg.sip.port}", transport="TCP")
    sent = 0
    try:
        # Each OPTIONS earns a 200; we read none. Without back-pressure the
        # proxy would buffer answers for as long as we keep asking.
        deadline = loop.time() + 20
        for _ in range(20000):
            try:
                sent += sock.send(options * 16)
                continue
            except BlockingIOError:
                pass
            # Blocked: either the proxy stopped reading us, or (on a busy
            # machine) it has not caught up yet; only the first ends the test.
            conn = next(iter(tcp.connections.values()), None)
            transport = conn.transport if conn is not None else None
            pending = transport.get_write_buffer_size() if transport is not None else 0
            if pending >= WRITE_HIGH or loop.time() > deadline:
                break
            await asyncio.sleep(0.05)
        conn = next(iter(tcp.connections.values()))
        assert conn.transport is not None
        pending = conn.transport.get_write_buffer_size()
        # what one read's worth of requests (at most 256 KiB) earned past WRITE_HIGH
        assert WRITE_HIGH <= pending < WRITE_LIMIT, pending
        assert sent < 20000 * 16 * len(options)  # we were stopped long before the end
    finally:
        sock.close()
    await drained(worker)
