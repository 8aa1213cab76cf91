"""Plumbing for tests/test_prometheus.py: a Debian ``prometheus`` scraping the
proxy of the SIPp end-to-end ``Lab`` (tests/e2e), SIPp driving many calls
with a mix of callers, and the PromQL taken out of the Grafana dashboard and
the alert rules.

Reused from tests/e2e: the ``Lab`` (ports, process clean-up, failure
reports), ``ProxyProcess`` (config, start, readiness) and ``SippRun``
(process group, exit code, report). Added here: proxy config sections the
e2e tests do not need ([[peers]], [subscribers], [blocklists], modes), a
SIPp switch that answers any number of calls, a caller reading its callers
from an injection file at a call rate, and the Prometheus server.
"""

from __future__ import annotations

import base64
import json
import math
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .e2e.conftest import Lab
from .e2e.harness import HOST, SCENARIOS, ProxyProcess, SippRun, free_port, stop_process

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "config" / "grafana" / "robocall-shield.json"
ALERTS = ROOT / "config" / "prometheus" / "alerts.yml"
UAC_SCENARIO = Path(__file__).resolve().with_name("promlab_uac.xml")
UAS_SCENARIO = SCENARIOS / "uas_call.xml"  # answers whatever INVITE comes, no checks
JOB = "robocall-shield"  # the scrape job name the alert rules expect (RobocallShieldDown)
PEER = "lab-trunk"  # [[peers]] name of 127.0.0.1/32, where SIPp calls from


# -- the proxy, with the sections the e2e harness does not write ---------------


@dataclass
class ConfiguredProxy(ProxyProcess):
    """The e2e ``ProxyProcess`` with more TOML appended to its config."""

    extra_config: str = ""

    def write_config(self) -> None:
        super().write_config()
        with self.config_path.open("a", encoding="utf-8") as fh:
            fh.write("\n" + self.extra_config)

    def scrape(self) -> bytes:
        url = f"http://{HOST}:{self.admin_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            return bytes(resp.read())


