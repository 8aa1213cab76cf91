"""``[sip] workers = 2``: two processes on one port, one supervisor.

Calls are sent from many source ports, because the kernel picks the worker
by hashing the source address: 24 sockets all landing on one worker would
happen once in 2**23 runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.sipmsg import request
from tests.test_server import free_port

BLOCKED = "+12125550100"
SOCKETS = 24
TOKEN = "workers-test-token"


class Proxy:
    def __init__(self, workdir: Path, workers: int = 2, extra: str = "") -> None:
        self.sip, self.admin = free_port(), free_port()
        self.switch = udp_socket()
        self.config = workdir / "rs.toml"
        self.config.write_text(
            f"[sip]\nport = {self.sip}\nworkers = {workers}\n"
            f'[admin]\nport = {self.admin}\ntoken = "{TOKEN}"\n[routing]\nhealth_checks = false\n'
            f"[[switches]]\nport = {self.switch.getsockname()[1]}\n"
            '[log]\nverdict_log = ""\n[redress]\nemail = "redress@example.net"\n'
            f'[screening]\nblock = ["{BLOCKED}"]\n{extra}'
        )
        self.workdir = workdir
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> subprocess.Popen[str]:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "proxy", "serve", "--config", str(self.config)],
            cwd=self.workdir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        return self.proc

    def children(self) -> set[int]:
        assert self.proc is not None
        path = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        try:
            return {int(p) for p in path.read_text().split()}
        except OSError:
            return set()

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.admin}{path}", timeout=3) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def send(self, method: str, path: str, body: object) -> tuple[int, str]:
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.admin}{path}",
            data=json.dumps(body).encode(),
            method=method,
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"},
        )
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def samples(self, name: str) -> dict[str, float]:
        """Value of metric ``name`` by worker label."""
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(self.get("/metrics")[1]):
            for s in family.samples:
                if s.name == name:
                    key = s.labels.get("worker", "")
                    out[key] = out.get(key, 0.0) + s.value
        return out

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.switch.close()


def udp_socket() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    # room for a burst the test reads only afterwards (root may pass rmem_max)
    for option in (getattr(socket, "SO_RCVBUFFORCE", 33), socket.SO_RCVBUF):
        with contextlib.suppress(OSError):
            s.setsockopt(socket.SOL_SOCKET, option, 4 << 20)
            break
    s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    return s


def wait_for(check: object, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def ready(proxy: Proxy, workers: int = 2) -> bool:
    if proxy.get("/readyz")[0] != 200:
        return False
    return workers == 1 or proxy.samples("rs_workers_reporting").get("", 0) == workers


def gather(
    socks: list[socket.socket], seconds: float, want: int | None = None
) -> list[list[bytes]]:
    """What each socket receives within ``seconds``; sooner once every socket
    has ``want`` messages."""
    got: list[list[bytes]] = [[] for _ in socks]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for sock, box in zip(socks, got, strict=True):
            while True:
                try:
                    box.append(sock.recv(65535))
                except BlockingIOError:
                    break
        if want is not None and all(len(box) >= want for box in got):
            break
        time.sleep(0.02)
    return got


def drain(sock: socket.socket, seconds: float, want: int | None = None) -> list[bytes]:
    return gather([sock], seconds, want)[0]


def invite(sock: socket.socket, proxy: Proxy, caller: str, tag: str, callee: str = "") -> bytes:
    port = sock.getsockname()[1]
    data = request(
        ruri=f"sip:{callee or '+13125550187'}@127.0.0.1:{proxy.sip}",
        caller=caller,
        via_host=f"127.0.0.1:{port}",
        branch=f"z9hG4bK-{tag}",
        call_id=f"{tag}@test",
    )
    if callee:
        data = data.replace(b"+13125550187@192.0.2.5", callee.encode() + b"@192.0.2.5")
    sock.sendto(data, ("127.0.0.1", proxy.sip))
    return data


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[Proxy]:
    p = Proxy(tmp_path)
    p.start()
    try:
        wait_for(lambda: ready(p), "two workers ready")
        yield p
    finally:
        p.stop()


@pytest.fixture
def callers() -> Iterator[list[socket.socket]]:
    socks = [udp_socket() for _ in range(SOCKETS)]
    yield socks
    for s in socks:
        s.close()


def test_both_workers_take_calls_and_the_metrics_add_up(
    proxy: Proxy, callers: list[socket.socket]
) -> None:
    for i, sock in enumerate(callers):
        invite(sock, proxy, BLOCKED if i % 2 else "+12025550111", f"add-{i}")
    answers = gather(callers[1::2], 5, want=1)
    forwarded = drain(proxy.switch, 5, want=SOCKETS // 2)
    assert all(any(b" 603 " in m for m in got) for got in answers), answers
    assert len([m for m in forwarded if m.startswith(b"INVITE ")]) == SOCKETS // 2

    verdicts = proxy.samples("rs_screening_verdicts_total")
    assert set(verdicts) == {"0", "1"}, "every series carries its worker"
    assert sum(verdicts.values()) == SOCKETS
    assert all(v > 0 for v in verdicts.values()), f"one worker took every call: {verdicts}"


def test_any_worker_absorbs_the_ack_of_a_sibling_603(
    proxy: Proxy, callers: list[socket.socket]
) -> None:
    """The To-tag of a 603 is derived from a nonce the workers share, so the
    ACK is absorbed whichever worker it reaches."""
    invite(callers[0], proxy, BLOCKED, "ack-1")
    reply = next(m for m in drain(callers[0], 5, want=1) if b" 603 " in m)
    to_line = next(ln for ln in reply.split(b"\r\n") if ln.lower().startswith(b"to:"))
    to_tag = to_line.split(b"tag=")[1].decode()
    for sock in callers:  # spread over both workers
        ack = request(
            "ACK",
            ruri=f"sip:+13125550187@127.0.0.1:{proxy.sip}",
            caller=BLOCKED,
            to_tag=to_tag,
            via_host=f"127.0.0.1:{callers[0].getsockname()[1]}",
            branch="z9hG4bK-ack-1",
            call_id="ack-1@test",
        )
        sock.sendto(ack, ("127.0.0.1", proxy.sip))
    assert drain(proxy.switch, 1.5) == []
    absorbed = proxy.samples("rs_sip_dropped_total")
    assert sum(absorbed.values()) == SOCKETS


def test_a_dead_worker_is_restarted(proxy: Proxy, callers: list[socket.socket]) -> None:
    before = proxy.children()
    assert len(before) == 2
    victim = sorted(before)[-1]
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: len(proxy.children()) == 2 and victim not in proxy.children(), "respawn")
    wait_for(lambda: ready(proxy), "both workers reporting again")
    assert sum(proxy.samples("rs_worker_restarts_total").values()) == 1
    for i, sock in enumerate(callers):
        invite(sock, proxy, "+12025550111", f"after-{i}")
    forwarded = drain(proxy.switch, 5, want=SOCKETS)
    assert len([m for m in forwarded if m.startswith(b"INVITE ")]) == SOCKETS


def test_subscriber_edits_reach_every_worker(proxy: Proxy, callers: list[socket.socket]) -> None:
    status, body = proxy.send(
        "PUT",
        "/api/v1/subscribers/+13125550199",
        {"opted_in": True, "policy": "label", "block": ["+12025550177"]},
    )
    assert status in (200, 201), body
    time.sleep(2.5)  # the sibling looks at the store every second
    for i, sock in enumerate(callers):
        invite(sock, proxy, "+12025550177", f"sub-{i}", callee="+13125550199")
    answers = gather(callers, 5, want=1)
    assert all(any(b" 607 " in m for m in got) for got in answers), answers


def test_sigterm_stops_every_worker(proxy: Proxy) -> None:
    kids = proxy.children()
    assert proxy.proc is not None
    proxy.proc.terminate()
    assert proxy.proc.wait(15) == 0
    assert not any(Path(f"/proc/{pid}").exists() for pid in kids)


def test_a_worker_that_cannot_start_stops_the_supervisor(tmp_path: Path) -> None:
    p = Proxy(tmp_path)
    taken = socket.socket()
    taken.bind(("127.0.0.1", p.admin))  # the first worker cannot serve the admin API
    taken.listen()
    try:
        proc = p.start()
        assert proc.wait(20) == 1
        assert proc.stderr is not None
        assert "worker 0: cannot listen for admin http" in proc.stderr.read()
    finally:
        taken.close()
        p.stop()


def answer_as_switch(
    switch: socket.socket, method: bytes, seconds: float, until: int | None = None
) -> list[bytes]:
    """Be a switch answering each request of ``method`` with 200 to its top
    Via (with a To-tag), for ``seconds`` or until ``until`` were answered;
    returns the requests."""
    answered: list[bytes] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and (until is None or len(answered) < until):
        try:
            data = switch.recv(65535)
        except BlockingIOError:
            time.sleep(0.01)
            continue
        if not data.startswith(method + b" "):
            continue
        answered.append(data)
        head = data.split(b"\r\n\r\n")[0].split(b"\r\n")[1:]
        names = (b"via", b"from", b"to", b"call-id", b"cseq")
        keep = [h for h in head if h.split(b":")[0].lower() in names]
        keep = [h + b";tag=sw" if h.lower().startswith(b"to:") else h for h in keep]
        sent_by = keep[0].split(b" ")[2].split(b";")[0].decode()
        host, port = sent_by.rsplit(":", 1)
        reply = b"\r\n".join([b"SIP/2.0 200 OK", *keep, b"Content-Length: 0", b"", b""])
        switch.sendto(reply, (host, int(port)))
    return answered


def test_every_worker_sees_its_own_health_checks_answered(tmp_path: Path) -> None:
    """Each worker pings from a port of its own: the answer to one worker's
    OPTIONS must not land on its sibling and leave the switch marked down."""
    p = Proxy(tmp_path)
    p.config.write_text(
        p.config.read_text().replace(
            "health_checks = false",
            "health_checks = true\nping_interval = 0.5\nping_timeout = 0.4",
        )
    )
    p.start()
    try:
        wait_for(lambda: ready(p), "two workers ready")
        assert len(answer_as_switch(p.switch, b"OPTIONS", 3.0)) >= 4
        ups = p.samples("rs_switch_up")
        responses = p.samples("rs_switch_ping_responses_total")
        assert ups == {"0": 1.0, "1": 1.0}, ups
        assert all(responses.get(w, 0) >= 2 for w in ("0", "1")), responses
        assert sum(p.samples("rs_sip_dropped_total").values()) == 0
    finally:
        p.stop()


def test_message_balance_spreads_one_peer_over_both_workers(tmp_path: Path) -> None:
    """With worker_balance = "message" the workers read one socket, so even a
    single peer address reaches both: with "source" it would reach one."""
    p = Proxy(tmp_path)
    p.config.write_text(
        p.config.read_text().replace("workers = 2\n", 'workers = 2\nworker_balance = "message"\n')
    )
    p.start()
    peer = udp_socket()
    try:
        wait_for(lambda: ready(p), "two workers ready")
        sent, forwarded = 0, []
        for burst in range(10):  # a worker busy with one datagram leaves the next to its sibling
            for i in range(20):
                invite(peer, p, "+12025550111", f"one-peer-{burst}-{i}")
                sent += 1
            forwarded += drain(p.switch, 0.05)  # keep the switch's small buffer from overflowing
        forwarded += drain(p.switch, 10, want=sent - len(forwarded))
        assert len([m for m in forwarded if m.startswith(b"INVITE ")]) == sent
        verdicts = p.samples("rs_screening_verdicts_total")
        assert sum(verdicts.values()) == sent
        assert set(verdicts) == {"0", "1"} and all(v > 0 for v in verdicts.values()), verdicts
    finally:
        peer.close()
        p.stop()


def test_gathered_metrics_pass_promtool(proxy: Proxy) -> None:
    """The merged exposition is valid text format: one HELP and TYPE per
    family, whatever the number of workers."""
    if shutil.which("promtool") is None:
        pytest.skip("promtool missing: `make system-deps` installs Debian's prometheus")
    status, text = proxy.get("/metrics")
    assert status == 200
    done = subprocess.run(
        ["promtool", "check", "metrics"], input=text.encode(), capture_output=True, timeout=30
    )
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
    assert text.count("# TYPE rs_screening_verdicts_total counter") == 1
    assert "rs_workers_reporting 2.0" in text


def test_worker_ports_bring_each_call_outcome_back_to_its_worker(
    tmp_path: Path, callers: list[socket.socket]
) -> None:
    """With worker_port_base, a worker puts its own port in Via and
    Record-Route: the switch's answer returns to the worker that screened
    the call, so its reputation engine counts the outcome. Without it, the
    answers would all reach whichever worker the switch's address hashes to."""
    p = Proxy(tmp_path, extra="[reputation]\nenabled = true\n")
    base = free_port()
    while not all(port_free(base + i) for i in range(2)):
        base = free_port()
    p.config.write_text(
        p.config.read_text().replace("workers = 2\n", f"workers = 2\nworker_port_base = {base}\n")
    )
    p.start()
    try:
        wait_for(lambda: ready(p), "two workers ready")
        for i, sock in enumerate(callers):
            invite(sock, p, f"+1202555{i:04d}", f"own-{i}")
        invites = answer_as_switch(p.switch, b"INVITE", 10, until=SOCKETS)
        assert len(invites) == SOCKETS
        ports = {m.split(b"\r\nVia: SIP/2.0/UDP 127.0.0.1:")[1].split(b";")[0] for m in invites}
        assert ports == {str(base).encode(), str(base + 1).encode()}, ports
        assert all(
            f"Record-Route: <sip:127.0.0.1:{base}".encode() in m
            or f"Record-Route: <sip:127.0.0.1:{base + 1}".encode() in m
            for m in invites
        )
        oks = [m for box in gather(callers, 5, want=1) for m in box]
        assert len([m for m in oks if m.startswith(b"SIP/2.0 200 ")]) == SOCKETS
        wait_for(
            lambda: sum(p.samples("rs_peer_call_finals_total").values()) == SOCKETS,
            "every answer counted",
            timeout=5,
        )
        finals = p.samples("rs_peer_call_finals_total")
        verdicts = p.samples("rs_screening_verdicts_total")
        assert finals == verdicts, (finals, verdicts)
    finally:
        p.stop()


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
