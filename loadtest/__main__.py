"""python -m loadtest: this proxy side by side with Kamailio and a bare forwarder.

For each target (robocall-shield; Kamailio with Debian's default allocators;
Kamailio with -x tlsf -X tlsf; a bare uvloop forwarder), on the same SIPp
work (blocked, labelled, completed and cancelled calls from one generated
blocklist):

  1. search: the highest rate with fewer than 0.1% failed calls, doubling
     from --start-rate and then halving the gap (--max-steps runs at most)
  2. cost:   CPU-seconds per 1000 calls at --cost-rate (or at the found
     maximum when the target cannot sustain it)
  3. latency: the µs probe (INVITE->603 and BYE->200, through the target and
     direct), idle and at half the maximum rate
  4. overload: 1.5x the maximum: final responses within 2 s, retransmissions,
     503s, completed calls against the maximum

Every run is bounded in calls and in time; the JSON and Markdown go to
loadtest/results/ (comparison.json, comparison.md).

    .venv/bin/python -m loadtest [--quick] [--targets proxy,kamailio,...]
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import Any

from loadtest.latency_probe import probe
from loadtest.procs import (
    HOST,
    Processes,
    free_port,
    source_version,
    udp_bound,
    wait_for,
    write_result,
)
from loadtest.report import markdown, ratios
from loadtest.runs import LoadRun, Runner, environment, find_max_rate, overload_summary
from loadtest.targets import Target, TargetOptions, make_targets, snapshot_source, source_env
from loadtest.workload import Mix, Workload, WorkloadError, prepare

RESULTS = Path(__file__).resolve().parent / "results"
ALL_TARGETS = ("proxy", "kamailio", "kamailio-tlsf", "bare")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m loadtest", description=(__doc__ or "").split("\n\n")[0]
    )
    ap.add_argument("--targets", default=",".join(ALL_TARGETS), help="comma-separated, in order")
    ap.add_argument("--quick", action="store_true", help="shorter runs and fewer search steps")
    ap.add_argument("--fixed-rate", type=int, help="no search: one run at this rate per target")
    ap.add_argument("--start-rate", type=int, default=500)
    ap.add_argument("--ceiling", type=int, default=8000, help="highest rate the search tries")
    ap.add_argument("--max-steps", type=int, default=6, help="search runs per target")
    ap.add_argument("--step-seconds", type=float, default=8.0, help="seconds of calls per run")
    ap.add_argument("--cost-rate", type=int, default=3000)
    ap.add_argument("--probe-samples", type=int, default=400, help="round trips of each kind")
    ap.add_argument("--no-latency", action="store_true")
    ap.add_argument("--no-overload", action="store_true")
    ap.add_argument("--blocked-share", type=float, default=0.10)
    ap.add_argument("--labelled-share", type=float, default=0.0)
    ap.add_argument("--cancel-share", type=float, default=0.0)
    ap.add_argument("--list-size", type=int, default=100_000, help="numbers in the blocklist")
    ap.add_argument(
        "--record-route",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="proxy [sip] record_route and Kamailio record_route() (default on)",
    )
    ap.add_argument(
        "--workers", type=int, help="write [sip] workers = N in the proxy's TOML (0: one per CPU)"
    )
    ap.add_argument(
        "--worker-balance",
        choices=("source", "message"),
        default="",
        help="write [sip] worker_balance (with --workers)",
    )
    ap.add_argument(
        "--worker-ports",
        action="store_true",
        help="write [sip] worker_port_base: each worker a port of its own (with --workers)",
    )
    ap.add_argument("--no-verdict-log", action="store_true", help="proxy verdict log off")
    ap.add_argument(
        "--source",
        default="worktree",
        help="proxy code to measure: 'worktree' (copied at the start, default) or a git revision",
    )
    ap.add_argument("--json", type=Path, default=RESULTS / "comparison.json")
    ap.add_argument("--markdown", type=Path, default=RESULTS / "comparison.md")
    ap.add_argument("--keep", action="store_true", help="keep the work dirs (logs, SIPp stats)")
    args = ap.parse_args(argv)
    if args.quick:
        args.max_steps = min(args.max_steps, 4)
        args.step_seconds = min(args.step_seconds, 4.0)
        args.probe_samples = min(args.probe_samples, 150)
    names = [n.strip() for n in args.targets.split(",") if n.strip()]
    unknown = [n for n in names if n not in ALL_TARGETS]
    if unknown or not names:
        ap.error(f"--targets: unknown {unknown}; choose from {', '.join(ALL_TARGETS)}")
    if any(n.startswith("kamailio") for n in names) and shutil.which("kamailio") is None:
        ap.error("kamailio is not installed: run `make bench-deps` or leave it out of --targets")
    args.target_names = names
    for name in ("start_rate", "ceiling", "max_steps", "cost_rate", "probe_samples", "list_size"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.fixed_rate is not None and args.fixed_rate < 1:
        ap.error("--fixed-rate must be at least 1")
    if not 0.5 <= args.step_seconds <= 120:
        ap.error("--step-seconds must be between 0.5 and 120")
    if args.workers is not None and not 0 <= args.workers <= 64:
        ap.error("--workers must be between 0 (one per CPU) and 64")
    try:
        args.mix = Mix(args.blocked_share, args.labelled_share, args.cancel_share)
    except WorkloadError as exc:
        ap.error(str(exc))
    return args


def say(text: str) -> None:
    print(text, flush=True)


def show(run: LoadRun) -> None:
    verdict = "ok " if run.passed else "BAD"
    say(
        f"  [{verdict}] {run.target:<13} {run.rate:>5}/s: made {run.calls_made}, completed "
        f"{run.completed}, blocked {run.blocked}, labelled {run.labelled}, cancelled "
        f"{run.cancelled}, shed {run.shed}, failed {run.failed}, retrans "
        f"{run.retransmissions}; CPU {run.cpu_per_1000_calls} s/1000 calls "
        f"({run.target_core_utilisation:.2f} cores, {run.target_processes} procs)"
        + (f" -- {run.why_not}" if run.why_not else "")
    )
    broken = [k for k, ok in run.checks.items() if not ok and k != "every call placed"]
    if broken and run.failed == 0 and run.shed == 0:
        say(f"      !! mix check failed: {', '.join(broken)} (expected {run.expected})")


def measure_latency(runner: Runner, target: Target, workload: Workload, args: argparse.Namespace,
                    rate: int) -> dict[str, Any]:  # fmt: skip
    """The probe idle and under load at ``rate``, against a responder process."""
    blocked = next(
        c for c, k in zip(_callers(workload), workload.rows, strict=True) if k == "blocked"
    )
    procs = Processes()
    work = Path(tempfile.mkdtemp(prefix="probe-", dir=runner.base))
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "loadtest.latency_probe",
        "--respond",
        str(port),
        "--seconds",
        "900",
    ]
    out: dict[str, Any] = {"loaded_rate": rate}
    try:
        responder = procs.start(
            "responder", cmd, Path(__file__).resolve().parent.parent, work / "r.log"
        )
        wait_for("probe responder", lambda: udp_bound(port), 10, responder)
        seconds = max(2.0, args.step_seconds - 2)

        def run_probe(sip_port: int, switch_port: int) -> dict[str, Any]:
            return probe(sip_port, port, blocked, args.probe_samples, seconds)

        out["idle"] = runner.idle(target, run_probe)
        if rate >= 1:

            def delayed(sip_port: int, switch_port: int) -> dict[str, Any]:
                time.sleep(1.0)  # past SIPp's start
                return run_probe(sip_port, switch_port)

            run, loaded = runner.run(target, rate, args.step_seconds, during=delayed)
            show(run)
            out["loaded"] = loaded
            out["loaded_run"] = run.as_dict()
    finally:
        procs.stop_all()
        shutil.rmtree(work, ignore_errors=True)
    for when in ("idle", "loaded"):
        if when in out:
            a = out[when]["added_us"]
            say(
                f"  latency {when:<6} added p50/p90/p99 µs: INVITE->603 "
                f"{a['invite_603']['p50']}/{a['invite_603']['p90']}/{a['invite_603']['p99']}, "
                f"BYE->200 {a['bye_200']['p50']}/{a['bye_200']['p90']}/{a['bye_200']['p99']}"
            )
    return out


def _callers(workload: Workload) -> list[str]:
    rows = workload.callers_csv.read_text().splitlines()[1:]
    return [r.split(";")[0] for r in rows if r]


def measure_target(runner: Runner, target: Target, args: argparse.Namespace) -> dict[str, Any]:
    say(f"\n== {target.name}: {target.description}")
    out: dict[str, Any] = {"description": target.description}
    if args.fixed_rate is not None:
        run, _ = runner.run(target, args.fixed_rate, args.step_seconds)
        show(run)
        search = [run]
        max_rate = run.rate if run.passed else 0
    else:
        max_rate, search = find_max_rate(
            runner, target, args.start_rate, args.ceiling, args.step_seconds, args.max_steps, show
        )
    out["max_rate"] = max_rate
    out["search"] = [r.as_dict() for r in search]
    say(f"  highest rate with < 0.1% failed calls: {max_rate} calls/s")
    cost_rate = min(args.cost_rate, max_rate) if max_rate else 0
    if cost_rate:
        reuse = [r for r in search if r.rate == cost_rate and r.passed]
        cost = reuse[0] if reuse else runner.run(target, cost_rate, args.step_seconds)[0]
        if not reuse:
            show(cost)
        out["cost"] = cost.as_dict()
        say(f"  cost at {cost_rate}/s: {cost.cpu_per_1000_calls} CPU-s per 1000 calls")
    if not args.no_latency and target.answers_probes:
        out["latency"] = measure_latency(runner, target, runner.workload, args, max_rate // 2)
    if not args.no_overload and max_rate:
        run, _ = runner.run(target, max_rate * 3 // 2, args.step_seconds)
        show(run)
        out["overload"] = overload_summary(run, max_rate)
        out["overload_run"] = run.as_dict()
        o = out["overload"]
        say(
            f"  overload {run.rate}/s: final within 2 s {o['final_within_2s_share']}, retrans/call "
            f"{o['retransmissions_per_call']} (storm: {o['storm']}), 503 {o['shed_503']}, "
            f"good calls {o['good_vs_max']} of max"
        )
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)  # unwinds through every finally: all stopped

    signal.signal(signal.SIGTERM, on_term)
    env = environment()
    started = time.monotonic()
    base = Path(tempfile.mkdtemp(prefix="rs-loadtest-"))
    source = snapshot_source(base / "source", args.source)
    version = source_version() if args.source == "worktree" else _commit(args.source)
    options = TargetOptions(
        record_route=args.record_route,
        workers=args.workers,
        worker_balance=args.worker_balance,
        worker_ports=args.worker_ports,
        verdict_log=not args.no_verdict_log,
        source=source,
    )
    targets = make_targets(args.target_names, options)
    command = "python -m loadtest " + shlex.join(argv if argv is not None else sys.argv[1:])
    say(f"loadtest ({version}): {', '.join(t.name for t in targets)}; {command}")
    say(f"note: {os.cpu_count()} cores shared by the target and SIPp UAC and UAS")
    try:
        workload = prepare(base / "workload", args.mix, args.list_size, source_env(source))
        runner = Runner(workload, base, keep=args.keep)
        results = {t.name: measure_target(runner, t, args) for t in targets}
    finally:
        if args.keep:
            say(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    result: dict[str, Any] = {
        "benchmark": "loadtest comparison",
        "source": version,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": command.strip(),
        "environment": env,
        "python": platform.python_version(),
        "sipp": _version(["sipp", "-v"]),
        "kamailio": _version(["kamailio", "-v"]) if shutil.which("kamailio") else None,
        "wall_seconds": round(time.monotonic() - started, 1),
        "mix": {
            "blocked": args.mix.blocked,
            "labelled": args.mix.labelled,
            "cancel": args.mix.cancel,
        },
        "list_size": args.list_size,
        "record_route": args.record_route,
        "workers": args.workers,
        "step_seconds": args.step_seconds,
        "host": HOST,
        "targets": results,
        "notes": [
            "CPU: utime+stime from /proc/PID/stat over each target's whole process tree, "
            "from just before the UAC starts until its last call ends, divided by the calls "
            "SIPp placed.",
            "A run passes with fewer than 0.1% failed calls, every call placed, no 503, on time.",
            "Latency added: percentile through the target minus the same percentile sent "
            "directly to the probe's responder (µs, perf_counter_ns).",
            "Overload: 1.5x the found maximum; a retransmission storm is more than 0.05 "
            "retransmissions per call.",
        ],
    }
    result["ratios"] = ratios(results)
    write_result(args.json, result)
    args.markdown.parent.mkdir(parents=True, exist_ok=True)
    args.markdown.write_text(markdown(result))
    say(f"wrote {args.markdown}\n")
    say(markdown(result))
    return 0


def _commit(revision: str) -> str:
    done = subprocess.run(
        ["git", "rev-parse", "--short", revision],
        cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True, timeout=10,
        check=False,
    )  # fmt: skip
    return f"{revision} = {done.stdout.strip()}" if done.returncode == 0 else revision


def _version(cmd: list[str]) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
    return (
        (done.stdout or done.stderr).strip().splitlines()[0] if (done.stdout or done.stderr) else ""
    )


if __name__ == "__main__":
    sys.exit(main())
