"""Hostile input for the survival test (loadtest/survival.py): UDP datagrams
(mutated torture and corpus messages, random bytes, oversized headers, huge
Content-Length, many Vias, valid INVITEs from random callers, stray
responses) and TCP abuse (slowloris, connection floods past the caps,
oversized headers, garbage streams, peers that never read).

Every address in what we send is on 127.0.0.0/8: the proxy relays responses
down their Via path, and this machine may have a route off it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import socket
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]
SHARED = Path(__file__).resolve().parents[1].parent / "shared"
IPV4 = re.compile(rb"(?<![\d.])(\d{1,3})\.\d{1,3}\.\d{1,3}\.\d{1,3}(?![\d.])")
IPV6 = re.compile(rb"\[[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*\]")


def loopback_only(data: bytes) -> bytes:
    """Every IPv4 address outside 127/8 becomes 127.0.0.1; IPv6 becomes [::1]
    (unreachable from the proxy's IPv4 socket, so nothing leaves)."""
    if b"." in data:
        data = IPV4.sub(lambda m: m.group(0) if m.group(1) == b"127" else b"127.0.0.1", data)
    if b"[" in data:
        data = IPV6.sub(b"[::1]", data)
    return data


def message(
    method: str,
    proxy_port: int,
    *,
    caller: str = "+13125550123",
    callee: str = "+16465550199",
    call_id: str = "c@127.0.0.1",
    via: str = "127.0.0.1:5060",
    branch: str = "z9hG4bK-1",
    cseq: int = 1,
    to_tag: str = "",
    extra: tuple[str, ...] = (),
    transport: str = "UDP",
) -> bytes:
    to = f"<sip:{callee}@127.0.0.1;user=phone>" + (f";tag={to_tag}" if to_tag else "")
    lines = [
        f"{method} sip:{callee}@127.0.0.1:{proxy_port};user=phone SIP/2.0",
        f"Via: SIP/2.0/{transport} {via};branch={branch};rport",
        "Max-Forwards: 70",
        f"From: <sip:{caller}@127.0.0.1;user=phone>;tag=f{cseq}",
        f"To: {to}",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {'INVITE' if method == 'ACK' else method}",
        f"Contact: <sip:uac@{via}>",
        *extra,
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def corpus() -> list[bytes]:
    """The torture and carrier corpus messages (read from ../shared when it
    is there), addresses moved to loopback, and a few of our own."""
    out = [message("INVITE", 5060), message("OPTIONS", 5060), message("BYE", 5060, to_tag="t")]
    for name in ("sip-torture", "sip-corpus"):
        folder = SHARED / name
        if folder.is_dir():
            out.extend(loopback_only(p.read_bytes()) for p in sorted(folder.glob("*.sip")))
    return out


class Datagrams:
    """An endless supply of hostile datagrams, each freshly made."""

    KINDS = (
        ("mutated", 45),
        ("random", 12),
        ("oversized-header", 5),
        ("huge-content-length", 5),
        ("many-vias", 5),
        ("valid-invite", 15),
        ("stray-response", 8),
        ("keepalive", 5),
    )

    def __init__(self, proxy_port: int, seed: int = 1, kinds: list[str] | None = None) -> None:
        self.port = proxy_port
        self.rng = random.Random(seed)
        self.base = corpus()
        chosen = [(k, w) for k, w in self.KINDS if kinds is None or k in kinds]
        self.kinds = [k for k, _ in chosen]
        self.weights = [w for _, w in chosen]
        self.made: Counter[str] = Counter()
        self.serial = 0

    def next(self) -> bytes:
        kind = self.rng.choices(self.kinds, self.weights)[0]
        self.made[kind] += 1
        self.serial += 1
        data: bytes = getattr(self, "_" + kind.replace("-", "_"))()
        return loopback_only(data[:65000])

    def _mutated(self) -> bytes:
        rng = self.rng
        raw = bytearray(rng.choice(self.base))
        for _ in range(rng.randint(1, 8)):
            pos = rng.randrange(len(raw) + 1)
            op = rng.randrange(5)
            if op == 0 and raw:
                raw[min(pos, len(raw) - 1)] = rng.choice(b'\x00\r\n \t:;,<>"@=%\\/\xff0')
            elif op == 1:
                raw[pos:pos] = rng.randbytes(rng.randint(1, 16))
            elif op == 2:
                del raw[pos : pos + rng.randint(1, 32)]
            elif op == 3:
                raw[pos:pos] = raw[pos : pos + rng.randint(1, 64)]
            else:
                del raw[pos:]
        return bytes(raw)

    def _random(self) -> bytes:
        size = self.rng.choice((8, 64, 512, 1400, 9000))
        return os.urandom(self.rng.randint(1, size))

    def _oversized_header(self) -> bytes:
        pad = "x" * self.rng.choice((9000, 30000, 64000))
        return message("INVITE", self.port, call_id=f"big{self.serial}", extra=(f"X-Big: {pad}",))

    def _huge_content_length(self) -> bytes:
        length = self.rng.choice(("99999999", "4294967296", "65536", "-1", "1" * 40))
        data = message("INVITE", self.port, call_id=f"cl{self.serial}")
        return data.replace(b"Content-Length: 0", f"Content-Length: {length}".encode())

    def _many_vias(self) -> bytes:
        n = self.rng.choice((40, 300, 2000))
        vias = [f"SIP/2.0/UDP 127.0.0.{i % 250 + 1}:5060;branch=z9hG4bK{i}" for i in range(n)]
        if self.rng.random() < 0.5:
            extra = tuple(f"Via: {v}" for v in vias)
        else:
            extra = ("Via: " + ", ".join(vias),)
        return message("INVITE", self.port, call_id=f"via{self.serial}", extra=extra)

    def _valid_invite(self) -> bytes:
        rng = self.rng
        caller = f"+1{rng.randint(201, 989)}{rng.randint(200, 999)}{rng.randint(0, 9999):04d}"
        return message(
            rng.choice(("INVITE", "INVITE", "MESSAGE", "OPTIONS", "CANCEL")),
            self.port,
            caller=caller,
            callee=f"+1646555{rng.randint(0, 9999):04d}",
            call_id=f"junk-{self.serial}@127.0.0.9",
            branch=f"z9hG4bK-j{self.serial}",
            via="127.0.0.9:5999",
        )

    def _stray_response(self) -> bytes:
        status = self.rng.choice((100, 180, 200, 404, 487, 503, 699))
        hops = ", ".join(f"SIP/2.0/UDP 127.0.0.9:{5000 + i};branch=z9hG4bKs{i}" for i in range(3))
        return (
            f"SIP/2.0 {status} X\r\nVia: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bKzz\r\n"
            f"Via: {hops}\r\nFrom: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:b@127.0.0.1>;tag=2\r\n"
            f"Call-ID: stray{self.serial}\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
        ).encode()

    def _keepalive(self) -> bytes:
        return self.rng.choice((b"\r\n\r\n", b"\r\n", b"\x00", b"jaK", b""))


def blast(
    port: int,
    count: int,
    rate: float,
    seconds: float,
    sources: int,
    seed: int,
    kinds: list[str] | None = None,
) -> dict[str, object]:
    """Send ``count`` datagrams at ``rate`` per second (at most ``seconds``)
    from ``sources`` loopback addresses (127.0.2.x: the per-IP flood limit
    must not drop them before they reach the parser). Runs in a child
    process; returns what it sent."""
    gen = Datagrams(port, seed, kinds)
    socks = []
    for i in range(sources):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((f"127.0.2.{i + 1}", 0))
        s.setblocking(False)
        socks.append(s)
    sent = blocked = 0
    start = time.monotonic()
    deadline = start + seconds
    batch = max(1, int(rate / 200))  # every 5 ms
    try:
        while sent + blocked < count and time.monotonic() < deadline:
            for _ in range(min(batch, count - sent - blocked)):
                data = gen.next()
                try:
                    socks[(sent + blocked) % sources].sendto(data, ("127.0.0.1", port))
                    sent += 1
                except OSError:  # EAGAIN, EMSGSIZE: counted, not retried
                    blocked += 1
            ahead = start + (sent + blocked) / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
    finally:
        for s in socks:
            s.close()
    return {
        "sent": sent,
        "send_errors": blocked,
        "seconds": round(time.monotonic() - start, 2),
        "kinds": dict(gen.made),
    }


# -- TCP abuse ---------------------------------------------------------------


class TcpAbuse:
    """One kind of abuse per call; each bounded in time. ``outcomes`` counts
    how the proxy ended them: closed (EOF), reset, refused or survived."""

    KINDS = (
        "slowloris",
        "flood",
        "oversized",
        "garbage",
        "huge-length",
        "many-vias",
        "non-reader",
    )

    def __init__(self, port: int, per_source: int, timeout: float, seed: int = 2) -> None:
        self.port = port
        self.per_source = per_source
        self.timeout = timeout  # the proxy's message_timeout
        self.rng = random.Random(seed)
        self.started: Counter[str] = Counter()
        self.outcomes: Counter[str] = Counter()
        self.connections = 0

    def source(self) -> str:
        return f"127.0.3.{self.rng.randint(1, 250)}"

    async def run(self, kind: str) -> None:
        self.started[kind] += 1
        job: Callable[[], object] = getattr(self, "_" + kind.replace("-", "_"))
        try:
            await asyncio.wait_for(job(), self.timeout + 10.0)  # type: ignore[arg-type]
        except TimeoutError:
            self.outcomes[f"{kind}:outlived"] += 1
        except OSError as exc:
            self.outcomes[f"{kind}:{type(exc).__name__}"] += 1

    async def _open(self, source: str | None = None) -> Stream:
        self.connections += 1
        return await asyncio.open_connection(
            "127.0.0.1", self.port, local_addr=(source or self.source(), 0)
        )

    async def _ended(self, kind: str, reader: asyncio.StreamReader, within: float) -> None:
        """Wait for the proxy to end the connection; count how."""
        try:
            while await asyncio.wait_for(reader.read(65536), within):
                pass
            self.outcomes[f"{kind}:closed"] += 1
        except ConnectionError:
            self.outcomes[f"{kind}:reset"] += 1
        except TimeoutError:
            self.outcomes[f"{kind}:still-open"] += 1

    async def _slowloris(self) -> None:
        reader, writer = await self._open()
        data = message("INVITE", self.port, call_id=f"slow{self.connections}", transport="TCP")
        try:
            for i in range(0, len(data) - 10, 4):  # never finished
                writer.write(data[i : i + 4])
                await asyncio.sleep(self.timeout / 8)
                if reader.at_eof() or writer.is_closing():
                    break
            await self._ended("slowloris", reader, self.timeout + 2.0)
        finally:
            writer.close()

    async def _flood(self) -> None:
        """More connections from one source than it may hold."""
        source = self.source()
        streams = []
        for _ in range(self.per_source + 16):
            with contextlib.suppress(OSError):
                streams.append(await self._open(source))
        await asyncio.sleep(0.2)
        refused = 0
        for reader, _ in streams:
            try:
                if reader.at_eof() or await asyncio.wait_for(reader.read(1), 0.01) == b"":
                    refused += 1
            except ConnectionError:
                refused += 1
            except TimeoutError:
                pass
        self.outcomes["flood:refused-connections"] += refused
        self.outcomes["flood:held-connections"] += len(streams) - refused
        for _, writer in streams:
            writer.close()

    async def _oversized(self) -> None:
        reader, writer = await self._open()
        try:
            writer.write(b"INVITE sip:a@127.0.0.1 SIP/2.0\r\nX-Big: " + b"x" * 70000)
            await self._ended("oversized", reader, 5.0)
        finally:
            writer.close()

    async def _garbage(self) -> None:
        reader, writer = await self._open()
        try:
            writer.write(os.urandom(self.rng.randint(1, 20000)))
            await self._ended("garbage", reader, self.timeout + 2.0)
        finally:
            writer.close()

    async def _huge_length(self) -> None:
        reader, writer = await self._open()
        data = message("INVITE", self.port, call_id=f"hl{self.connections}", transport="TCP")
        try:
            writer.write(data.replace(b"Content-Length: 0", b"Content-Length: 99999999"))
            await self._ended("huge-length", reader, 5.0)
        finally:
            writer.close()

    async def _many_vias(self) -> None:
        """Well-framed messages with hundreds of Vias, pipelined, then EOF."""
        reader, writer = await self._open()
        vias = tuple(f"Via: SIP/2.0/TCP 127.0.0.8:{5000 + i};branch=z9hG4bK{i}" for i in range(300))
        data = message("OPTIONS", self.port, extra=vias, transport="TCP")
        try:
            writer.write(data * 8)
            writer.write_eof()
            await self._ended("many-vias", reader, 5.0)
        finally:
            writer.close()

    async def _non_reader(self) -> None:
        """Asks for answers it never reads (enough to fill the proxy's write
        buffer past its high-water mark), then goes away."""
        _, writer = await self._open()
        options = message("OPTIONS", self.port, transport="TCP")
        try:
            for _ in range(8):  # 256 answers: past the 64 KiB high-water mark
                writer.write(options * 32)
                await asyncio.sleep(0.01)
            self.outcomes["non-reader:done"] += 1
        finally:
            writer.transport.abort()
