"""Process, port and CPU-time helpers shared by the load benchmarks."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_times(stat_path: str) -> tuple[float, float]:
    """(utime, stime) in seconds from a /proc/.../stat file; zeros if gone."""
    try:
        stat = Path(stat_path).read_text()
    except OSError:
        return 0.0, 0.0
    # comm (field 2) may hold spaces; fields after the last ')' start at 3.
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK  # fields 14 and 15


def proc_cpu(pid: int) -> float:
    """utime+stime of a process (all its threads), in seconds; 0 if gone."""
    return sum(proc_times(f"/proc/{pid}/stat"))


def thread_cpu(pid: int) -> dict[str, float]:
    """utime+stime per thread of a process, keyed "tid name"."""
    out: dict[str, float] = {}
    for task in sorted(Path(f"/proc/{pid}/task").glob("*")):
        with contextlib.suppress(OSError):
            name = (task / "comm").read_text().strip()
            out[f"{task.name} {name}"] = round(sum(proc_times(str(task / "stat"))), 2)
    return out


def descendants(root: int) -> list[int]:
    """root and every process below it (a multi-worker proxy counts whole)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def udp_errors() -> dict[str, int]:
    """Kernel UDP counters (all sockets): drops show an overloaded receiver."""
    lines = [ln.split() for ln in Path("/proc/net/snmp").read_text().splitlines()]
    udp = [ln for ln in lines if ln and ln[0] == "Udp:"]
    stats = dict(zip(udp[0][1:], (int(v) for v in udp[1][1:]), strict=True))
    return {k: stats.get(k, 0) for k in ("InDatagrams", "RcvbufErrors", "InErrors")}


def free_port() -> int:
    """A port free for both UDP and TCP on HOST right now."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((HOST, 0))
            port: int = s.getsockname()[1]
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                    t.bind((HOST, port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


def udp_bound(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((HOST, port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def wait_for(what: str, check: Any, timeout: float, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before it was ready")
        with contextlib.suppress(OSError):
            if check():
                return
        time.sleep(0.05)
    raise RuntimeError(f"{what} not ready after {timeout:.0f}s")


class Processes:
    """Every child we start, stopped in reverse order however we leave."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(
        self, name: str, cmd: list[str], cwd: Path, log: Path, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                cmd,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        self.procs.append((name, proc))
        return proc

    def stop(self, proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)

    def stop_all(self) -> None:
        for _, proc in reversed(self.procs):
            self.stop(proc)
        self.procs.clear()


# -- targets ------------------------------------------------------------------


def source_version() -> str:
    """The commit measured, marked dirty when proxy/ has local changes."""
    try:
        head = _git("rev-parse", "--short", "HEAD")
        dirty = _git("status", "--porcelain", "--", "proxy")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def _git(*args: str) -> str:
    done = subprocess.run(
        ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=True
    )
    return done.stdout.strip()


def write_result(path: Path, result: dict[str, Any]) -> None:
    """Every benchmark's JSON result, in loadtest/results/ unless told otherwise."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")


def show_log_tails(work: Path, what: str) -> None:
    """After a run broke: the last lines of each of its logs, and where they are kept."""
    for log in sorted(work.glob("*.log")):
        tail = log.read_text(errors="replace").strip().splitlines()[-5:]
        print(f"--- {log}\n" + "\n".join(tail), file=sys.stderr)
    print(f"{what} run failed; kept {work}", file=sys.stderr)
