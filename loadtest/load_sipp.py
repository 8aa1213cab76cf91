"""Load test: proxy CPU-seconds per 1000 calls at a fixed call rate, with SIPp.

One SIPp UAC sends calls at --rate through the target to one SIPp UAS (the
"switch"). Callers come from an injection file in which every
--block-every-th caller is on the proxy's block list, so by default 90% of
the calls complete (INVITE, 100, 180, 200, ACK, BYE, 200: seven datagrams in
and seven out of the proxy) and 10% are blocked (INVITE, 603+ from the
proxy, ACK absorbed by it).

Targets (--target):
  proxy  robocall-shield serve, one worker, verdict log to a file by default
  bare   loadtest/bare_forwarder.py: uvloop datagram forwarding, no SIP
         parsing; the reference floor, measured by the same harness
  both   bare, then proxy (default)

CPU is utime+stime from /proc/PID/stat of every process of the target (the
proxy's verdict-log thread included), read before and after a steady-state
window that skips --warmup seconds at the start and the last --tail seconds.
Calls in the window are counted by the target itself (proxy: screened
INVITEs from /metrics; bare: INVITEs forwarded). A whole-run figure (from
just before the UAC starts until it exits, divided by the calls SIPp made) is
reported as a cross-check.

The machine's cores are shared: SIPp UAC and UAS run beside the target and
take CPU too. A target at ~100% of a core with failed calls and kernel UDP
drops did not keep up, and the run says so. Sending on loopback delivers the
datagram into the receiver's socket within the sender's system call, so each
side's CPU includes that delivery.

    .venv/bin/python loadtest/load_sipp.py [--rate 2000] [--duration 15] [--target both]
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import platform
import pstats
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from procs import (
    Processes,
    descendants,
    free_port,
    proc_cpu,
    proc_times,
    show_log_tails,
    source_version,
    thread_cpu,
    udp_bound,
    udp_errors,
    wait_for,
    write_result,
)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SCENARIOS = HERE / "scenarios"
RESULTS = HERE / "results"
HOST = "127.0.0.1"
BLOCKED = "+12125550100"
CLK_TCK = os.sysconf("SC_CLK_TCK")
REFERENCE_BARE = 0.06  # CPU-s per 1000 calls the issue cites for a bare forwarder


# -- processes and CPU --------------------------------------------------------


class Target:
    name = ""
    proc: subprocess.Popen[bytes]

    def start(self, procs: Processes, work: Path, sip_port: int, uas_port: int) -> None:
        raise NotImplementedError

    def calls(self) -> int:
        """New calls (INVITEs) the target has handled so far."""
        raise NotImplementedError

    def counters(self) -> dict[str, float]:
        return {}

    def user_system(self) -> tuple[float, float]:
        times = [proc_times(f"/proc/{p}/stat") for p in descendants(self.proc.pid)]
        return sum(t[0] for t in times), sum(t[1] for t in times)

    def describe(self) -> str:
        return self.name

    def finish(self, procs: Processes) -> None:
        """After the measurement, before everything is stopped."""


class ProxyTarget(Target):
    name = "proxy"

    def __init__(self, verdict_log: bool, profile: Path | None = None, loop: str = "") -> None:
        self.verdict_log = verdict_log
        self.profile = profile
        self.loop = loop  # "" = the proxy's default (uvloop)
        self.admin_port = 0
        self.work = Path()

    def start(self, procs: Processes, work: Path, sip_port: int, uas_port: int) -> None:
        self.admin_port = free_port()
        vlog = str(work / "verdicts.jsonl") if self.verdict_log else ""
        config = work / "proxy.toml"
        config.write_text(
            f'[sip]\nhost = "{HOST}"\nport = {sip_port}\ntransports = ["udp"]\n'
            "record_route = false\n\n"
            f'[[switches]]\nname = "uas"\nhost = "{HOST}"\nport = {uas_port}\n\n'
            "[routing]\nhealth_checks = false\n\n"
            f'[admin]\nhost = "{HOST}"\nport = {self.admin_port}\n\n'
            f'[log]\nlevel = "info"\nverdict_log = "{vlog}"\n\n'
            f'[screening]\nblock = ["{BLOCKED}"]\n'
        )
        exe = ROOT / ".venv" / "bin" / "robocall-shield"
        cmd = [str(exe) if exe.exists() else "robocall-shield", "serve", "--config", str(config)]
        if self.loop:
            cmd += ["--loop", self.loop]
        if self.profile is not None:
            # cProfile writes its file when serve() returns on SIGTERM.
            prof = str(work / "proxy.prof")
            cmd = [sys.executable, "-m", "cProfile", "-o", prof, "-m", "proxy", *cmd[1:]]
        self.work = work
        self.proc = procs.start("proxy", cmd, work, work / "proxy.log")
        wait_for("proxy /readyz", lambda: self._get("/readyz")[0] == 200, 20, self.proc)

    def _get(self, path: str) -> tuple[int, str]:
        url = f"http://{HOST}:{self.admin_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, ""
        except http.client.HTTPException as exc:  # e.g. a connection closed early
            raise OSError(str(exc)) from exc

    def counters(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for line in self._get("/metrics")[1].splitlines():
            if line.startswith("rs_") and "_created" not in line and "_bucket" not in line:
                key, _, value = line.rpartition(" ")
                out[key] = float(value)
        return out

    def calls(self) -> int:
        c = self.counters()
        return int(sum(v for k, v in c.items() if k.startswith("rs_screening_verdicts_total")))

    def describe(self) -> str:
        text = f"proxy (verdict log {'to a file' if self.verdict_log else 'off'}"
        text += f", {self.loop} loop)" if self.loop else ")"
        return text + (" under cProfile: CPU figures inflated" if self.profile else "")

    def finish(self, procs: Processes) -> None:
        if self.profile is None:
            return
        procs.stop(self.proc)
        out = io.StringIO()
        stats = pstats.Stats(str(self.work / "proxy.prof"), stream=out)
        stats.sort_stats("tottime").print_stats(30)
        out.write("\n")
        stats.sort_stats("cumulative").print_stats(30)
        self.profile.parent.mkdir(parents=True, exist_ok=True)
        self.profile.write_text(out.getvalue())
        print(f"load_sipp: proxy profile in {self.profile}")


class BareTarget(Target):
    name = "bare"

    def start(self, procs: Processes, work: Path, sip_port: int, uas_port: int) -> None:
        self.control_port = free_port()
        cmd = [
            sys.executable,
            str(HERE / "bare_forwarder.py"),
            "--host",
            HOST,
            "--port",
            str(sip_port),
            "--upstream-port",
            str(uas_port),
            "--control-port",
            str(self.control_port),
        ]
        self.proc = procs.start("bare", cmd, work, work / "bare.log")
        wait_for("bare forwarder", lambda: self._stats() is not None, 20, self.proc)

    def _stats(self) -> dict[str, int] | None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(1.0)
            s.sendto(b"stats", (HOST, self.control_port))
            try:
                result: dict[str, int] = json.loads(s.recv(4096))
            except TimeoutError:
                return None
            return result

    def calls(self) -> int:
        stats = self._stats()
        return stats["invites"] if stats else 0

    def counters(self) -> dict[str, float]:
        return {k: float(v) for k, v in (self._stats() or {}).items()}

    def describe(self) -> str:
        return "bare uvloop forwarder (no SIP parsing)"


# -- measuring ------------------------------------------------------------------


@dataclass
class Sample:
    t: float
    target_cpu: float
    target_user: float
    target_system: float
    sipp_cpu: float
    calls: int
    udp: dict[str, int]


def sample(target: Target, sipp: list[subprocess.Popen[bytes]]) -> Sample:
    user, system = target.user_system()
    return Sample(
        t=time.monotonic(),
        target_cpu=user + system,
        target_user=user,
        target_system=system,
        sipp_cpu=sum(proc_cpu(p.pid) for p in sipp),
        calls=target.calls(),
        udp=udp_errors(),
    )


@dataclass
class Window:
    seconds: float
    calls: int
    call_rate: float
    target_cpu_s: float
    target_system_share: float  # of target_cpu_s: kernel time (syscalls, loopback delivery)
    target_cpu_per_1000_calls: float | None
    target_core_utilisation: float  # 1.0 = one core fully busy
    sipp_core_utilisation: float
    udp_rcvbuf_errors: int


def window(a: Sample, b: Sample) -> Window:
    dt = b.t - a.t
    calls = b.calls - a.calls
    cpu = b.target_cpu - a.target_cpu
    return Window(
        seconds=round(dt, 3),
        calls=calls,
        call_rate=round(calls / dt, 1) if dt > 0 else 0.0,
        target_cpu_s=round(cpu, 3),
        target_system_share=round((b.target_system - a.target_system) / cpu, 3) if cpu else 0.0,
        target_cpu_per_1000_calls=round(cpu / calls * 1000, 4) if calls else None,
        target_core_utilisation=round(cpu / dt, 3) if dt > 0 else 0.0,
        sipp_core_utilisation=round((b.sipp_cpu - a.sipp_cpu) / dt, 3) if dt > 0 else 0.0,
        udp_rcvbuf_errors=b.udp["RcvbufErrors"] - a.udp["RcvbufErrors"],
    )


def read_sipp_csv(path: Path) -> dict[str, str]:
    """Header and last row of a SIPp ;-separated statistics file."""
    lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    if len(lines) < 2:
        return {}
    return dict(zip(lines[0].split(";"), lines[-1].split(";"), strict=False))


def sipp_numbers(work: Path, stat_file: Path) -> dict[str, int]:
    stats = read_sipp_csv(stat_file) if stat_file.exists() else {}
    counts_files = sorted(work.glob("uac_*_counts.csv"))
    counts = read_sipp_csv(counts_files[-1]) if counts_files else {}

    def num(d: dict[str, str], key: str) -> int:
        try:
            return int(float(d.get(key, "0") or 0))
        except ValueError:
            return 0

    # Count columns are "<message index>_<message>_<what>"; in uac.xml the last
    # 200 received answers the BYE and the last ACK sent is the 603's.
    def last(suffix: str) -> str:
        keys = [k for k in counts if k.endswith(suffix)]
        return max(keys, key=lambda k: int(k.split("_", 1)[0])) if keys else ""

    return {
        "calls_made": num(stats, "OutgoingCall(C)"),
        "successful": num(stats, "SuccessfulCall(C)"),
        "failed": num(stats, "FailedCall(C)"),
        "completed": num(counts, last("_200_Recv")),
        "blocked": num(counts, last("_603_Recv")),
        "blocked_ack_sent": num(counts, last("_ACK_Sent")),
        "retransmissions": num(stats, "Retransmissions(C)"),
        "timeouts_on_recv": num(stats, "FailedTimeoutOnRecv(C)"),
        "max_udp_retrans": num(stats, "FailedMaxUDPRetrans(C)"),
        "unexpected_messages": num(stats, "FailedUnexpectedMessage(C)"),
    }


@dataclass
class RunResult:
    target: str
    description: str
    rate_requested: int
    calls_requested: int
    uac_exit_code: int | None
    wall_seconds: float
    good_call_rate: float  # completed + blocked calls per second of the UAC's run
    loadavg_before: float  # 1-min load average: other work sharing the cores
    kept_up: bool  # no failed call, no kernel drop: the CPU figure is a steady state
    window: Window
    whole_run: dict[str, Any]
    sipp: dict[str, int]
    counters: dict[str, float] = field(default_factory=dict)
    udp_kernel: dict[str, int] = field(default_factory=dict)
    threads_cpu_s: dict[str, float] = field(default_factory=dict)  # whole life of the target


def run_one(target: Target, args: argparse.Namespace) -> RunResult:
    sipp_bin = shutil.which("sipp")
    if sipp_bin is None:
        raise SystemExit("load_sipp: sipp not found (make system-deps installs sip-tester)")
    work = Path(tempfile.mkdtemp(prefix=f"rs-load-{target.name}-"))
    procs = Processes()
    total_calls = args.rate * args.duration
    loadavg = round(os.getloadavg()[0], 2)
    try:
        sip_port, uas_port, uac_port = free_port(), free_port(), free_port()
        # Every block_every-th caller is blocked; SEQUENTIAL cycles through them.
        callers = [
            BLOCKED if i == 0 else f"+1201555{1000 + i:04d}" for i in range(args.block_every)
        ]
        (work / "callers.csv").write_text("SEQUENTIAL\n" + "".join(f"{c};\n" for c in callers))
        uas_cmd = [sipp_bin, "-sf", str(SCENARIOS / "uas.xml"), "-i", HOST, "-p", str(uas_port)]
        uas_cmd += ["-nostdin", "-nd", "-recv_timeout", "10000", "-buff_size", "4194304"]
        uas = procs.start("uas", uas_cmd, work, work / "uas.log")
        wait_for("SIPp UAS", lambda: udp_bound(uas_port), 10, uas)
        target.start(procs, work, sip_port, uas_port)

        stat_file = work / "uac_stat.csv"
        uac_cmd = [sipp_bin, f"{HOST}:{sip_port}", "-sf", str(SCENARIOS / "uac.xml")]
        uac_cmd += ["-inf", str(work / "callers.csv"), "-i", HOST, "-p", str(uac_port)]
        uac_cmd += ["-r", str(args.rate), "-rp", "1000", "-m", str(total_calls)]
        uac_cmd += ["-l", str(max(1000, args.rate * 5)), "-nd", "-nostdin"]
        uac_cmd += ["-recv_timeout", "5000", "-timeout", f"{args.duration * 3 + 20}s"]
        uac_cmd += ["-buff_size", "4194304", "-trace_stat", "-stf", str(stat_file), "-fd", "1"]
        uac_cmd += ["-trace_counts"]

        time.sleep(0.5)  # let the target go idle after start-up
        s0 = sample(target, [uas])
        t_start = time.monotonic()
        uac = procs.start("uac", uac_cmd, work, work / "uac.log")
        sipp = [uac, uas]

        def sleep_until(t: float) -> None:
            while time.monotonic() < t and uac.poll() is None:
                time.sleep(0.05)

        sleep_until(t_start + args.warmup)
        a = sample(target, sipp)
        sleep_until(t_start + args.duration - args.tail)
        b = sample(target, sipp)
        try:
            uac.wait(timeout=args.duration * 3 + 30)
        except subprocess.TimeoutExpired:
            print("load_sipp: UAC did not finish in time; stopping it", file=sys.stderr)
            procs.stop(uac, signal.SIGUSR1)  # SIPp quits cleanly on SIGUSR1
        wall = time.monotonic() - t_start
        time.sleep(0.5)  # the last ACKs and 200s reach the target
        c = sample(target, [uas])

        numbers = sipp_numbers(work, stat_file)
        run_cpu = c.target_cpu - s0.target_cpu
        made = numbers["calls_made"]
        whole = {
            "seconds": round(c.t - s0.t, 3),
            "calls": made,
            "target_cpu_s": round(run_cpu, 3),
            "target_cpu_per_1000_calls": round(run_cpu / made * 1000, 4) if made else None,
        }
        udp = {k: c.udp[k] - s0.udp[k] for k in c.udp}
        result = RunResult(
            target=target.name,
            description=target.describe(),
            rate_requested=args.rate,
            calls_requested=total_calls,
            uac_exit_code=uac.returncode,
            wall_seconds=round(wall, 2),
            loadavg_before=loadavg,
            good_call_rate=round((numbers["completed"] + numbers["blocked"]) / wall, 1),
            kept_up=numbers["failed"] == 0 and udp["RcvbufErrors"] == 0,
            window=window(a, b),
            whole_run=whole,
            sipp=numbers,
            counters=target.counters(),
            udp_kernel=udp,
            threads_cpu_s=thread_cpu(target.proc.pid),
        )
        target.finish(procs)
    except BaseException:
        # Keep the logs of a run that broke, and show their ends.
        procs.stop_all()
        show_log_tails(work, f"load_sipp: {target.name}")
        raise
    finally:
        procs.stop_all()
    if args.keep:
        print(f"load_sipp: kept {work}", file=sys.stderr)
    else:
        shutil.rmtree(work, ignore_errors=True)
    return result


def summarise(runs: list[RunResult]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(r.target for r in runs):
        mine = [r for r in runs if r.target == name]
        per = [r.window.target_cpu_per_1000_calls for r in mine]
        known = [p for p in per if p is not None]
        out[name] = {
            "description": mine[0].description,
            "runs": len(mine),
            "cpu_per_1000_calls": round(statistics.median(known), 4) if known else None,
            "cpu_per_1000_calls_all": per,
            "call_rate": round(statistics.median(r.window.call_rate for r in mine), 1),
            "core_utilisation": statistics.median(r.window.target_core_utilisation for r in mine),
            "kept_up": sum(r.kept_up for r in mine),
        }
    return out


def print_run(r: RunResult) -> None:
    w, s = r.window, r.sipp
    print(f"\n== {r.description}")
    print(
        f"  window {w.seconds:.1f} s: {w.calls} calls at {w.call_rate:.0f} calls/s "
        f"(asked {r.rate_requested}); target CPU {w.target_cpu_s:.2f} s = "
        f"{w.target_core_utilisation * 100:.0f}% of a core "
        f"({w.target_system_share * 100:.0f}% of it in the kernel)"
    )
    per = w.target_cpu_per_1000_calls
    print(f"  >> CPU-s per 1000 calls (window): {per if per is not None else 'n/a'}")
    wr = r.whole_run
    print(
        f"  whole run {wr['seconds']:.1f} s, {wr['calls']} calls: "
        f"{wr['target_cpu_per_1000_calls']} CPU-s per 1000 calls"
    )
    print(
        f"  SIPp: made {s['calls_made']}, completed {s['completed']}, blocked {s['blocked']}, "
        f"failed {s['failed']} (recv timeouts {s['timeouts_on_recv']}, max retrans "
        f"{s['max_udp_retrans']}, unexpected {s['unexpected_messages']}), "
        f"retransmissions {s['retransmissions']}; UAC exit {r.uac_exit_code}"
    )
    print(
        f"  SIPp UAC+UAS {w.sipp_core_utilisation * 100:.0f}% of a core; load average "
        f"{r.loadavg_before:.2f} before the run ({os.cpu_count()} cores); "
        f"kernel UDP receive-buffer drops {r.udp_kernel.get('RcvbufErrors', 0)}"
    )
    shown = (
        *("rs_sip_forwarded", "rs_screening_verdicts", "rs_sip_local_replies", "rs_sip_dropped"),
        *("rs_sip_send_errors", "rs_sip_parse_errors", "datagrams", "invites"),
    )
    for key, value in sorted(r.counters.items()):
        if key.startswith(shown) and value:
            print(f"    {key} {value:.0f}")
    print(f"  good calls (completed+blocked) per second: {r.good_call_rate:.0f}")
    if len(r.threads_cpu_s) > 1:
        threads = ", ".join(f"{k}: {v:.2f} s" for k, v in r.threads_cpu_s.items())
        print(f"  CPU by thread over the target's life: {threads}")
    if not r.kept_up:
        print(
            "  !! the target did not keep up (failed calls or kernel drops): calls lost part "
            "of their messages, so CPU per call here is not a steady-state figure"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=int, default=2000, help="calls per second (default 2000)")
    ap.add_argument("--duration", type=int, default=15, help="seconds of traffic (default 15)")
    ap.add_argument("--target", choices=("both", "proxy", "bare"), default="both")
    ap.add_argument("--block-every", type=int, default=10, help="1 caller in N is blocked")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds skipped at the start")
    ap.add_argument("--tail", type=float, default=1.0, help="seconds skipped at the end")
    ap.add_argument(
        "--verdict-log", choices=("file", "off"), default="file", help="proxy verdict log"
    )
    ap.add_argument(
        "--proxy-loop",
        choices=("uvloop", "asyncio"),
        default="",
        help="pass --loop to the proxy (default: the proxy's own default, uvloop)",
    )
    ap.add_argument("--repeat", type=int, default=1, help="runs per target; median reported")
    ap.add_argument("--json", type=Path, default=RESULTS / "load_sipp.json")
    ap.add_argument(
        "--profile",
        action="store_true",
        help="run the proxy under cProfile; top entries to results/proxy_profile.txt",
    )
    ap.add_argument("--keep", action="store_true", help="keep the work dir (logs, SIPp stats)")
    args = ap.parse_args(argv)
    if args.duration < args.warmup + args.tail + 1:
        ap.error("--duration must leave a window of at least 1 s after --warmup and --tail")

    # SIGTERM (e.g. from make or CI) unwinds through the finally blocks.
    def on_term(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)

    targets: list[Target] = []
    if args.target in ("both", "bare"):
        targets.append(BareTarget())
    if args.target in ("both", "proxy"):
        profile = RESULTS / "proxy_profile.txt" if args.profile else None
        targets.append(ProxyTarget(args.verdict_log == "file", profile, args.proxy_loop))

    print(
        f"load_sipp ({source_version()}): {args.rate} calls/s for {args.duration} s "
        f"({args.rate * args.duration} calls), 1 in {args.block_every} blocked; "
        f"window skips {args.warmup:g} s + {args.tail:g} s"
    )
    print(
        f"note: {os.cpu_count()} cores shared by the target, SIPp UAC and SIPp UAS (and "
        "anything else running); figures are the target's own CPU time"
    )
    runs: list[RunResult] = []
    for target in targets:
        for _ in range(args.repeat):
            runs.append(run_one(target, args))
            print_run(runs[-1])

    summary = summarise(runs)
    print("\nsummary (median over repeats of the window figure)")
    for name, row in summary.items():
        print(
            f"  {name:<6} {row['cpu_per_1000_calls']} CPU-s per 1000 calls at "
            f"{row['call_rate']} calls/s, {row['core_utilisation'] * 100:.0f}% of a core, "
            f"kept up in {row['kept_up']}/{row['runs']} runs"
        )
    if "bare" in summary and "proxy" in summary:
        b, p = summary["bare"]["cpu_per_1000_calls"], summary["proxy"]["cpu_per_1000_calls"]
        if b and p:
            print(
                f"  proxy / bare forwarder: {p / b:.1f}x the CPU per call "
                f"(the issue cites ~{REFERENCE_BARE} for a bare forwarder)"
            )
    result = {
        "benchmark": "load_sipp",
        "source": source_version(),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "sipp": subprocess.run(
            ["sipp", "-v"], capture_output=True, text=True, timeout=10, check=False
        ).stdout.strip(),
        "rate": args.rate,
        "duration_s": args.duration,
        "block_every": args.block_every,
        "warmup_s": args.warmup,
        "tail_s": args.tail,
        "note": "SIPp UAC and UAS share the cores with the target; CPU is the target's "
        "utime+stime over the window",
        "repeat": args.repeat,
        "summary": summary,
        "runs": [asdict(r) for r in runs],
    }
    write_result(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
