"""Microbenchmark: what one INVITE costs the sans-I/O core, in microseconds.

Rows:
  parse                 proxy.sip.parse_datagram only
  parse+facts+screen    parse, call_facts, pipeline.screen
  receive (pass)        StatelessProxy.receive_datagram: a call forwarded to the switch
  receive (block)       StatelessProxy.receive_datagram: a call answered 603+ Network Blocked
  receive (180)         a response from the switch, its two Via headers on separate
                        lines or joined into one comma-separated line (as SIPp sends)
  receive (BYE)         an in-dialog BYE from the caller, forwarded to the switch
  full call (7 msgs)    INVITE, 100, 180, 200, ACK, BYE, 200 through receive_datagram
plus the per-message work the server edge adds outside the core (Prometheus
metrics and the verdict log), to explain the end-to-end figure of load_sipp.py.

Each row runs --iterations calls, --repeats times, after a warm-up; the median
and the best repeat are reported. The inputs cycle over 1024 distinct
messages (Call-ID, tags, branch and caller differ) so no cache sees one key.

    .venv/bin/python loadtest/bench_core.py [--iterations N] [--repeats R]
    .venv/bin/python loadtest/bench_core.py --profile   # cProfile of full calls
    .venv/bin/py-spy record -r 200 -f raw -o spy.txt -- \
        .venv/bin/python loadtest/bench_core.py --spin 20  # full calls for py-spy
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import os
import platform
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypeVar

from procs import source_version, write_result

from proxy.config import parse_config
from proxy.core import StatelessProxy
from proxy.events import Address, Event, Replied, Screened, Send
from proxy.metrics import Metrics
from proxy.routing import SwitchPool
from proxy.screening import Action, build_pipeline
from proxy.sip import call_facts, parse_datagram
from proxy.verdict_log import VerdictLog

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
BLOCKED = "+12125550100"
# The parser memoises From/To/Via/R-URI values (they recur within a call).
# Every single-message row cycles through more distinct messages than the
# memo caches hold, so each one is measured on the cold, uncached path; the
# full-call row gets cache hits only within its own call, as in real traffic.
VARIANTS = 40000
CALL_VARIANTS = 4096
# The carrier SBC in front of the proxy; the datagram comes from the address
# in its Via, so the proxy adds no received= parameter (the common case).
SBC = Address("192.0.2.10", 5060, "udp")
PROXY_HOST, PROXY_PORT = "127.0.0.1", 5060
SWITCH_HOST, SWITCH_PORT = "127.0.0.1", 5080

T = TypeVar("T")

SDP = (
    "v=0\r\n"
    "o=- 8237461 8237461 IN IP4 192.0.2.10\r\n"
    "s=-\r\n"
    "c=IN IP4 192.0.2.20\r\n"
    "t=0 0\r\n"
    "m=audio 31044 RTP/AVP 0 8 18 101\r\n"
    "a=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:18 G729/8000\r\n"
    "a=fmtp:18 annexb=no\r\n"
    "a=rtpmap:101 telephone-event/8000\r\n"
    "a=fmtp:101 0-15\r\n"
    "a=ptime:20\r\n"
    "a=sendrecv\r\n"
)


@dataclass(frozen=True)
class CallIds:
    call_id: str
    from_tag: str
    branch: str
    caller: str
    callee: str


def call_ids(n: int, caller: str) -> CallIds:
    return CallIds(
        call_id=f"{n:08x}-4c1e-9b7a-{n * 7919 % 65536:04x}@192.0.2.10",
        from_tag=f"{n * 2654435761 % 2**32:08x}",
        branch=f"z9hG4bK-{n:06d}-b3c9e1",
        caller=caller,
        callee=f"+1312555{n % 10000:04d}",
    )


def join(lines: list[str], body: str = "") -> bytes:
    lines = [*lines, f"Content-Length: {len(body.encode())}"]
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


def invite(c: CallIds) -> bytes:
    """A carrier-style INVITE: 16 header fields and an SDP offer, ~1.1 kB."""
    return join(
        [
            f"INVITE sip:{c.callee}@{PROXY_HOST}:{PROXY_PORT};user=phone SIP/2.0",
            f"Via: SIP/2.0/UDP {SBC.host}:{SBC.port};branch={c.branch}",
            "Max-Forwards: 69",
            f'From: "ACME WIDGETS" <sip:{c.caller}@{SBC.host};user=phone>;tag={c.from_tag}',
            f"To: <sip:{c.callee}@{PROXY_HOST};user=phone>",
            f"Call-ID: {c.call_id}",
            "CSeq: 101 INVITE",
            f"Contact: <sip:{c.caller}@{SBC.host}:{SBC.port};transport=udp>",
            f'P-Asserted-Identity: "ACME WIDGETS" <sip:{c.caller}@{SBC.host};user=phone>',
            "Privacy: none",
            "Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, PRACK, UPDATE, INFO, REFER, NOTIFY",
            "Supported: 100rel, timer, replaces",
            "Session-Expires: 1800;refresher=uac",
            "Min-SE: 90",
            f"P-Charging-Vector: icid-value={c.from_tag}{c.call_id[:8]};"
            "icid-generated-at=192.0.2.10;orig-ioi=carrier-a.example.net",
            "User-Agent: SBC-7000/4.2.1",
            "Content-Type: application/sdp",
        ],
        SDP,
    )


def in_dialog(c: CallIds, method: str, cseq: int, to_tag: str, branch: str) -> bytes:
    """ACK or BYE from the caller, sent to the proxy (no Record-Route needed)."""
    return join(
        [
            f"{method} sip:{c.callee}@{PROXY_HOST}:{PROXY_PORT};user=phone SIP/2.0",
            f"Via: SIP/2.0/UDP {SBC.host}:{SBC.port};branch={branch}",
            "Max-Forwards: 69",
            f'From: "ACME WIDGETS" <sip:{c.caller}@{SBC.host};user=phone>;tag={c.from_tag}',
            f"To: <sip:{c.callee}@{PROXY_HOST};user=phone>;tag={to_tag}",
            f"Call-ID: {c.call_id}",
            f"CSeq: {cseq} {method}",
            "User-Agent: SBC-7000/4.2.1",
        ]
    )


def response_to(forwarded: bytes, status: int, reason: str, to_tag: str, sdp: bool) -> bytes:
    """The switch's response to a request the proxy forwarded to it: the
    Via stack, From, To, Call-ID and CSeq copied as RFC 3261 §8.2.6.2 says."""
    head = forwarded.split(b"\r\n\r\n", 1)[0].decode()
    lines = [f"SIP/2.0 {status} {reason}"]
    for line in head.split("\r\n")[1:]:
        name = line.split(":", 1)[0].strip().lower()
        if name == "to" and status > 100 and ";tag=" not in line:
            line += f";tag={to_tag}"
        if name in ("via", "from", "to", "call-id", "cseq"):
            lines.append(line)
    if status > 100:
        lines.append(f"Contact: <sip:switch@{SWITCH_HOST}:{SWITCH_PORT}>")
        lines.append("Server: Switch/1.0")
    if sdp:
        lines.append("Content-Type: application/sdp")
        return join(lines, SDP.replace("192.0.2.20", "198.51.100.7"))
    return join(lines)


def join_vias(response: bytes) -> bytes:
    """The same response with its Via lines joined into one comma-separated
    Via, as SIPp's [last_Via:] and some switches send it."""
    head, body = response.split(b"\r\n\r\n", 1)
    lines = head.split(b"\r\n")
    vias = [ln[len(b"Via: ") :] for ln in lines if ln.startswith(b"Via: ")]
    first = next(i for i, ln in enumerate(lines) if ln.startswith(b"Via: "))
    rest = [ln for ln in lines if not ln.startswith(b"Via: ")]
    rest.insert(first, b"Via: " + b", ".join(vias))
    return b"\r\n".join(rest) + b"\r\n\r\n" + body


