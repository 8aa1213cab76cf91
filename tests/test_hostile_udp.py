"""Hostile datagrams against a live worker on uvloop, as `serve` runs it."""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest
import uvloop

from proxy.config import parse_config
from proxy.server import Worker
from tests.sipmsg import request, response
from tests.test_server import free_port


def test_a_next_hop_of_the_other_family_is_a_send_error(caplog: pytest.LogCaptureFixture) -> None:
    """uvloop raises ValueError sending to an IPv6 address from an IPv4
    socket; a response whose next Via is IPv6 must be counted as a send
    error, not raise out of the edge (a logged traceback per datagram)."""

    async def scenario() -> tuple[bytes, float]:
        port = free_port()
        cfg = parse_config(
            {
                "sip": {"host": "127.0.0.1", "port": port},
                "switches": [{"name": "sw", "host": "127.0.0.1", "port": free_port()}],
                "routing": {"health_checks": False},
                "admin": {"enabled": False},
                "log": {"verdict_log": ""},
                "subscribers": {"enabled": False},
            }
        )
        worker = Worker(cfg)
        await worker.start()
        loop = asyncio.get_running_loop()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            sock.setblocking(False)
            ours = f"SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKours"
            for hop in ("[2001:db8::1]:5060", "[::1]:5060"):
                vias = (ours, f"SIP/2.0/UDP {hop};branch=z9hG4bKx")
                sock.sendto(response(180, vias=vias), ("127.0.0.1", port))
            me = sock.getsockname()[1]
            sock.sendto(
                request("OPTIONS", f"sip:127.0.0.1:{port}", via_host=f"127.0.0.1:{me}"),
                ("127.0.0.1", port),
            )
            answer = await asyncio.wait_for(loop.sock_recv(sock, 4096), 3)
        errors = worker.metrics.registry.get_sample_value(
            "rs_sip_send_errors_total", {"transport": "udp"}
        )
        await worker.stop()
        return answer, errors or 0.0

    with caplog.at_level(logging.ERROR):
        answer, errors = uvloop.run(scenario())
    assert answer.startswith(b"SIP/2.0 200 ")
    assert errors == 2
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
