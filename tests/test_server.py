"""The worker on real loopback sockets: UDP, TCP, admin HTTP, health checks."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from proxy.config import Config, parse_config
from proxy.server import StartupError, Worker
from proxy.sip import SipRequest, SipResponse, parse_datagram
from tests.sipmsg import request, response


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = int(u.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port")


class Peer(asyncio.DatagramProtocol):
    """A UDP endpoint that queues what it receives; optionally answers OPTIONS."""

    def __init__(self, answer_options: bool = False) -> None:
        self.queue: asyncio.Queue[tuple[bytes, Any]] = asyncio.Queue()
        self.answer_options = answer_options
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        msg = parse_datagram(data)
        if self.answer_options and isinstance(msg, SipRequest) and msg.method == "OPTIONS":
            vias = tuple(h[2] for h in msg.headers if h[0] == "via")
            assert self.transport is not None
            self.transport.sendto(
                response(200, vias=vias, method="OPTIONS", call_id=msg.call_id).replace(
                    b"CSeq: 101", f"CSeq: {msg.cseq}".encode()
                ),
                addr,
            )
            return
        self.queue.put_nowait((data, addr))

    async def get(self, timeout: float = 3.0) -> tuple[bytes, Any]:
        return await asyncio.wait_for(self.queue.get(), timeout)


def loopback_config(
    tmp_path: Path, sip_port: int, admin_port: int, switch_port: int, token: str, **more: Any
) -> Config:
    """A worker on 127.0.0.1 with its admin API, a subscriber store under
    ``tmp_path`` and every 127/8 source a declared peer; ``more`` adds sections."""
    return parse_config({
        "sip": {"host": "127.0.0.1", "port": sip_port},
        "switches": [{"name": "sw", "host": "127.0.0.1", "port": switch_port}],
        "routing": {"health_checks": False},
        "admin": {"host": "127.0.0.1", "port": admin_port, "token": token},
        "log": {"verdict_log": ""},
        "subscribers": {"data_dir": str(tmp_path / "data")},
        "peers": [{"name": "loopback-trunk", "addresses": ["127.0.0.0/8"]}],
        **more,
    })  # fmt: skip


async def open_peer(port: int = 0, answer_options: bool = False) -> tuple[Peer, int]:
    loop = asyncio.get_running_loop()
    transport, peer = await loop.create_datagram_endpoint(
        lambda: Peer(answer_options), local_addr=("127.0.0.1", port)
    )
    return peer, int(transport.get_extra_info("sockname")[1])


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    switch, switch_port = await open_peer()
    sip_port, admin_port = free_port(), free_port()
    cfg = parse_config(
        {
            "sip": {"host": "127.0.0.1", "port": sip_port, "record_route": True},
            "switches": [{"name": "sw", "host": "127.0.0.1", "port": switch_port}],
            "routing": {"health_checks": False},
            "admin": {"host": "127.0.0.1", "port": admin_port},
            "log": {"verdict_log": str(tmp_path / "verdicts.jsonl")},
            "screening": {"block": ["+12125550100"]},
        }
    )
    worker = Worker(cfg)
    await worker.start()
    yield {
        "worker": worker,
        "switch": switch,
        "sip": sip_port,
        "admin": admin_port,
        "tmp": tmp_path,
    }
    await worker.stop()
    assert switch.transport is not None
    switch.transport.close()


async def log_lines(path: Path) -> list[str]:
    """The verdict log is written by a background thread: wait for it."""
    for _ in range(100):
        lines = path.read_text().splitlines() if path.exists() else []
        if lines:
            return lines
        await asyncio.sleep(0.02)
    raise AssertionError(f"nothing written to {path}")


async def http_get(port: int, path: str, method: str = "GET") -> tuple[int, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode()


async def test_udp_call_is_forwarded_and_responses_relayed(setup: dict[str, Any]) -> None:
    caller, caller_port = await open_peer()
    assert caller.transport is not None
    invite = request(
        ruri=f"sip:+13125550187@127.0.0.1:{setup['sip']}", via_host=f"127.0.0.1:{caller_port}"
    )
    caller.transport.sendto(invite, ("127.0.0.1", setup["sip"]))
    data, proxy_addr = await setup["switch"].get()
    fwd = parse_datagram(data)
    assert isinstance(fwd, SipRequest) and fwd.vias[0].port == setup["sip"]
    assert fwd.header("record-route") == f"<sip:127.0.0.1:{setup['sip']};lr>"
    vias = tuple(h[2] for h in fwd.headers if h[0] == "via")
    setup["switch"].transport.sendto(response(180, "Ringing", vias=vias), proxy_addr)
    data, _ = await caller.get()
    relayed = parse_datagram(data)
    assert isinstance(relayed, SipResponse) and relayed.status == 180 and len(relayed.vias) == 1
    caller.transport.close()
    line = json.loads((await log_lines(setup["tmp"] / "verdicts.jsonl"))[0])
    assert (
        line["action"] == "pass"
        and line["caller"] == "+12125550142"
        and line["callee"] == "+13125550187"
    )


async def test_blocked_call_gets_603_and_is_logged(setup: dict[str, Any]) -> None:
    caller, caller_port = await open_peer()
    assert caller.transport is not None
    invite = request(
        caller="+12125550100",
        ruri=f"sip:+13125550187@127.0.0.1:{setup['sip']}",
        via_host=f"127.0.0.1:{caller_port}",
        call_id="blocked-1",
    )
    caller.transport.sendto(invite, ("127.0.0.1", setup["sip"]))
    data, _ = await caller.get()
    assert data.startswith(b"SIP/2.0 603 Network Blocked\r\n")
    await asyncio.sleep(0.05)
    assert setup["switch"].queue.empty()
    record = json.loads((await log_lines(setup["tmp"] / "verdicts.jsonl"))[-1])
    assert (
        record["action"] == "block"
        and record["call_id"] == "blocked-1"
        and record["reasons"] == ["blocklist"]
    )
    assert {"ts", "caller", "callee", "source", "score"} <= record.keys()
    caller.transport.close()


async def test_tcp_stream_is_framed_and_answered_on_the_connection(setup: dict[str, Any]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", setup["sip"])
    options = request("OPTIONS", f"sip:127.0.0.1:{setup['sip']}", transport="TCP", call_id="o1")
    invite = request(
        ruri=f"sip:+13125550187@127.0.0.1:{setup['sip']}", transport="TCP", call_id="i1"
    )
    writer.write(b"\r\n\r\n" + options + invite[:40])
    assert await asyncio.wait_for(reader.readexactly(2), 3) == b"\r\n"  # keep-alive pong
    writer.write(invite[40:])
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3)
    assert head.startswith(b"SIP/2.0 200 OK") and b"Call-ID: o1" in head
    data, proxy_addr = await setup["switch"].get()
    fwd = parse_datagram(data)
    assert isinstance(fwd, SipRequest) and fwd.call_id == "i1"
    assert fwd.vias[1].params.get("rport") is not None  # so the answer finds the connection
    vias = tuple(h[2] for h in fwd.headers if h[0] == "via")
    setup["switch"].transport.sendto(response(200, vias=vias, call_id="i1"), proxy_addr)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3)
    assert head.startswith(b"SIP/2.0 200 OK") and b"Call-ID: i1" in head
    writer.close()


async def test_admin_endpoints(setup: dict[str, Any]) -> None:
    status, body = await http_get(setup["admin"], "/healthz")
    assert status == 200 and json.loads(body)["switches"] == {"sw": True}
    status, _ = await http_get(setup["admin"], "/readyz")
    assert status == 200
    status, body = await http_get(setup["admin"], "/metrics")
    assert status == 200 and 'rs_switch_up{switch="sw"} 1.0' in body
    assert (await http_get(setup["admin"], "/nope"))[0] == 404
    assert (await http_get(setup["admin"], "/metrics", "POST"))[0] == 405


async def test_metrics_count_what_happened(setup: dict[str, Any]) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.sendto(b"garbage\r\n\r\n", ("127.0.0.1", setup["sip"]))
    sock.sendto(
        request("OPTIONS", f"sip:127.0.0.1:{setup['sip']}", via_host=f"127.0.0.1:{port}"),
        ("127.0.0.1", setup["sip"]),
    )
    sock.settimeout(3)
    await asyncio.get_running_loop().run_in_executor(None, sock.recv, 65535)
    sock.close()
    _, body = await http_get(setup["admin"], "/metrics")
    assert 'rs_sip_local_replies_total{status="200"} 1.0' in body
    assert 'rs_sip_dropped_total{reason="malformed"} 1.0' in body
    assert 'rs_sip_parse_errors_total{status="400"} 1.0' in body


async def test_health_checks_mark_switches_and_gate_new_calls() -> None:
    alive, alive_port = await open_peer(answer_options=True)
    dead_port = free_port()  # nothing listens here
    sip_port, admin_port = free_port(), free_port()
    cfg = parse_config(
        {
            "sip": {"host": "127.0.0.1", "port": sip_port},
            "switches": [
                {"name": "alive", "host": "127.0.0.1", "port": alive_port},
                {"name": "dead", "host": "127.0.0.1", "port": dead_port},
            ],
            "routing": {"ping_interval": 0.1, "ping_timeout": 0.1, "failures_before_down": 2},
            "admin": {"host": "127.0.0.1", "port": admin_port},
            "log": {"verdict_log": ""},
        }
    )
    worker = Worker(cfg)
    await worker.start()
    try:
        for _ in range(100):
            if not worker.pool.states[1].up:
                break
            await asyncio.sleep(0.05)
        assert worker.pool.states[0].up and not worker.pool.states[1].up
        _, body = await http_get(admin_port, "/healthz")
        assert json.loads(body)["switches"] == {"alive": True, "dead": False}
        worker.pool.states[0].up = False
        worker.pool.states[0].successes = -1000  # keep it down for this check
        assert (await http_get(admin_port, "/readyz"))[0] == 503
    finally:
        await worker.stop()
        assert alive.transport is not None
        alive.transport.close()


async def test_port_in_use_is_a_clean_startup_error() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        worker = Worker(
            parse_config(
                {"sip": {"port": port}, "admin": {"enabled": False}, "log": {"verdict_log": ""}}
            )
        )
        with pytest.raises(StartupError, match=f"cannot listen for udp on 127.0.0.1:{port}"):
            await worker.start()
        await worker.stop()


async def test_idle_tcp_connections_are_closed(setup: dict[str, Any]) -> None:
    import time

    reader, writer = await asyncio.open_connection("127.0.0.1", setup["sip"])
    writer.write(b"\r\n\r\n")
    assert await asyncio.wait_for(reader.readexactly(2), 3) == b"\r\n"
    tcp = setup["worker"].tcp
    assert tcp.close_idle(time.monotonic()) == 0  # just active
    assert tcp.close_idle(time.monotonic() + 3600) == 1
    assert await asyncio.wait_for(reader.read(), 3) == b""  # closed by the proxy
    writer.close()