def make_proxy() -> StatelessProxy:
    cfg = parse_config(
        {
            "sip": {"host": PROXY_HOST, "port": PROXY_PORT},
            "switches": [{"name": "sw", "host": SWITCH_HOST, "port": SWITCH_PORT}],
            "routing": {"health_checks": False},
            "screening": {"block": [BLOCKED]},
            # the clock stands still here: buckets that never run dry, still consulted
            "flood": {"per_ip_burst": 10_000_000, "per_caller_burst": 10_000_000},
        }
    )
    pool = SwitchPool(cfg.switches, cfg.routing)
    return StatelessProxy(cfg, build_pipeline(cfg.screening), pool, "bench")


def only_send(events: list[Event]) -> bytes:
    sends = [e for e in events if isinstance(e, Send)]
    if len(sends) != 1:
        raise SystemExit(f"bench_core: expected one Send, got {events!r}")
    return sends[0].data


def full_call(core: StatelessProxy, n: int) -> list[bytes]:
    """The seven datagrams the proxy receives for one completed call, made
    by running the call through the core once (responses need its Via)."""
    c = call_ids(n, f"+1201555{n % 10000:04d}")
    inv = invite(c)
    fwd_inv = only_send(core.receive_datagram(inv, SBC, 0.0))
    tag = f"sw{n:06x}"
    r100 = response_to(fwd_inv, 100, "Trying", tag, sdp=False)
    r180 = response_to(fwd_inv, 180, "Ringing", tag, sdp=False)
    r200 = response_to(fwd_inv, 200, "OK", tag, sdp=True)
    ack = in_dialog(c, "ACK", 101, tag, f"z9hG4bK-{n:06d}-ack")
    bye = in_dialog(c, "BYE", 102, tag, f"z9hG4bK-{n:06d}-bye")
    fwd_bye = only_send(core.receive_datagram(bye, SBC, 0.0))
    bye200 = response_to(fwd_bye, 200, "OK", tag, sdp=False)
    msgs = [inv, r100, r180, r200, ack, bye, bye200]
    for m in msgs:  # every one must go out again, nothing dropped
        only_send(core.receive_datagram(m, SBC, 0.0))
    return msgs


