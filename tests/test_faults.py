"""Faults injected into a running proxy (issue 9, part 5).

Covered elsewhere, not repeated here: a killed worker is restarted
(tests/test_workers.py::test_a_dead_worker_is_restarted); a tampered
artefact keeps the old one loaded and counts the error
(tests/test_blocklist_reload.py::test_admin_reload_token_and_a_broken_build_keeps_the_old_artefact);
switch selection around a dead switch (tests/test_routing.py). Here: SIGTERM
drains a real process; switches going down under a live worker; truncated
artefacts; a locked store and a full disk under the subscriber API.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from proxy.config import parse_config
from proxy.server import Worker
from proxy.sip import parse_datagram
from tests.sipmsg import request, response
from tests.test_blocklist_reload import X, Y, make_lists, running, version
from tests.test_server import Peer, free_port, http_get, open_peer
from tests.test_subscriber_api import ALICE, CALLER, Live, worker_config

CALLEE = "+16465550199"
CLEAN = "+13125550123"


# -- SIGTERM: a real process drains ------------------------------------------


class Udp:
    """A blocking UDP endpoint on loopback with bounded reads."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])

    def send(self, data: bytes, port: int) -> None:
        self.sock.sendto(data, ("127.0.0.1", port))

    def expect(self, first_line: bytes, timeout: float = 5.0) -> tuple[bytes, int]:
        """The next datagram whose first line starts with ``first_line``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                data, addr = self.sock.recvfrom(65535)
                if data.startswith(first_line):
                    return data, int(addr[1])
        raise AssertionError(f"no {first_line!r} within {timeout} s")


def vias(data: bytes) -> tuple[str, ...]:
    msg = parse_datagram(data)
    assert msg is not None
    return tuple(v for k, _, v in msg.headers if k == "via")


def readyz(admin: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/readyz", timeout=1) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


@contextlib.contextmanager
def serving(tmp_path: Path, drain: float) -> Iterator[tuple[subprocess.Popen[str], int, int, Udp]]:
    """`python -m proxy serve` with a verdict log, a switch socket; yields
    (process, sip port, admin port, switch)."""
    sip, admin, switch = free_port(), free_port(), Udp()
    cfg = tmp_path / "rs.toml"
    cfg.write_text(
        f'[sip]\nhost = "127.0.0.1"\nport = {sip}\ndrain_seconds = {drain}\n'
        f"[admin]\nport = {admin}\n[routing]\nhealth_checks = false\n"
        f'[[switches]]\nhost = "127.0.0.1"\nport = {switch.port}\n'
        f'[log]\nverdict_log = "{tmp_path / "verdicts.jsonl"}"\n'
        '[redress]\nemail = "redress@example.net"\n[screening]\nemergency_numbers = ["911"]\n'
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "proxy", "serve", "--config", str(cfg)],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 15
        while readyz(admin) != 200:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "proxy not ready"
            time.sleep(0.05)
        yield proc, sip, admin, switch
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        switch.sock.close()


def answered_call(caller: Udp, switch: Udp, sip: int, call_id: str) -> None:
    """INVITE through the proxy, answered 200 by the switch."""
    caller.send(
        request(ruri=f"sip:{CALLEE}@127.0.0.1:{sip}", caller=CLEAN, call_id=call_id,
                via_host=f"127.0.0.1:{caller.port}", branch=f"z9hG4bK-{call_id}"),
        sip,
    )  # fmt: skip
    invite, _ = switch.expect(b"INVITE ")
    switch.send(response(200, vias=vias(invite), call_id=call_id), sip)
    caller.expect(b"SIP/2.0 200")


def bye(caller: Udp, switch: Udp, sip: int, call_id: str) -> None:
    """The caller's BYE by the proxy's Record-Route; the switch's 200 back."""
    caller.send(
        request("BYE", ruri=f"sip:{CALLEE}@127.0.0.1:{switch.port}", caller=CLEAN,
                call_id=call_id, to_tag="switch-tag", cseq=102, branch=f"z9hG4bK-bye-{call_id}",
                via_host=f"127.0.0.1:{caller.port}", extra=(f"Route: <sip:127.0.0.1:{sip};lr>",)),
        sip,
    )  # fmt: skip
    got, _ = switch.expect(b"BYE ")
    switch.send(response(200, vias=vias(got), method="BYE", call_id=call_id), sip)
    caller.expect(b"SIP/2.0 200")