def build_blocklist(workdir: Path, block: Sequence[str], prefix_rules: Sequence[str]) -> Path:
    """A tiny artefact from ``robocall-shield blocklist build`` (as an operator
    would make it); returns the artefact directory."""
    (workdir / "operator-block.txt").write_text("".join(f"{n}\n" for n in block))
    (workdir / "prefix-rules.txt").write_text("".join(f"{r}\n" for r in prefix_rules))
    out = workdir / "lists"
    done = subprocess.run(
        [
            sys.executable, "-m", "proxy", "blocklist", "build",
            f"block:{workdir / 'operator-block.txt'}",
            f"prefix:{workdir / 'prefix-rules.txt'}",
            "-o", str(out),
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, f"blocklist build failed:\n{done.stdout}\n{done.stderr}"
    return out


def send_malformed(port: int, count: int) -> None:
    """Requests the parser rejects (no From, To, Call-ID, CSeq): each is
    answered 400 and counted in rs_sip_parse_errors_total."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        own = sock.getsockname()[1]
        for i in range(count):
            sock.sendto(
                (
                    f"OPTIONS sip:+13125550199@{HOST}:{port} SIP/2.0\r\n"
                    f"Via: SIP/2.0/UDP {HOST}:{own};branch=z9hG4bK-broken-{i}\r\n"
                    "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
                ).encode(),
                (HOST, port),
            )


STRANGER = "127.0.0.2"  # loopback too, but no [[peers]] entry covers it


def send_from_stranger(port: int, count: int) -> None:
    """Well-formed OPTIONS from an address that is no declared peer: each is
    answered 403 ([sip] unknown_sources = "reject") or, once the address is
    over its [flood] limit, dropped and counted in rs_flood_limited_total."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((STRANGER, 0))
        own = sock.getsockname()[1]
        for i in range(count):
            sock.sendto(
                (
                    f"OPTIONS sip:+13125550199@{HOST}:{port} SIP/2.0\r\n"
                    f"Via: SIP/2.0/UDP {STRANGER}:{own};branch=z9hG4bK-stranger-{i}\r\n"
                    f"From: <sip:+12025550100@{STRANGER}>;tag=s{i}\r\n"
                    f"To: <sip:+13125550199@{HOST}>\r\n"
                    f"Call-ID: stranger-{i}@{STRANGER}\r\nCSeq: 1 OPTIONS\r\n"
                    "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
                ).encode(),
                (HOST, port),
            )


def send_unframed_tcp(port: int) -> bool:
    """A request without Content-Length on a TCP connection: the stream cannot
    be framed, so the proxy closes it (rs_tcp_closed_total reason bad-framing,
    a 400 in rs_sip_parse_errors_total). True when the proxy closed it."""
    with socket.create_connection((HOST, port), timeout=5) as sock:
        sock.sendall(
            f"OPTIONS sip:+13125550199@{HOST}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/TCP {HOST}:9;branch=z9hG4bK-unframed\r\n"
            f"From: <sip:+12025550100@{HOST}>;tag=u\r\nTo: <sip:+13125550199@{HOST}>\r\n"
            "Call-ID: unframed@lab\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n\r\n".encode()
        )
        for _ in range(100):  # bounded: an answer, if any, then the end of the stream
            try:
                if not sock.recv(65536):
                    return True
            except TimeoutError:
                return False
        return False


# -- SIPp: a switch for many calls, and callers from an injection file ---------


def _sipp() -> str:
    sipp = shutil.which("sipp")
    assert sipp is not None
    return sipp


def start_switch(lab: Lab) -> SippRun:
    """The e2e UAS scenario with no call limit, as the proxy's switch. The
    global -timeout is only a safety net for a test that dies without its
    clean-up; Lab.close kills it first."""
    uas = SippRun("switch", lab.workdir)
    lab.sipps.append(uas)
    uas.spawn(
        [
            _sipp(), "-sf", str(UAS_SCENARIO), "-i", HOST, "-p", str(lab.uas_port),
            "-t", "u1", "-nostdin", "-timeout", "150s",
            "-trace_err", "-error_file", str(uas.file("errors")),
            "-trace_screen", "-screen_file", str(uas.file("screen")),
        ]
    )  # fmt: skip
    return uas


def start_callers(
    lab: Lab, name: str, rows: Sequence[tuple[str, str]], *, rate: int, calls: int
) -> SippRun:
    """SIPp UAC calling the proxy ``calls`` times at ``rate`` calls/s, caller
    number and one header line per call from ``rows`` (cycled in order).
    Returns at once; ``wait`` or ``kill`` the run."""
    inf = lab.workdir / f"{name}.csv"
    inf.write_text("SEQUENTIAL\n" + "".join(f"{caller};{header};\n" for caller, header in rows))
    uac = SippRun(name, lab.workdir)
    lab.sipps.append(uac)
    uac.spawn(
        [
            _sipp(), f"{HOST}:{lab.proxy_port}", "-sf", str(UAC_SCENARIO),
            "-inf", str(inf), "-i", HOST, "-p", str(lab.uac_port), "-t", "u1",
            "-r", str(rate), "-rp", "1000", "-m", str(calls), "-l", str(rate * 4),
            "-nostdin", "-recv_timeout", "5000", "-timeout", "60s", "-timeout_error",
            "-trace_err", "-error_file", str(uac.file("errors")),
            "-trace_screen", "-screen_file", str(uac.file("screen")),
        ]
    )  # fmt: skip
    return uac


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def identity_header(attest: str | None, caller: str) -> str:
    """An Identity header whose PASSporT claims ``attest`` (not verifiable:
    the proxy reads the claim for the attestation mix only), or for no
    attestation a header that carries none."""
    if attest is None:
        return "X-Lab-Attestation: none"
    head = _b64(
        b'{"alg":"ES256","ppt":"shaken","typ":"passport","x5u":"https://cert.example/l.pem"}'
    )
    claims = {"attest": attest, "orig": {"tn": caller.lstrip("+")}, "iat": 1790000000}
    payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
    return f"Identity: {head}.{payload}.{_b64(b'not-a-signature-' + caller.encode())}"


def clean_callers(count: int) -> Iterator[str]:
    """Distinct valid NANP numbers spread over many thousands-blocks, so the
    reputation engine sees no caller, range or sequence pattern."""
    npas = (212, 312, 415, 503, 617, 646, 702, 718, 801, 917)
    for i in range(count):
        nxx = 200 + (i * 37) % 700
        yield f"+1{npas[i % len(npas)]}{nxx}{(i * 7919) % 10000:04d}"


# -- Prometheus -----------------------------------------------------------------


class PromError(AssertionError):
    pass


@dataclass
class PrometheusServer:
    """Debian's prometheus on a free 127.0.0.1 port with its own storage."""

    workdir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / "prometheus.log"

    def start(self, target: str, rule_files: Sequence[Path], ready_timeout: float = 20.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "prometheus.yml"
        # JSON is YAML: no YAML library needed to write it.
        config.write_text(
            json.dumps(
                {
                    "global": {
                        "scrape_interval": "1s",
                        "scrape_timeout": "1s",
                        "evaluation_interval": "1s",
                    },
                    "rule_files": [str(p) for p in rule_files],
                    "scrape_configs": [
                        {"job_name": JOB, "static_configs": [{"targets": [target]}]}
                    ],
                },
                indent=2,
            )
        )
        prometheus = shutil.which("prometheus")
        assert prometheus is not None
        with self.log_path.open("wb") as out:
            self.process = subprocess.Popen(
                [
                    prometheus,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    f"--web.listen-address={HOST}:{self.port}",
                    "--storage.tsdb.retention.time=1h",
                ],
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + ready_timeout
        while not self._ready():
            if self.process.poll() is not None:
                raise RuntimeError(f"prometheus exited:\n{self.output()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"prometheus not ready after {ready_timeout}s\n{self.output()}")
            time.sleep(0.1)

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{HOST}:{self.port}/-/ready", timeout=1) as r:
                return int(r.status) == 200
        except OSError:
            return False

    def stop(self) -> None:
        stop_process(self.process, grace=10.0)

    def output(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-3000:]
        except FileNotFoundError:
            return "(no prometheus output)"

    def api(self, path: str, params: Sequence[tuple[str, str]] = ()) -> Any:
        """``data`` of a /api/v1 answer; PromError with Prometheus's own
        error text when the status is not success (a bad query is a 400)."""
        url = f"http://{HOST}:{self.port}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(list(params))
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                body = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            body = json.loads(exc.read() or b"{}")
        if body.get("status") != "success":
            raise PromError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query at the server's now; the samples of a vector result."""
        data = self.api("query", [("query", expr)])
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        assert data["resultType"] == "vector", data
        return list(data["result"])

    def value(self, expr: str) -> float | None:
        """The single sample's value, None when there is none."""
        samples = self.query(expr)
        assert len(samples) <= 1, f"{expr}: more than one sample: {samples}"
        return float(samples[0]["value"][1]) if samples else None

    def alerts(self) -> list[dict[str, Any]]:
        """Active (pending or firing) alerts."""
        return list(self.api("alerts")["alerts"])

    def rule_groups(self) -> list[dict[str, Any]]:
        return list(self.api("rules")["groups"])

    def label_values(self, label: str, match: str) -> list[str]:
        return list(self.api(f"label/{label}/values", [("match[]", match)]))


def finite(samples: list[dict[str, Any]]) -> bool:
    return all(math.isfinite(float(s["value"][1])) for s in samples)


# -- the dashboard's PromQL ------------------------------------------------------


@dataclass(frozen=True)
class PanelQuery:
    panel: str
    ref: str
    expr: str


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those nested in collapsed rows included."""
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", ())


def dashboard_queries(dashboard: dict[str, Any]) -> list[PanelQuery]:
    return [
        PanelQuery(p["title"], t["refId"], t["expr"])
        for p in panels(dashboard)
        for t in p.get("targets", ())
        if t.get("expr")
    ]


_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")


def substitute(expr: str, values: dict[str, str]) -> str:
    """Grafana's template variables replaced; an unknown one is an error, so
    a new variable in the dashboard needs a value in the test."""

    def one(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name not in values:
            raise KeyError(f"no test value for ${name} in {expr}")
        return values[name]

    return _VARIABLE.sub(one, expr)


# -- the alert rules, and a copy with short windows ------------------------------

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
_DURATION = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")


def seconds(text: str) -> float:
    """A Prometheus duration ("1h30m") in seconds."""
    parts = _DURATION.findall(text)
    assert "".join(n + u for n, u in parts) == text, f"not a duration: {text!r}"
    return sum(int(n) * _UNITS[u] for n, u in parts)


def duration(secs: float) -> str:
    """Seconds as Prometheus prints a duration (largest units first)."""
    ms = round(secs * 1000)
    out = ""
    for unit in ("y", "w", "d", "h", "m", "s", "ms"):
        size = round(_UNITS[unit] * 1000)
        if ms >= size:
            out += f"{ms // size}{unit}"
            ms %= size
    return out or "0s"


def shorten_expr(expr: str, factor: int) -> str:
    """Range windows and offsets divided by ``factor``; numbers (thresholds
    like 36 * 3600) are left alone."""

    def window(m: re.Match[str]) -> str:
        return f"[{duration(seconds(m.group(1)) / factor)}]"

    def offset(m: re.Match[str]) -> str:
        return f"offset {duration(seconds(m.group(1)) / factor)}"

    expr = re.sub(r"\[((?:\d+(?:ms|[smhdwy]))+)\]", window, expr)
    return re.sub(r"offset ((?:\d+(?:ms|[smhdwy]))+)", offset, expr)


def shortened_rules(text: str, *, factor: int, hold: str, group: str, label: str) -> str:
    """alerts.yml rewritten for a short test: every window and offset divided
    by ``factor``, every ``for:`` set to ``hold``, the group renamed and a
    ``variant: <label>`` label added to each rule (so its alerts are told
    apart from the production rules loaded beside it). Text rewriting, so
    the expressions stay exactly the file's apart from their durations."""
    text = re.sub(r"^(\s*)- name: robocall-shield$", rf"\1- name: {group}", text, flags=re.M)
    assert f"- name: {group}" in text, "group robocall-shield not found"
    text = re.sub(r"^(\s*)for: \S+$", rf"\1for: {hold}", text, flags=re.M)
    text = re.sub(r"^(\s*)labels:\n", rf"\1labels:\n\1  variant: {label}\n", text, flags=re.M)
    out = []
    in_expr = False
    for line in text.splitlines(keepends=True):
        stripped = line.strip()
        # expr: one line, or a block scalar (|) running until the next key
        if stripped.startswith("expr:"):
            in_expr = True
        elif re.match(r"^\s*(for|labels|annotations|- alert|- record):", line):
            in_expr = False
        out.append(shorten_expr(line, factor) if in_expr else line)
    return "".join(out)