@dataclass
class Row:
    name: str
    unit: str
    median_us: float  # wall clock (perf_counter_ns), median of the repeats
    best_us: float
    cpu_median_us: float  # thread CPU time: tells contention from slowness
    runs_us: list[float]


def _row(name: str, unit: str, runs: list[float], cpu: list[float]) -> Row:
    return Row(
        name,
        unit,
        round(statistics.median(runs), 3),
        round(min(runs), 3),
        round(statistics.median(cpu), 3),
        [round(r, 3) for r in runs],
    )


def measure(
    name: str, fn: Callable[[T], object], inputs: Sequence[T], iterations: int, repeats: int
) -> Row:
    # The input sequence is built up front so the timed loop is only the call.
    seq = [inputs[i % len(inputs)] for i in range(iterations)]
    for data in seq[: max(1000, iterations // 10)]:  # warm-up
        fn(data)
    runs: list[float] = []
    cpu: list[float] = []
    for _ in range(repeats):
        c0, t0 = time.thread_time_ns(), time.perf_counter_ns()
        for data in seq:
            fn(data)
        t1, c1 = time.perf_counter_ns(), time.thread_time_ns()
        runs.append((t1 - t0) / iterations / 1000)
        cpu.append((c1 - c0) / iterations / 1000)
    return _row(name, "us/msg", runs, cpu)


def measure_calls(
    name: str, core: StatelessProxy, calls: list[list[bytes]], iterations: int, repeats: int
) -> Row:
    """µs per call: all messages of one call back to back."""
    n_calls = max(1, iterations // len(calls[0]))
    seq = [calls[i % len(calls)] for i in range(n_calls)]
    receive = core.receive_datagram
    for call in seq[: max(200, n_calls // 10)]:
        for data in call:
            receive(data, SBC, 0.0)
    runs: list[float] = []
    cpu: list[float] = []
    for _ in range(repeats):
        c0, t0 = time.thread_time_ns(), time.perf_counter_ns()
        for call in seq:
            for data in call:
                receive(data, SBC, 0.0)
        t1, c1 = time.perf_counter_ns(), time.thread_time_ns()
        runs.append((t1 - t0) / n_calls / 1000)
        cpu.append((c1 - c0) / n_calls / 1000)
    return _row(name, "us/call", runs, cpu)


def check_inputs(core: StatelessProxy, passing: list[bytes], blocked: list[bytes]) -> None:
    """Fail loudly if the messages do not take the path the row claims."""
    ev = core.receive_datagram(passing[0], SBC, 0.0)
    acts = [e.action for e in ev if isinstance(e, Screened)]
    if acts != [Action.PASS] or not any(isinstance(e, Send) for e in ev):
        raise SystemExit(f"bench_core: passing INVITE was not forwarded: {ev!r}")
    ev = core.receive_datagram(blocked[0], SBC, 0.0)
    if not any(isinstance(e, Replied) and e.status == 603 for e in ev):
        raise SystemExit(f"bench_core: blocked INVITE did not get 603: {ev!r}")


def profile(path: Path, n_calls: int) -> None:
    """cProfile of full calls (7 messages, distinct per call, as real traffic
    is) through receive_datagram plus the edge's Metrics.record and verdict
    log; the summary goes to ``path``."""
    setup = make_proxy()
    calls = [full_call(setup, n) for n in range(CALL_VARIANTS)]
    core = make_proxy()  # a fresh core: no state from building the inputs
    metrics = Metrics(core.pool)
    seq = [calls[i % len(calls)] for i in range(n_calls)]
    receive, record = core.receive_datagram, metrics.record
    with tempfile.TemporaryDirectory() as tmp:
        vlog = VerdictLog(os.path.join(tmp, "verdicts.jsonl"))

        def run() -> None:
            for call in seq:
                for data in call:
                    events = receive(data, SBC, 0.0)
                    for ev in events:
                        if isinstance(ev, Screened):
                            vlog.write(ev, 0.0)
                    record(events)

        for call in seq[:200]:  # warm-up
            for data in call:
                receive(data, SBC, 0.0)
        prof = cProfile.Profile()
        t0 = time.thread_time_ns()
        prof.runcall(run)
        cpu_us = (time.thread_time_ns() - t0) / n_calls / 1000
        vlog.close()
    t0 = time.thread_time_ns()
    for call in seq:
        for data in call:
            record(receive(data, SBC, 0.0))
    plain_us = (time.thread_time_ns() - t0) / n_calls / 1000
    out = io.StringIO()
    out.write(
        f"robocall-shield {source_version()} profile: Python {platform.python_version()}, "
        f"{n_calls} full calls (INVITE,100,180,200,ACK,BYE,200; {CALL_VARIANTS} distinct)\n"
        f"through StatelessProxy.receive_datagram + Metrics.record + VerdictLog.write.\n"
        f"CPU per call: {plain_us:.1f} us without the profiler, {cpu_us:.1f} us under cProfile.\n"
        f"Command: .venv/bin/python loadtest/bench_core.py --profile\n\n"
    )
    for key in ("tottime", "cumulative"):
        stats = pstats.Stats(prof, stream=out)
        stats.strip_dirs().sort_stats(key).print_stats(30)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(out.getvalue())
    print(out.getvalue().split("\n\n")[0])
    print(f"wrote {path}")


def spin(seconds: float) -> None:
    """Full calls through receive_datagram and Metrics.record for ``seconds``:
    a steady target for a sampling profiler such as py-spy."""
    setup = make_proxy()
    calls = [full_call(setup, n) for n in range(CALL_VARIANTS)]
    core = make_proxy()
    receive, record = core.receive_datagram, Metrics(core.pool).record
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for call in calls:
            for data in call:
                record(receive(data, SBC, 0.0))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iterations", type=int, default=20000, help="calls per repeat")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", type=Path, default=RESULTS / "bench_core.json")
    ap.add_argument(
        "--profile",
        nargs="?",
        type=Path,
        const=RESULTS / "profile_core.txt",
        help="write a cProfile summary of full calls instead of benchmarking",
    )
    ap.add_argument("--spin", type=float, metavar="SECONDS", help="run full calls (for py-spy)")
    args = ap.parse_args(argv)
    if args.spin:
        spin(args.spin)
        return 0
    if args.profile is not None:
        profile(args.profile, 8192)
        return 0
    it, rep = args.iterations, args.repeats

    core = make_proxy()
    host = SBC.host
    passing = [invite(call_ids(n, f"+1201555{n % 10000:04d}")) for n in range(VARIANTS)]
    blocked = [invite(call_ids(n, BLOCKED)) for n in range(VARIANTS)]
    check_inputs(core, passing, blocked)
    calls = [full_call(core, n) for n in range(CALL_VARIANTS)]
    ringing = [call[2] for call in calls]
    ringing_joined = [join_vias(r) for r in ringing]
    pipeline = core.pipeline

    def parse(data: bytes) -> object:
        return parse_datagram(data)

    def parse_screen(data: bytes) -> object:
        req = parse_datagram(data)
        return pipeline.screen(call_facts(req, host))  # type: ignore[arg-type]

    def receive(data: bytes) -> object:
        return core.receive_datagram(data, SBC, 0.0)

    def noop(data: bytes) -> object:
        return data

    rows = [
        measure("loop overhead (no-op)", noop, passing, it, rep),
        measure("parse", parse, passing, it, rep),
        measure("parse+facts+screen", parse_screen, passing, it, rep),
        measure("receive_datagram (pass)", receive, passing, it, rep),
        measure("receive_datagram (block)", receive, blocked, it, rep),
        measure("receive_datagram (180, 2 Via lines)", receive, ringing, it, rep),
        measure("receive_datagram (180, 1 joined Via)", receive, ringing_joined, it, rep),
        measure("receive_datagram (BYE in dialog)", receive, [call[5] for call in calls], it, rep),
        measure_calls("full call, 7 msgs, core only", core, calls, it, rep),
    ]

    # What the server edge does per message on top of the core (server.Worker
    # .dispatch): Prometheus counters for every event, a verdict-log line per
    # screened call. Measured on the events of a passing INVITE.
    metrics = Metrics(core.pool)
    pass_events = [core.receive_datagram(d, SBC, 0.0) for d in passing]
    rows.append(measure("edge: Metrics.record (pass INVITE)", metrics.record, pass_events, it, rep))
    relay_events = [core.receive_datagram(d, SBC, 0.0) for d in ringing]
    rows.append(
        measure("edge: Metrics.record (relayed 180)", metrics.record, relay_events, it, rep)
    )
    with tempfile.TemporaryDirectory() as tmp:
        vlog = VerdictLog(os.path.join(tmp, "verdicts.jsonl"))
        screened = [next(e for e in evs if isinstance(e, Screened)) for evs in pass_events]
        rows.append(measure("edge: VerdictLog.write (file)", vlog.write, screened, it, rep))
        vlog.close()

    print(
        f"robocall-shield {source_version()} core microbenchmark: "
        f"Python {platform.python_version()}, "
        f"{it} iterations x {rep} repeats, gc {'on' if gc.isenabled() else 'off'}"
    )
    n_headers = passing[0].split(b"\r\n\r\n")[0].count(b"\r\n")
    print(
        f"INVITE {len(passing[0])} bytes ({n_headers} header fields + "
        f"{len(SDP)}-byte SDP); full call = INVITE,100,180,200,ACK,BYE,200 "
        f"({sum(len(m) for m in calls[0])} bytes in)"
    )
    w = max(len(r.name) for r in rows)
    print(f"{'benchmark':<{w}}  {'median':>9}  {'best':>9}  {'cpu med':>9}  unit")
    for r in rows:
        print(
            f"{r.name:<{w}}  {r.median_us:>9.2f}  {r.best_us:>9.2f}  {r.cpu_median_us:>9.2f}"
            f"  {r.unit}"
        )
    print(
        "median/best: wall clock (perf_counter_ns) over the repeats; cpu med: thread CPU "
        "time,\nwhich stays put when other processes compete for the CPU. Loop overhead "
        "is included, not subtracted."
    )

    result = {
        "benchmark": "bench_core",
        "source": source_version(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "iterations": it,
        "repeats": rep,
        "gc_enabled": gc.isenabled(),
        "invite_bytes": len(passing[0]),
        "call_bytes_in": sum(len(m) for m in calls[0]),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "rows": [asdict(r) for r in rows],
    }
    write_result(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
