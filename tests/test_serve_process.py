"""The real `robocall-shield serve` process: start, SIGHUP reload, SIGTERM."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.sipmsg import request
from tests.test_server import free_port

ROOT = Path(__file__).resolve().parents[1]


def write_config(path: Path, sip: int, admin: int, switch: int, block: str) -> None:
    path.write_text(
        f"[sip]\nport = {sip}\n[admin]\nport = {admin}\n[routing]\nhealth_checks = false\n"
        f'[[switches]]\nport = {switch}\n[log]\nverdict_log = ""\n'
        f'[redress]\nemail = "redress@example.net"\n[screening]\nblock = [{block}]\n'
    )


def wait_ready(admin: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{admin}/readyz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("proxy did not become ready")


def first_line_after_invite(sock: socket.socket, switch: socket.socket, sip: int) -> bytes:
    """Send an INVITE; return what came back: the switch's copy or our reply."""
    port = sock.getsockname()[1]
    sock.sendto(
        request(
            ruri=f"sip:+13125550187@127.0.0.1:{sip}",
            via_host=f"127.0.0.1:{port}",
            call_id=f"c{time.monotonic_ns()}",
        ),
        ("127.0.0.1", sip),
    )
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for s in (sock, switch):
            try:
                return s.recv(65535).split(b"\r\n", 1)[0]
            except BlockingIOError:
                pass
        time.sleep(0.01)
    raise AssertionError("nothing came back")


def test_serve_reload_and_stop(tmp_path: Path) -> None:
    sip, admin = free_port(), free_port()
    switch = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    switch.bind(("127.0.0.1", 0))
    switch.setblocking(False)
    caller = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    caller.bind(("127.0.0.1", 0))
    caller.setblocking(False)
    cfg = tmp_path / "rs.toml"
    write_config(cfg, sip, admin, switch.getsockname()[1], "")
    proc = subprocess.Popen(
        [sys.executable, "-m", "proxy", "serve", "--config", str(cfg)],
        cwd=tmp_path,  # the subscriber store goes to ./var
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_ready(admin, proc)
        assert first_line_after_invite(caller, switch, sip).startswith(b"INVITE ")
        write_config(cfg, sip, admin, switch.getsockname()[1], '"+12125550142"')
        proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        assert first_line_after_invite(caller, switch, sip) == b"SIP/2.0 603 Network Blocked"
        cfg.write_text("[sip\nbroken")
        proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        assert proc.poll() is None  # a bad file never takes the proxy down
        assert first_line_after_invite(caller, switch, sip) == b"SIP/2.0 603 Network Blocked"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
        assert proc.returncode == 0
        assert "reload rejected, running policy kept" in err and "Traceback" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        switch.close()
        caller.close()