def test_sigterm_drains_calls_in_flight_refuses_new_ones_and_flushes(tmp_path: Path) -> None:
    caller = Udp()
    with serving(tmp_path, drain=5) as (proc, sip, admin, switch):
        answered_call(caller, switch, sip, "in-progress")
        proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        deadline = sent + 2
        while readyz(admin) != 503:  # load balancers stop sending at once
            assert time.monotonic() < deadline, "readyz did not turn 503"
            time.sleep(0.02)
        caller.send(request(ruri=f"sip:{CALLEE}@127.0.0.1:{sip}", caller=CLEAN, call_id="new",
                            via_host=f"127.0.0.1:{caller.port}", branch="z9hG4bK-new"), sip)  # fmt: skip
        refused, _ = caller.expect(b"SIP/2.0 ")
        assert refused.startswith(b"SIP/2.0 503 ") and b"\r\nRetry-After: 5\r\n" in refused
        # an emergency call still goes through while draining
        caller.send(request(ruri=f"sip:911@127.0.0.1:{sip}", caller=CLEAN, call_id="sos",
                            via_host=f"127.0.0.1:{caller.port}", branch="z9hG4bK-sos"), sip)  # fmt: skip
        sos, _ = switch.expect(b"INVITE sip:911")
        switch.send(response(486, "Busy Here", vias=vias(sos), call_id="sos"), sip)
        caller.expect(b"SIP/2.0 486")
        time.sleep(0.3)
        assert proc.poll() is None, "exited with a call in flight"
        bye(caller, switch, sip, "in-progress")  # the call in flight completes
        proc.wait(timeout=10)
        drained = time.monotonic() - sent
        err = proc.stderr.read() if proc.stderr else ""
    caller.sock.close()
    assert proc.returncode == 0, err
    # no call left in flight after the BYE: out well before drain_seconds
    assert drained < 4.0, (drained, err)
    assert "drained in" in err and "no call awaiting" in err, err
    lines = (tmp_path / "verdicts.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert sorted(r["call_id"] for r in records) == ["in-progress", "sos"]  # "new" was shed


def test_drain_is_bounded_by_drain_seconds(tmp_path: Path) -> None:
    caller = Udp()
    with serving(tmp_path, drain=1) as (proc, sip, _admin, switch):
        answered_call(caller, switch, sip, "never-ends")  # no BYE ever comes
        proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        proc.wait(timeout=10)
        drained = time.monotonic() - sent
        err = proc.stderr.read() if proc.stderr else ""
    caller.sock.close()
    assert proc.returncode == 0, err
    assert 0.9 <= drained < 3.0, drained
    assert "drain_seconds over" in err, err
    lines = (tmp_path / "verdicts.jsonl").read_text().splitlines()
    assert [json.loads(line)["call_id"] for line in lines] == ["never-ends"]


# -- switches going down under a live worker ------------------------------------


async def test_calls_follow_the_healthy_switch_and_get_503_with_none() -> None:
    switches = [await open_peer(answer_options=True) for _ in range(2)]
    caller, caller_port = await open_peer()
    admin, sip = free_port(), free_port()
    cfg = parse_config({
        "sip": {"host": "127.0.0.1", "port": sip},
        "switches": [{"name": f"sw{i}", "host": "127.0.0.1", "port": port}
                     for i, (_, port) in enumerate(switches)],
        "routing": {"ping_interval": 0.1, "ping_timeout": 0.1, "failures_before_down": 2},
        "admin": {"host": "127.0.0.1", "port": admin},
        "log": {"verdict_log": ""},
    })  # fmt: skip
    worker = Worker(cfg)
    await worker.start()
    seq = iter(range(10**6))

    async def call() -> int | bytes:
        """Index of the switch the INVITE reached, or the caller's answer."""
        n = next(seq)
        assert caller.transport is not None
        caller.transport.sendto(
            request(ruri=f"sip:{CALLEE}@127.0.0.1:{sip}", call_id=f"sw-{n}",
                    branch=f"z9hG4bK-sw-{n}", via_host=f"127.0.0.1:{caller_port}"),
            ("127.0.0.1", sip),
        )  # fmt: skip
        waits = {asyncio.ensure_future(p.get(2)): i for i, (p, _) in enumerate(switches)}
        answer = asyncio.ensure_future(caller.get(2))
        done, pending = await asyncio.wait([*waits, answer], return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        first = done.pop()
        return first.result()[0] if first is answer else waits[first]

    async def until(check: Callable[[], bool], what: str) -> None:
        for _ in range(100):
            if check():
                return
            await asyncio.sleep(0.05)
        raise AssertionError(what)

    try:
        await until(lambda: all(s.up for s in worker.pool.states), "both switches up")
        assert {await call() for _ in range(30)} == {0, 1}  # spread over both
        switches[0][0].answer_options = False
        switches[0][0].transport.close()  # type: ignore[union-attr]
        await until(lambda: not worker.pool.states[0].up, "sw0 marked down")
        assert {await call() for _ in range(30)} == {1}  # every call to the survivor
        assert (await http_get(admin, "/readyz"))[0] == 200
        switches[1][0].answer_options = False
        switches[1][0].transport.close()  # type: ignore[union-attr]
        await until(lambda: not worker.pool.states[1].up, "sw1 marked down")
        answer = await call()
        assert isinstance(answer, bytes) and answer.startswith(b"SIP/2.0 503 ")
        assert b"\r\nRetry-After: " in answer
        assert (await http_get(admin, "/readyz"))[0] == 503
    finally:
        await worker.stop()
        assert caller.transport is not None
        caller.transport.close()


# -- a truncated blocklist artefact ---------------------------------------------


@pytest.mark.parametrize("what", ["keys.u64", "manifest.json"])
async def test_a_truncated_artefact_keeps_the_old_one(tmp_path: Path, what: str) -> None:
    async with running(tmp_path, block=X) as live:
        a = version(live)
        built = make_lists(live.lists, block=Y)
        path = live.lists / (what if what == "manifest.json" else f"{built.version}/{what}")
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])  # a copy cut short
        code, body = await live.reload()
        assert code == 422 and body["outcome"] == "error" and body["version"] == a
        assert version(live) == a
        assert await live.call(X) == 603 and await live.call(Y) == "forwarded"
        assert 'rs_blocklist_reloads_total{outcome="error"} 1.0' in await live.metrics()
        assert (await live.status())["last_error"] == body["detail"]


