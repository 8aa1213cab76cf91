"""What survives `kill -9` (issue 9, part 6).

A subscriber change acknowledged with 200/201 is committed to SQLite (WAL,
synchronous=NORMAL: durable against a process crash, not a power loss)
before the answer is sent. The verdict log loses at most the last batch
(proxy.verdict_log: 0.1 s of calls) and is never corrupt but for a torn last
line, which the next start ends and reports.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from proxy.verdict_log import FLUSH_INTERVAL, VerdictLog
from tests.sipmsg import request
from tests.test_faults import Udp, readyz
from tests.test_server import free_port

TOKEN = "durability-token-0123456789"
BLOCKED = "+12125550166"


def start(tmp_path: Path, sip: int, admin: int, switch: int) -> subprocess.Popen[bytes]:
    cfg = tmp_path / "rs.toml"
    cfg.write_text(
        f'[sip]\nhost = "127.0.0.1"\nport = {sip}\ntransports = ["udp"]\n'
        f'[admin]\nport = {admin}\ntoken = "{TOKEN}"\n[routing]\nhealth_checks = false\n'
        f'[[switches]]\nhost = "127.0.0.1"\nport = {switch}\n'
        f'[log]\nverdict_log = "{tmp_path / "verdicts.jsonl"}"\n'
        f'[redress]\nemail = "redress@example.net"\n[screening]\nblock = ["{BLOCKED}"]\n'
        f'[subscribers]\ndata_dir = "{tmp_path / "data"}"\n'
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "proxy", "serve", "--config", str(cfg)],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 15
    while readyz(admin) != 200:
        assert proc.poll() is None and time.monotonic() < deadline, "proxy did not start"
        time.sleep(0.05)
    return proc


def api(admin: int, method: str, number: str, body: dict[str, object] | None = None) -> int:
    req = urllib.request.Request(
        f"http://127.0.0.1:{admin}/api/v1/subscribers/{number}",
        data=json.dumps(body).encode() if body is not None else None,
        method=method,
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def kill9(proc: subprocess.Popen[bytes]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=5)


def test_an_acknowledged_subscriber_change_survives_kill_9(tmp_path: Path) -> None:
    sip, admin, switch = free_port(), free_port(), Udp()
    proc = start(tmp_path, sip, admin, switch.port)
    try:
        numbers = [f"+1312555{n:04d}" for n in range(20)]
        for n, number in enumerate(numbers):
            assert api(admin, "PUT", number, {"opted_in": True, "block": [BLOCKED]}) == 201
            assert api(admin, "PATCH", number, {"policy": "block-all-suspected"}) == 200
            if n == len(numbers) - 1:
                kill9(proc)  # right after the last 200, before anything else
        proc = start(tmp_path, sip, admin, switch.port)
        for number in numbers:
            req = urllib.request.Request(
                f"http://127.0.0.1:{admin}/api/v1/subscribers/{number}",
                headers={"Authorization": f"Bearer {TOKEN}"},
            )
            with urllib.request.urlopen(req, timeout=5) as resp:
                sub = json.loads(resp.read())
            assert sub["policy"] == "block-all-suspected" and sub["block"] == [BLOCKED], sub
    finally:
        if proc.poll() is None:
            kill9(proc)
        switch.sock.close()


def test_the_verdict_log_loses_at_most_the_last_window_on_kill_9(tmp_path: Path) -> None:
    sip, admin, switch, caller = free_port(), free_port(), Udp(), Udp()
    proc = start(tmp_path, sip, admin, switch.port)
    answered: dict[str, float] = {}  # Call-ID -> when its 603 came back
    try:
        for n in range(600):  # ~1 s of blocked calls, each answered before the next
            call_id = f"v-{n}"
            caller.send(
                request(ruri=f"sip:+13125550187@127.0.0.1:{sip}", caller=BLOCKED,
                        call_id=call_id, branch=f"z9hG4bK-v{n}",
                        via_host=f"127.0.0.1:{caller.port}"),
                sip,
            )  # fmt: skip
            caller.expect(b"SIP/2.0 603")
            answered[call_id] = time.monotonic()
        killed = time.monotonic()
        kill9(proc)
    finally:
        if proc.poll() is None:
            kill9(proc)
        switch.sock.close()
        caller.sock.close()
    text = (tmp_path / "verdicts.jsonl").read_bytes()
    lines = text.split(b"\n")
    torn = lines.pop()  # after the last newline: empty unless a write was cut short
    records = [json.loads(line) for line in lines]  # every whole line parses
    logged = {r["call_id"] for r in records}
    assert logged <= set(answered)
    missing = [c for c in answered if c not in logged]
    # what is missing is the tail: the calls of the last flush window (plus
    # the writer thread's turn), never an older one
    window = 3 * FLUSH_INTERVAL + 0.2
    assert all(killed - answered[c] < window for c in missing), (len(missing), window)
    assert list(answered)[: len(answered) - len(missing)] == [r["call_id"] for r in records]
    oldest = max((killed - answered[c] for c in missing), default=0.0)
    print(f"verdict log after kill -9: {len(missing)} of {len(answered)} calls missing, "
          f"the oldest answered {oldest:.3f} s before the kill "
          f"({len(answered) / (killed - min(answered.values())):.0f} calls/s), "
          f"torn tail {len(torn)} bytes")  # fmt: skip


def test_a_torn_last_line_is_ended_and_reported_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "verdicts.jsonl"
    path.write_bytes(b'{"ts":1.0,"event":"verdict","call_id":"whole"}\n{"ts":2.0,"eve')
    vlog = VerdictLog(str(path))
    vlog._lines.append('{"ts":3.0,"event":"verdict","call_id":"next"}\n')  # as write() does
    vlog.close()
    lines = path.read_text().splitlines()
    assert lines == [
        '{"ts":1.0,"event":"verdict","call_id":"whole"}',
        '{"ts":2.0,"eve',  # the torn line stays one bad line...
        '{"ts":3.0,"event":"verdict","call_id":"next"}',  # ...and spoils nothing after it
    ]
    assert "ended in a torn line" in caplog.text
