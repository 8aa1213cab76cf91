"""Plumbing for the SIPp end-to-end tests: ports, the proxy process, SIPp
processes and their message traces. The fixtures in conftest.py wrap it."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

HOST = "127.0.0.1"
SCENARIOS = Path(__file__).resolve().parent / "scenarios"
SIPP_TIMEOUT = "15s"  # SIPp's own global limit; the subprocess limit is above it
PROCESS_TIMEOUT = 30.0

_handed_out: set[int] = set()


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (the proxy and SIPp in
    TCP mode listen on both), never handed out twice in one session."""
    for _ in range(200):
        with (
            socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp,
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp,
        ):
            tcp.bind((HOST, 0))
            port = int(tcp.getsockname()[1])
            if port in _handed_out:
                continue
            try:
                udp.bind((HOST, port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError("no port free for both UDP and TCP on 127.0.0.1")


def udp_port_taken(port: int) -> bool:
    """True once some process (a SIPp UAS) has bound the UDP port."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((HOST, port))
        except OSError:
            return True
    return False


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def stop_process(proc: subprocess.Popen[bytes] | None, grace: float = 5.0) -> None:
    """SIGTERM, and SIGKILL if it is still there after ``grace`` seconds."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def _toml(value: object) -> str:
    # JSON strings, booleans, numbers and string arrays are valid TOML as written.
    return json.dumps(value)


def proxy_command(config: Path) -> list[str]:
    """The installed console script of the running venv, else ``python -m proxy``."""
    script = Path(sys.executable).with_name("robocall-shield")
    if script.exists():
        return [str(script), "serve", "--config", str(config)]
    return [sys.executable, "-m", "proxy", "serve", "--config", str(config)]


def http_call(
    url: str, method: str, data: bytes | None, headers: dict[str, str]
) -> tuple[int, object]:
    """One HTTP request: (status, the JSON body, or its text); (0, None)
    when nothing answered."""
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            raw, status = resp.read(), resp.status
    except urllib.error.HTTPError as err:
        raw, status = err.read(), err.code
    except OSError:
        return 0, None
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


# -- the proxy ---------------------------------------------------------------


@dataclass
class ProxyProcess:
    workdir: Path
    sip_port: int
    admin_port: int
    switch_port: int
    record_route: bool = False
    block: Sequence[str] = ()
    label: Sequence[str] = ()
    label_text: str = "SCAM LIKELY"
    redress_url: str = "https://redress.example.net/x"
    process: subprocess.Popen[bytes] | None = None

    @property
    def config_path(self) -> Path:
        return self.workdir / "robocall-shield.toml"

    @property
    def verdict_log(self) -> Path:
        return self.workdir / "verdicts.jsonl"

    @property
    def output_path(self) -> Path:
        return self.workdir / "proxy.log"

    def write_config(self) -> None:
        lines = [
            "[sip]",
            f"host = {_toml(HOST)}",
            f"port = {self.sip_port}",
            'transports = ["udp", "tcp"]',
            f"record_route = {_toml(self.record_route)}",
            "",
            "[[switches]]",
            'name = "sw"',
            f"host = {_toml(HOST)}",
            f"port = {self.switch_port}",
            "",
            "[routing]",
            "health_checks = false  # OPTIONS pings would confuse the SIPp UAS",
            "",
            "[admin]",
            "enabled = true",
            f"host = {_toml(HOST)}",
            f"port = {self.admin_port}",
            "",
            "[log]",
            'level = "debug"',
            f"verdict_log = {_toml(str(self.verdict_log))}",
            "",
            "[redress]",
            f"url = {_toml(self.redress_url)}",
            "",
            "[screening]",
            f"block = {_toml(list(self.block))}",
            f"label = {_toml(list(self.label))}",
            f"label_text = {_toml(self.label_text)}",
            'emergency_numbers = ["911", "933"]',
        ]
        self.config_path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def start(self, ready_timeout: float = 10.0) -> None:
        self.write_config()
        with self.output_path.open("wb") as out:
            self.process = subprocess.Popen(
                proxy_command(self.config_path),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + ready_timeout
        while self._status("/readyz") != 200:
            if self.process.poll() is not None:
                raise RuntimeError(f"proxy exited with {self.process.returncode}:\n{self.output()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"proxy not ready after {ready_timeout}s:\n{self.output()}")
            time.sleep(0.05)

    def stop(self) -> None:
        stop_process(self.process)

    def output(self) -> str:
        try:
            return self.output_path.read_text(encoding="utf-8", errors="replace")[-4000:]
        except FileNotFoundError:
            return "(no proxy output)"

    def _get(self, path: str) -> tuple[int, str]:
        url = f"http://{HOST}:{self.admin_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return int(resp.status), resp.read().decode("utf-8")
        except urllib.error.HTTPError as exc:
            return exc.code, ""

    def _status(self, path: str) -> int:
        try:
            return self._get(path)[0]
        except OSError:
            return 0

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples called ``name`` whose labels include ``labels``;
        0 when there is none (prometheus_client only shows touched labels)."""
        status, text = self._get("/metrics")
        assert status == 200, f"/metrics answered {status}"
        total = 0.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and labels.items() <= sample.labels.items():
                    total += sample.value
        return total

    def wait_metric(self, name: str, value: float, timeout: float = 5.0, **labels: str) -> None:
        """Wait for a counter to reach ``value``: the proxy counts after sending."""
        deadline = time.monotonic() + timeout
        while (seen := self.metric(name, **labels)) != value:
            if time.monotonic() > deadline:
                raise AssertionError(f"{name}{labels} is {seen}, expected {value}")
            time.sleep(0.02)

    def verdicts(self, count: int, timeout: float = 5.0) -> list[dict[str, object]]:
        """The verdict log once it holds ``count`` lines (it is written by a
        logging thread, so it may trail the SIP traffic a little)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                text = self.verdict_log.read_text(encoding="utf-8")
            except FileNotFoundError:
                text = ""
            records = [json.loads(line) for line in text.splitlines() if line.strip()]
            if len(records) >= count or time.monotonic() > deadline:
                return records
            time.sleep(0.02)


# -- SIPp --------------------------------------------------------------------


@dataclass(frozen=True)
class TracedMessage:
    """One SIP message from a SIPp ``-trace_msg`` file."""

    direction: str  # "sent" or "received"
    transport: str  # "UDP" or "TCP"
    text: str

    @property
    def start_line(self) -> str:
        return self.text.split("\n", 1)[0].strip()

    @property
    def method(self) -> str | None:
        """Request method, or None for a response."""
        first = self.start_line
        return None if first.startswith("SIP/2.0") else first.split(" ", 1)[0]

    @property
    def status(self) -> int | None:
        first = self.start_line
        return int(first.split(" ")[1]) if first.startswith("SIP/2.0") else None

    @property
    def request_uri(self) -> str:
        return self.start_line.split(" ")[1]

    def headers(self, name: str) -> list[str]:
        """Values of every header field called ``name`` (case-insensitive),
        one entry per field line, as SIPp wrote them."""
        head = self.text.split("\n\n", 1)[0]
        key = name.lower()
        out: list[str] = []
        for line in head.split("\n")[1:]:
            field_name, sep, value = line.partition(":")
            if sep and field_name.strip().lower() == key:
                out.append(value.strip())
        return out

    def header(self, name: str) -> str | None:
        values = self.headers(name)
        return values[0] if values else None

    @property
    def vias(self) -> list[str]:
        # SIPp's [last_Via:] folds all Vias onto one line, comma-separated
        return [v.strip() for line in self.headers("Via") for v in line.split(",")]

    @property
    def top_branch(self) -> str:
        match = re.search(r";branch=([^;,\s]+)", self.vias[0])
        assert match, f"no branch in {self.vias[0]!r}"
        return match.group(1)


_TRACE_ENTRY = re.compile(
    # "UDP message sent (529 bytes):" and "UDP message received [622] bytes :"
    r"^(?P<transport>[A-Z]+) message (?P<direction>sent|received) "
    r"(?:\(\d+ bytes\)|\[\d+\] bytes ?):\n\n"
    r"(?P<text>.*)",
    re.DOTALL,
)


def read_trace(path: Path) -> list[TracedMessage]:
    try:
        raw = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    raw = raw.replace("\r\n", "\n")
    out: list[TracedMessage] = []
    for chunk in re.split(r"^-{20,}[^\n]*\n", raw, flags=re.MULTILINE):
        match = _TRACE_ENTRY.match(chunk)
        if match:
            out.append(
                TracedMessage(
                    match["direction"], match["transport"], match["text"].strip("\n") + "\n"
                )
            )
    return out


@dataclass
class SippRun:
    """One SIPp process: its command line, files and (once done) exit code."""

    name: str
    workdir: Path
    args: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None
    returncode: int | None = None

    def file(self, kind: str) -> Path:
        return self.workdir / f"{self.name}.{kind}"

    def command(
        self, scenario: str, *, local_port: int, transport: str, extra: Sequence[str]
    ) -> list[str]:
        sipp = shutil.which("sipp")
        assert sipp is not None
        return [
            sipp,
            *extra,
            "-sf", str(SCENARIOS / scenario),
            "-i", HOST,
            "-p", str(local_port),
            "-t", transport,
            "-m", "1",
            "-timeout", SIPP_TIMEOUT,
            "-timeout_error",
            "-nostdin",
            "-trace_msg", "-message_file", str(self.file("messages")),
            "-trace_err", "-error_file", str(self.file("errors")),
            "-trace_screen", "-screen_file", str(self.file("screen")),
            "-trace_logs", "-log_file", str(self.file("actions")),
        ]  # fmt: skip

    def spawn(self, args: list[str]) -> None:
        self.args = args
        with self.file("stdout").open("wb") as out:
            self.process = subprocess.Popen(
                args,
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, killed as one
            )

    def wait(self, timeout: float = PROCESS_TIMEOUT) -> int:
        assert self.process is not None
        try:
            self.returncode = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"{self.name}: SIPp still running after {timeout}s\n" + self.report()
            ) from None
        return self.returncode

    def kill(self) -> None:
        proc = self.process
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGKILL)
        self.returncode = proc.wait(timeout=5)

    def messages(self) -> list[TracedMessage]:
        return read_trace(self.file("messages"))

    def received(self, method_or_status: str | int) -> list[TracedMessage]:
        """Messages received that are requests of this method or responses
        with this status."""
        return [
            m
            for m in self.messages()
            if m.direction == "received" and method_or_status in (m.method, m.status)
        ]

    def sent(self, method_or_status: str | int) -> list[TracedMessage]:
        return [
            m
            for m in self.messages()
            if m.direction == "sent" and method_or_status in (m.method, m.status)
        ]

    def report(self) -> str:
        """What SIPp said, for assertion messages."""
        parts = [f"--- {self.name}: exit {self.returncode}; {' '.join(self.args)}"]
        for kind, limit in (("errors", 3000), ("screen", 2500), ("actions", 1500)):
            path = self.file(kind)
            if path.exists() and path.stat().st_size:
                text = path.read_text(encoding="utf-8", errors="replace")
                parts.append(f"--- {path.name}:\n{text[-limit:]}")
        stdout = self.file("stdout")
        if stdout.exists():
            tail = stdout.read_text(encoding="utf-8", errors="replace")[-800:]
            parts.append(f"--- {stdout.name} (tail):\n{tail}")
        return "\n".join(parts)