# -- the subscriber store locked, the disk full ----------------------------------


async def _live(tmp_path: Path) -> tuple[Live, Peer]:
    switch, switch_port = await open_peer()
    worker = Worker(worker_config(tmp_path, switch_port))
    await worker.start()
    return Live(worker, switch), switch


def _is_503(reply: Any) -> None:
    assert reply.status == 503, reply
    assert reply.headers["retry-after"] == "5"
    assert "subscriber store is unavailable" in reply.json()["error"]


async def test_a_locked_store_answers_503_and_screening_goes_on(tmp_path: Path) -> None:
    live, switch = await _live(tmp_path)
    try:
        put = {"opted_in": True, "block": [CALLER]}
        assert (await live.api("PUT", f"/subscribers/{ALICE}", put)).status == 201
        live.service.db.execute("PRAGMA busy_timeout=1000")  # 5 s in service: quicker here
        other = sqlite3.connect(tmp_path / "data" / "subscribers.sqlite3", isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
        try:
            started = time.monotonic()
            reply = await live.api("PATCH", f"/subscribers/{ALICE}", {"block": []})
            _is_503(reply)
            assert 1.0 <= time.monotonic() - started < 4  # after the busy timeout
            # the hot path screens from memory meanwhile: ALICE still blocks CALLER
            assert (await live.call(CALLER, ALICE)).startswith(b"SIP/2.0 607 ")
            assert (await live.api("GET", f"/subscribers/{ALICE}")).json()["block"] == [CALLER]
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert (await live.api("PATCH", f"/subscribers/{ALICE}", {"block": []})).status == 200
        assert await live.call(CALLER, ALICE, call_id="c2") == b""
    finally:
        await live.worker.stop()
        assert switch.transport is not None
        switch.transport.close()


async def test_a_full_disk_answers_503_and_leaves_the_index_alone(tmp_path: Path) -> None:
    live, switch = await _live(tmp_path)
    store = live.service.store
    real_put = store.put

    def full(*_args: object) -> None:  # what SQLite says when a write finds no space
        raise sqlite3.OperationalError("database or disk is full")

    try:
        assert (await live.api("PUT", f"/subscribers/{ALICE}", {"opted_in": True})).status == 201
        store.put = full  # type: ignore[method-assign]
        _is_503(
            await live.api("PUT", f"/subscribers/{ALICE}", {"opted_in": True, "block": [CALLER]})
        )
        assert live.service.get(int(ALICE[1:])) is not None
        assert (await live.api("GET", f"/subscribers/{ALICE}")).json()["block"] == []
        assert await live.call(CALLER, ALICE) == b""  # the failed write never reached screening
        store.put = real_put  # type: ignore[method-assign]
        on = {"opted_in": True, "block": [CALLER]}
        assert (await live.api("PUT", f"/subscribers/{ALICE}", on)).status == 200
        assert (await live.call(CALLER, ALICE, call_id="c2")).startswith(b"SIP/2.0 607 ")
    finally:
        await live.worker.stop()
        assert switch.transport is not None
        switch.transport.close()
