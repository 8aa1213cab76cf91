"""Graceful overload: when new calls are shed, and what still flows then."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import pytest

from proxy.events import Address, Dropped, Received, Send, Shed
from proxy.overload import DECREASE, INCREASE, OverloadGuard, UdpQueueReader, parse_udp_line
from tests.conftest import make_config, make_core
from tests.sipmsg import request
from tests.test_workers import Proxy, drain, gather, ready, udp_socket, wait_for

PEER = Address("198.51.100.10", 5060, "udp")


def test_pressure_shrinks_the_admitted_share_and_calm_grows_it_back() -> None:
    guard = OverloadGuard(lag_limit=0.25, backlog_limit=100_000)
    assert guard.probe(0.2, 90_000) == 1.0  # under both limits
    assert guard.probe(0.3, 0) == pytest.approx(DECREASE)
    assert guard.overloaded and guard.cause == "loop-lag"
    assert guard.probe(0.0, 110_000) == pytest.approx(DECREASE), "pressure falling: hold"
    assert guard.probe(0.0, 160_000) == pytest.approx(DECREASE**2)
    assert guard.cause == "receive-backlog"
    held = guard.admit
    assert guard.probe(0.2, 60_000) == held, "between half the limits and the limits: hold"
    for _ in range(100):
        guard.probe(0.01, 10_000)
    assert guard.admit == 1.0 and not guard.overloaded and guard.cause == ""


def test_recovery_is_gradual() -> None:
    guard = OverloadGuard(lag_limit=0.25, backlog_limit=100_000)
    for _ in range(50):
        guard.probe(1.0, 0)
    assert guard.admit < 0.001
    steps = 0
    while guard.overloaded:
        guard.probe(0.0, 0)
        steps += 1
    assert steps == pytest.approx(1 / INCREASE, abs=1)


def test_the_core_admits_the_share_evenly() -> None:
    core = make_core(make_config(screening={"psap_numbers": []}))
    core.admit = 0.25
    outcomes = []
    for i in range(12):
        events = core.receive_datagram(request(call_id=f"share-{i}"), PEER, 1.0)
        outcomes.append(any(isinstance(e, Shed) for e in events))
    assert outcomes == [True, True, True, False] * 3
    sos = core.receive_datagram(request(ruri="sip:911@192.0.2.5", call_id="sos"), PEER, 1.0)
    assert not any(isinstance(e, Shed) for e in sos)


def test_zero_limits_never_shed() -> None:
    guard = OverloadGuard(lag_limit=0.0, backlog_limit=0)
    assert guard.probe(10.0, 1 << 30) == 1.0 and not guard.overloaded


def test_proc_net_udp_row() -> None:
    row = (
        "  883: 0100007F:13C4 00000000:0000 07 00000000:00012A00 00:00000000 00000000"
        "     0        0 4162113 2 0000000000000000 17"
    )
    state = parse_udp_line(row)
    assert state.queued_bytes == 0x12A00
    assert state.drops == 17


def test_queue_reader_sees_what_waits_on_a_real_socket() -> None:
    receiver = udp_socket()
    sender = udp_socket()
    try:
        reader = UdpQueueReader(receiver)
        empty = reader.read()
        assert empty is not None and empty.queued_bytes == 0
        for _ in range(5):
            sender.sendto(b"x" * 500, receiver.getsockname())
        full = reader.read()
        assert full is not None and full.queued_bytes >= 5 * 500
        while True:
            try:
                receiver.recv(2048)
            except BlockingIOError:
                break
        after = reader.read()
        assert after is not None and after.queued_bytes == 0
    finally:
        receiver.close()
        sender.close()


@pytest.fixture
def proxy(tmp_path: Path) -> Proxy:
    return Proxy(tmp_path, workers=1)


def test_a_stalled_worker_sheds_new_calls_but_not_emergency_calls_or_byes(
    proxy: Proxy,
) -> None:
    """Freeze the proxy (SIGSTOP) while a burst queues up, as a long stall
    would; once it runs again it is behind: new calls get a quick 503 with
    Retry-After, while a 911 call and a BYE of a call already up go through."""
    burst = 300
    callers = [udp_socket() for _ in range(4)]
    proc = proxy.start()
    try:
        wait_for(lambda: ready(proxy, workers=1), "proxy ready")
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            for i in range(burst):
                sock = callers[i % len(callers)]
                sock.sendto(invite_from(sock, proxy, i), ("127.0.0.1", proxy.sip))
            sos = callers[0]
            sos.sendto(invite_from(sos, proxy, burst, callee="911"), ("127.0.0.1", proxy.sip))
            bye = request(
                "BYE",
                ruri=f"sip:+13125550187@127.0.0.1:{proxy.sip}",
                to_tag="up-1",
                via_host=f"127.0.0.1:{sos.getsockname()[1]}",
                branch="z9hG4bK-bye-1",
                call_id="up-1@test",
                cseq=102,
            )
            sos.sendto(bye, ("127.0.0.1", proxy.sip))
            time.sleep(0.6)  # a stall well past [sip] overload_lag
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        answers = [m for box in gather(callers, 8) for m in box]
        switch = drain(proxy.switch, 1)
    finally:
        for s in callers:
            s.close()
        proxy.stop()

    shed = [m for m in answers if m.startswith(b"SIP/2.0 503 ")]
    forwarded = [m for m in switch if m.startswith(b"INVITE ")]
    assert shed, "nothing was shed"
    assert all(b"\r\nRetry-After: " in m for m in shed)
    passed = [m for m in forwarded if m.startswith(b"INVITE sip:+13125550187@")]
    assert len(shed) + len(passed) == burst, "calls lost"
    assert any(m.startswith(b"INVITE sip:911@") for m in forwarded), "the 911 call was shed"
    assert any(m.startswith(b"BYE ") for m in switch), "the BYE did not go through"


def invite_from(sock: socket.socket, proxy: Proxy, i: int, callee: str = "") -> bytes:
    return request(
        ruri=f"sip:{callee or '+13125550187'}@127.0.0.1:{proxy.sip}",
        caller=f"+1202555{i:04d}",
        via_host=f"127.0.0.1:{sock.getsockname()[1]}",
        branch=f"z9hG4bK-burst-{i}",
        call_id=f"burst-{i}@test",
    )


def test_the_ack_of_a_shed_call_is_absorbed_and_a_2xx_ack_passes() -> None:
    core = make_core(make_config(screening={"psap_numbers": []}))
    core.admit = 0.0
    shed = core.receive_datagram(request(call_id="ack-shed"), PEER, 1.0)
    reply = next(e for e in shed if isinstance(e, Send)).data
    to_tag = reply.split(b"\r\nTo: ")[1].split(b"\r\n")[0].split(b";tag=")[1].decode()
    ack = request("ACK", to_tag=to_tag, call_id="ack-shed")
    assert core.receive_datagram(ack, PEER, 1.0) == [
        Received("request", "ACK"),
        Dropped("ack-absorbed"),
    ]
    core.admit = 1.0
    ack_2xx = request("ACK", to_tag="switch-tag", call_id="up", cseq=101)
    assert any(isinstance(e, Send) for e in core.receive_datagram(ack_2xx, PEER, 1.0))
