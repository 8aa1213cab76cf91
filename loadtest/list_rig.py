"""Processes, timing and memory probes for the blocklist benchmark."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# -- numbers --------------------------------------------------------------------
from list_consts import EXE, MEMORY_RATE, MEMORY_SECONDS, PROXY_READY_S, RELOAD_VISIBLE_S, ROOT
from load_sipp import SCENARIOS, ProxyTarget, read_sipp_csv, sipp_numbers
from procs import (
    CLK_TCK,
    HOST,
    Processes,
    free_port,
    proc_cpu,
    udp_bound,
    udp_errors,
    wait_for,
)


def cpu_busy_s() -> float:
    """CPU-seconds the whole machine has been busy (every core, /proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / CLK_TCK  # guest time is already in user


def other_cores(busy0: float, t0: float, own_cpu_s: float) -> float:
    """Cores busy with other work since (busy0, t0), ours (own_cpu_s) left out:
    the machine is shared, and a timing taken beside other work is slower."""
    wall = time.monotonic() - t0
    return round(max(0.0, cpu_busy_s() - busy0 - own_cpu_s) / wall, 2) if wall > 0 else 0.0


# -- timed subprocesses ------------------------------------------------------------


@dataclass
class Timed:
    cmd: list[str]
    wall_s: float
    user_s: float
    system_s: float
    max_rss_mb: float
    returncode: int
    timed_out: bool
    output: str


def run_timed(cmd: list[str], timeout: float, log: Path) -> Timed:
    """Run cmd to completion: wall time, and CPU and peak RSS from wait4()."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )
    fired = threading.Event()

    def kill() -> None:
        fired.set()
        proc.kill()

    timer = threading.Timer(timeout, kill)
    t0 = time.monotonic()
    timer.start()
    reaped = False
    try:
        _, status, usage = os.wait4(proc.pid, 0)
        reaped = True
    finally:
        timer.cancel()
        if not reaped:  # interrupted (SIGTERM, ^C): do not leave the child behind
            proc.kill()
            proc.wait(timeout=10)
    wall = time.monotonic() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    return Timed(
        cmd=cmd,
        wall_s=round(wall, 3),
        user_s=round(usage.ru_utime, 3),
        system_s=round(usage.ru_stime, 3),
        max_rss_mb=round(usage.ru_maxrss / 1024, 1),  # Linux: kB
        returncode=proc.returncode,
        timed_out=fired.is_set(),
        output=log.read_text(errors="replace"),
    )


class ListProxy(ProxyTarget):
    """robocall-shield serve with a blocklist artefact directory (or none)."""

    name = "proxy"

    def __init__(self, artefact_dir: Path | None, watch_interval: float = 0.0) -> None:
        super().__init__(verdict_log=True)
        self.artefact_dir = artefact_dir
        self.watch_interval = watch_interval
        self.token = secrets.token_hex(16)

    def start(self, procs: Processes, work: Path, sip_port: int, uas_port: int) -> None:
        self.admin_port = free_port()
        self.work = work
        config = work / "proxy.toml"
        text = (
            f'[sip]\nhost = "{HOST}"\nport = {sip_port}\ntransports = ["udp"]\n'
            "record_route = false\n\n"
            f'[[switches]]\nname = "uas"\nhost = "{HOST}"\nport = {uas_port}\n\n'
            "[routing]\nhealth_checks = false\n\n"
            f'[admin]\nhost = "{HOST}"\nport = {self.admin_port}\ntoken = "{self.token}"\n\n'
            f'[log]\nlevel = "info"\nverdict_log = "{work / "verdicts.jsonl"}"\n'
        )
        if self.artefact_dir is not None:
            text += (
                f'\n[blocklists]\ndir = "{self.artefact_dir}"\n'
                f"watch_interval = {self.watch_interval}\n"
            )
        config.write_text(text)
        cmd = [str(EXE), "serve", "--config", str(config)]
        self.proc = procs.start("proxy", cmd, work, work / "proxy.log")
        # Start-up loads the artefact before the admin port opens.
        wait_for("proxy /readyz", lambda: self._get("/readyz")[0] == 200, PROXY_READY_S, self.proc)

    def health(self) -> dict[str, Any]:
        status, body = self._get("/healthz")
        result: dict[str, Any] = json.loads(body) if status == 200 else {}
        return result

    def version(self) -> str | None:
        lists = self.health().get("blocklists", {})
        return lists.get("version") if isinstance(lists, dict) else None

    def post_reload(self) -> tuple[int, dict[str, Any]]:
        req = urllib.request.Request(
            f"http://{HOST}:{self.admin_port}/admin/blocklists/reload",
            method="POST",
            headers={"Authorization": f"Bearer {self.token}"},
        )
        try:
            with urllib.request.urlopen(req, timeout=RELOAD_VISIBLE_S) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, {"error": exc.read().decode(errors="replace")}

    def reloads(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for key, value in self.counters().items():
            m = re.fullmatch(r'rs_blocklist_reloads_total\{outcome="(\w+)"\}', key)
            if m:
                out[m.group(1)] = int(value)
        return out


@dataclass
class Rig:
    """A SIPp UAS as the switch, and the proxies in front of it."""

    procs: Processes
    uas_port: int
    proxy: ListProxy = field(init=False)
    sip_port: int = 0

    def add_proxy(
        self, work: Path, artefact_dir: Path | None, watch_interval: float = 0.0
    ) -> tuple[ListProxy, int]:
        work.mkdir(parents=True, exist_ok=True)
        proxy, port = ListProxy(artefact_dir, watch_interval), free_port()
        proxy.start(self.procs, work, port, self.uas_port)
        return proxy, port


@contextmanager
def proxy_with_switch(
    work: Path, artefact_dir: Path | None, watch_interval: float = 0.0
) -> Iterator[Rig]:
    """A SIPp UAS and a proxy forwarding to it; everything stopped on exit."""
    sipp = shutil.which("sipp")
    if sipp is None:
        raise RuntimeError("sipp not found (make system-deps installs sip-tester)")
    work.mkdir(parents=True, exist_ok=True)
    rig = Rig(Processes(), free_port())
    try:
        uas_cmd = [sipp, "-sf", str(SCENARIOS / "uas.xml"), "-i", HOST, "-p", str(rig.uas_port)]
        uas_cmd += ["-nostdin", "-nd", "-recv_timeout", "10000", "-buff_size", "4194304"]
        uas = rig.procs.start("uas", uas_cmd, work, work / "uas.log")
        wait_for("SIPp UAS", lambda: udp_bound(rig.uas_port), 10, uas)
        rig.proxy, rig.sip_port = rig.add_proxy(work, artefact_dir, watch_interval)
        yield rig
    finally:
        rig.procs.stop_all()


Action = Callable[[], dict[str, Any]]


def sipp_load(
    proxy: ListProxy,
    sip_port: int,
    procs: Processes,
    work: Path,
    callers: list[str],
    rate: int,
    seconds: int,
    actions: list[tuple[float, Action]] = [],  # noqa: B006 - read only
) -> dict[str, Any]:
    """rate calls/s for seconds through the proxy; actions run at their offsets."""
    sipp = shutil.which("sipp") or "sipp"
    (work / "callers.csv").write_text("SEQUENTIAL\n" + "".join(f"{c};\n" for c in callers))
    stat_file = work / "uac_stat.csv"
    calls = rate * seconds
    uac_cmd = [sipp, f"{HOST}:{sip_port}", "-sf", str(SCENARIOS / "uac.xml")]
    uac_cmd += ["-inf", str(work / "callers.csv"), "-i", HOST, "-p", str(free_port())]
    uac_cmd += ["-r", str(rate), "-rp", "1000", "-m", str(calls)]
    uac_cmd += ["-l", str(max(1000, rate * 5)), "-nd", "-nostdin"]
    uac_cmd += ["-recv_timeout", "5000", "-timeout", f"{seconds * 3 + 20}s"]
    uac_cmd += ["-buff_size", "4194304", "-trace_stat", "-stf", str(stat_file), "-fd", "1"]
    uac_cmd += ["-trace_counts"]
    udp0, cpu0, busy0 = udp_errors(), proc_cpu(proxy.proc.pid), cpu_busy_s()
    t0 = time.monotonic()
    uac = procs.start("uac", uac_cmd, work, work / "uac.log")
    done: list[dict[str, Any]] = []
    for offset, act in actions:
        while time.monotonic() < t0 + offset and uac.poll() is None:
            time.sleep(0.02)
        record = act()
        record["at_s"] = round(time.monotonic() - t0, 2)
        done.append(record)
    try:
        uac.wait(timeout=seconds * 3 + 30)
    except subprocess.TimeoutExpired:
        procs.stop(uac, signal.SIGUSR1)  # SIPp quits cleanly on SIGUSR1
    wall = time.monotonic() - t0
    time.sleep(0.5)  # the last ACKs reach the proxy
    cpu = proc_cpu(proxy.proc.pid) - cpu0
    busy = cpu_busy_s() - busy0
    udp1 = udp_errors()
    numbers = sipp_numbers(work, stat_file)
    stats = read_sipp_csv(stat_file) if stat_file.exists() else {}
    counters = proxy.counters()
    return {
        "rate": rate,
        "seconds": seconds,
        "calls_requested": calls,
        "uac_exit_code": uac.returncode,
        "wall_s": round(wall, 2),
        "proxy_cpu_s": round(cpu, 2),
        "proxy_core_utilisation": round(cpu / wall, 3) if wall else None,
        "machine_busy_cores": round(busy / (wall + 0.5), 2),  # proxy, SIPp and the rest
        "sipp": numbers,
        "response_time_ms": stats.get("ResponseTime1(C)", ""),
        "udp_rcvbuf_errors": udp1["RcvbufErrors"] - udp0["RcvbufErrors"],
        "verdicts": {
            k.removeprefix("rs_screening_verdicts_total"): int(v)
            for k, v in counters.items()
            if k.startswith("rs_screening_verdicts_total")
        },
        "actions": done,
    }


# -- memory -------------------------------------------------------------------------------

ROLLUP = (
    "Rss",
    "Pss",
    "Shared_Clean",
    "Shared_Dirty",
    "Private_Clean",
    "Private_Dirty",
    "Anonymous",
    "Swap",
)
_MAPPING = re.compile(r"^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$")


def smaps_rollup(pid: int) -> dict[str, int]:
    """kB per field of /proc/PID/smaps_rollup."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        name, sep, rest = line.partition(":")
        if sep and name in ROLLUP:
            out[name] = int(rest.split()[0])
    return out


def mapped_files_under(pid: int, directory: Path) -> dict[str, int]:
    """kB of the mappings of files under directory (the mmap'ed artefact)."""
    prefix = str(directory.resolve()) + "/"
    out = dict.fromkeys(("Size", *ROLLUP), 0)
    mine = False
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        m = _MAPPING.match(line)
        if m:
            mine = m.group(1).startswith(prefix)
            continue
        if mine:
            name, sep, rest = line.partition(":")
            if sep and name in out:
                out[name] += int(rest.split()[0])
    return out


def memory_snapshot(pid: int, artefact_dir: Path | None) -> dict[str, Any]:
    rollup = smaps_rollup(pid)
    rollup["Private"] = rollup["Private_Clean"] + rollup["Private_Dirty"]
    rollup["Shared"] = rollup["Shared_Clean"] + rollup["Shared_Dirty"]
    files = mapped_files_under(pid, artefact_dir) if artefact_dir else dict.fromkeys(ROLLUP, 0)
    return {
        "rollup_kb": rollup,
        "artefact_mappings_kb": files,
        "unshared_kb": rollup["Private"] - files["Private_Clean"] - files["Private_Dirty"],
    }


def memory_bench(work: Path, artefact_dir: Path, callers: list[str]) -> dict[str, Any]:
    runs: dict[str, dict[str, Any]] = {}
    for label, art in (("without", None), ("with", artefact_dir)):
        run_dir = work / f"memory-{label}"
        with proxy_with_switch(run_dir, art) as rig:
            proxy = rig.proxy
            time.sleep(1.0)
            idle = memory_snapshot(proxy.proc.pid, art)
            load = sipp_load(
                proxy, rig.sip_port, rig.procs, run_dir, callers, MEMORY_RATE, MEMORY_SECONDS
            )
            time.sleep(1.0)
            runs[label] = {
                "version": proxy.version(),
                "idle": idle,
                "after_load": memory_snapshot(proxy.proc.pid, art),
                "load": load,
            }
            if art is None:
                continue
            # A second worker on the same artefact, given the same load: the
            # mmap'ed pages become shared between the two (Shared_Clean).
            second_dir = work / "memory-with-second"
            second, port = rig.add_proxy(second_dir, art)
            sipp_load(second, port, rig.procs, second_dir, callers, MEMORY_RATE, MEMORY_SECONDS)
            time.sleep(1.0)
            runs["two workers"] = {
                "first": memory_snapshot(proxy.proc.pid, art),
                "second": memory_snapshot(second.proc.pid, art),
            }
    growth: dict[str, Any] = {}
    for when in ("idle", "after_load"):
        a, b = runs["without"][when], runs["with"][when]
        g = {k: round((b["rollup_kb"][k] - a["rollup_kb"][k]) / 1024, 1) for k in a["rollup_kb"]}
        g["unshared"] = round((b["unshared_kb"] - a["unshared_kb"]) / 1024, 1)
        g["artefact_mapped_rss"] = round(b["artefact_mappings_kb"]["Rss"] / 1024, 1)
        growth[when] = g
    return {"runs": runs, "growth_mb": growth}


# -- reload under load -----------------------------------------------------------------------
