"""One bounded load run, the search for the highest clean rate, the overload run.

A run starts a fresh SIPp UAS (the switch), the target and a SIPp UAC that
places ``rate * seconds`` calls at ``rate`` per second. It is bounded in
calls (SIPp ``-m``) and in time (SIPp ``-timeout`` and a process deadline
above it). The target's CPU-seconds are read from just before the UAC
starts until the UAC has exited and the last messages have settled, and
divided by the calls SIPp placed: the same figure for every target, whether
or not it counts calls itself.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from loadtest.procs import (
    HOST,
    Processes,
    free_port,
    proc_cpu,
    show_log_tails,
    udp_bound,
    udp_errors,
    wait_for,
)
from loadtest.sipp import (
    UacFigures,
    percentiles,
    read_uac,
    read_uas_labelled,
    uac_command,
    uas_command,
)
from loadtest.targets import Target
from loadtest.workload import Workload

MAX_FAILED_SHARE = 0.001  # "fewer than 0.1% failed calls"
FINAL_WITHIN_MS = 2000.0  # overload: a final response within 2 s
STORM_RETRANS_PER_CALL = 0.05  # more retransmissions than 1 per 20 calls: a storm


@dataclass
class LoadRun:
    target: str
    rate: int
    calls_requested: int
    seconds_requested: float
    wall_seconds: float
    uac_exit_code: int | None
    calls_made: int
    completed: int
    blocked: int
    labelled: int  # labelled INVITEs that reached the switch
    shed: int
    cancelled: int
    failed: int
    retransmissions: int
    timeouts: int
    unexpected: int
    expected: dict[str, int]  # of the calls made, how many of each kind the CSV holds
    target_cpu_s: float
    cpu_per_1000_calls: float | None
    target_core_utilisation: float
    target_processes: int
    sipp_core_utilisation: float
    udp_rcvbuf_errors: int
    final_ms: dict[str, float | None]  # INVITE -> final response percentiles
    bye_ms: dict[str, float | None]  # BYE -> 200 percentiles
    final_within_2s_share: float | None
    achieved_call_rate: float
    passed: bool  # fewer than 0.1% failed, every call placed, on time
    why_not: str = ""
    checks: dict[str, bool] = field(default_factory=dict)

    @property
    def failed_share(self) -> float:
        return self.failed / self.calls_made if self.calls_made else 1.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Runner:
    """Runs load against targets in work dirs under ``base`` (kept with ``keep``)."""

    def __init__(self, workload: Workload, base: Path, keep: bool = False) -> None:
        self.workload = workload
        self.base = base
        self.keep = keep
        self.sequence = 0

    def work_dir(self, label: str) -> Path:
        self.sequence += 1
        return Path(tempfile.mkdtemp(prefix=f"{self.sequence:02d}-{label}-", dir=self.base))

    def run(
        self,
        target: Target,
        rate: int,
        seconds: float,
        during: Any = None,
    ) -> tuple[LoadRun, Any]:
        """One run at ``rate`` for ``seconds``; ``during(target_port, switch_port)``
        is called while the calls flow (the latency probe) and its value returned."""
        if rate < 1 or seconds <= 0:
            raise ValueError("rate and seconds must be positive")
        work = self.work_dir(f"{target.name}-{rate}")
        procs = Processes()
        calls = max(1, int(rate * seconds))
        extra: Any = None
        try:
            sip_port, switch_port, uac_port = free_port(), free_port(), free_port()
            uas = procs.start("uas", uas_command(switch_port), work, work / "uas.log")
            wait_for("SIPp UAS", lambda: udp_bound(switch_port), 10, uas)
            target.start(procs, work, sip_port, switch_port, self.workload)
            time.sleep(0.3)  # the target settles after start-up
            cmd = uac_command(sip_port, uac_port, self.workload.callers_csv, rate, calls, seconds)
            udp0 = udp_errors()
            cpu0, t0 = target.cpu_seconds(), time.monotonic()
            sipp0 = proc_cpu(uas.pid)
            uac = procs.start("uac", cmd, work, work / "uac.log")
            if during is not None:
                extra = during(sip_port, switch_port)
            deadline = t0 + seconds * 2 + 30
            uac_cpu = 0.0  # sampled while it lives: its exit takes it out of /proc
            while uac.poll() is None and time.monotonic() < deadline:
                uac_cpu = max(uac_cpu, proc_cpu(uac.pid))
                time.sleep(0.1)
            if uac.poll() is None:
                print("loadtest: UAC still running at its deadline; stopping it", file=sys.stderr)
                procs.stop(uac, signal.SIGUSR1)  # SIPp quits cleanly on SIGUSR1
            wall = time.monotonic() - t0
            sipp_cpu = proc_cpu(uas.pid) - sipp0
            time.sleep(0.3)  # the last ACKs reach the target and the switch
            cpu = target.cpu_seconds() - cpu0
            processes = target.process_count()
            udp1 = udp_errors()
            procs.stop_all()  # SIPp writes its final counts on exit
            figures = read_uac(work)
            labelled = read_uas_labelled(work)
            result = self._result(
                target, rate, calls, seconds, wall, uac.returncode, figures, labelled,
                cpu, processes, sipp_cpu + uac_cpu, udp1["RcvbufErrors"] - udp0["RcvbufErrors"],
            )  # fmt: skip
        except BaseException:
            procs.stop_all()
            show_log_tails(work, f"loadtest: {target.name}")
            raise
        finally:
            procs.stop_all()
        if not self.keep:
            shutil.rmtree(work, ignore_errors=True)
        return result, extra

    def idle(self, target: Target, during: Any) -> Any:
        """Start the switch and the target, call ``during(target_port, switch_port)``
        with no load, stop everything; return what it returned."""
        work = self.work_dir(f"{target.name}-idle")
        procs = Processes()
        try:
            sip_port, switch_port = free_port(), free_port()
            uas = procs.start("uas", uas_command(switch_port), work, work / "uas.log")
            wait_for("SIPp UAS", lambda: udp_bound(switch_port), 10, uas)
            target.start(procs, work, sip_port, switch_port, self.workload)
            time.sleep(0.3)
            return during(sip_port, switch_port)
        finally:
            procs.stop_all()
            if not self.keep:
                shutil.rmtree(work, ignore_errors=True)

    def _result(
        self,
        target: Target,
        rate: int,
        calls: int,
        seconds: float,
        wall: float,
        exit_code: int | None,
        f: UacFigures,
        labelled: int,
        cpu: float,
        processes: int,
        sipp_cpu: float,
        rcvbuf_errors: int,
    ) -> LoadRun:
        expected = self.workload.expected(f.calls_made)
        within = sum(1 for ms in f.final_ms if ms <= FINAL_WITHIN_MS)
        # -trace_rtt samples every call's final response; a call without one has none
        within_share = within / f.calls_made if f.calls_made else None
        checks = {
            "every call placed": f.calls_made == calls,
            "blocked calls as generated": f.blocked == expected["blocked"],
            "cancelled calls as generated": f.cancelled == expected["cancel"],
            "labelled calls at least as generated": labelled >= expected["labelled"],
        }
        why = []
        if f.calls_made < calls:
            why.append(f"placed {f.calls_made} of {calls} calls")
        if f.failed > MAX_FAILED_SHARE * max(1, f.calls_made):
            why.append(f"{f.failed} failed calls ({f.failed / max(1, f.calls_made):.2%})")
        if wall > seconds * 1.15 + 9:  # recv_timeout 8 s for a call's last message
            why.append(f"took {wall:.1f} s for {seconds:g} s of calls")
        if f.shed:
            why.append(f"{f.shed} calls shed with 503")
        return LoadRun(
            target=target.name,
            rate=rate,
            calls_requested=calls,
            seconds_requested=seconds,
            wall_seconds=round(wall, 2),
            uac_exit_code=exit_code,
            calls_made=f.calls_made,
            completed=f.completed,
            blocked=f.blocked,
            labelled=labelled,
            shed=f.shed,
            cancelled=f.cancelled,
            failed=f.failed,
            retransmissions=f.retransmissions,
            timeouts=f.timeouts,
            unexpected=f.unexpected,
            expected=expected,
            target_cpu_s=round(cpu, 3),
            cpu_per_1000_calls=round(cpu / f.calls_made * 1000, 4) if f.calls_made else None,
            target_core_utilisation=round(cpu / wall, 3) if wall > 0 else 0.0,
            target_processes=processes,
            sipp_core_utilisation=round(sipp_cpu / wall, 3) if wall > 0 else 0.0,
            udp_rcvbuf_errors=rcvbuf_errors,
            final_ms=_rounded(percentiles(f.final_ms)),
            bye_ms=_rounded(percentiles(f.bye_ms)),
            final_within_2s_share=round(within_share, 5) if within_share is not None else None,
            achieved_call_rate=round(f.calls_made / wall, 1) if wall > 0 else 0.0,
            passed=not why,
            why_not="; ".join(why),
            checks=checks,
        )


def _rounded(p: dict[str, float | None]) -> dict[str, float | None]:
    return {k: (round(v, 3) if v is not None else None) for k, v in p.items()}


def find_max_rate(
    runner: Runner,
    target: Target,
    start: int,
    ceiling: int,
    seconds: float,
    max_steps: int,
    report: Any,
) -> tuple[int, list[LoadRun]]:
    """The highest rate with fewer than 0.1% failed calls: double from
    ``start`` until a run fails or ``ceiling`` is reached, then halve the
    gap; at most ``max_steps`` runs. 0 when even ``start`` fails."""
    runs: list[LoadRun] = []
    good, bad = 0, 0
    rate = start
    while len(runs) < max_steps:
        run, _ = runner.run(target, rate, seconds)
        runs.append(run)
        report(run)
        if run.passed:
            good = rate
            if rate >= ceiling:
                break
            rate = _round_rate((good + bad) / 2) if bad else min(ceiling, rate * 2)
        else:
            bad = rate
            rate = _round_rate((good + bad) / 2) if good else _round_rate(rate / 2)
        if bad and (bad - good <= max(50, good // 10) or rate in (good, bad)):
            break
        if rate < 10:
            break
    return good, runs


def _round_rate(rate: float) -> int:
    step = 50 if rate >= 200 else 10
    return max(10, int(round(rate / step) * step))


def overload_summary(run: LoadRun, max_rate: int) -> dict[str, Any]:
    """What the issue asks of a run at 1.5 times the maximum rate."""
    good = run.completed + run.blocked
    good_rate = good / run.wall_seconds if run.wall_seconds else 0.0
    retrans_per_call = run.retransmissions / run.calls_made if run.calls_made else None
    return {
        "rate": run.rate,
        "max_rate": max_rate,
        "final_within_2s_share": run.final_within_2s_share,
        "retransmissions": run.retransmissions,
        "retransmissions_per_call": round(retrans_per_call, 4)
        if retrans_per_call is not None
        else None,
        "storm": retrans_per_call is not None and retrans_per_call > STORM_RETRANS_PER_CALL,
        "shed_503": run.shed,
        "failed": run.failed,
        "good_calls_per_s": round(good_rate, 1),
        "good_vs_max": round(good_rate / max_rate, 3) if max_rate else None,
        "final_ms": run.final_ms,
    }


def environment() -> dict[str, Any]:
    with contextlib.suppress(OSError):
        return {"cpus": os.cpu_count(), "loadavg_1min": round(os.getloadavg()[0], 2)}
    return {"cpus": os.cpu_count()}


__all__ = ["HOST", "LoadRun", "Runner", "environment", "find_max_rate", "overload_summary"]
