"""The systems under test: this proxy, Kamailio (two allocators), a bare forwarder.

Each target is started fresh for every run on ports chosen free on
127.0.0.1, in its own work dir, and stopped by ``Processes.stop_all``
however the run ends. CPU time is utime+stime from ``/proc/PID/stat`` summed
over the target's whole process tree (the proxy's workers, Kamailio's
children), read before and after the calls.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from loadtest.procs import (
    HOST,
    ROOT,
    Processes,
    descendants,
    free_port,
    proc_times,
    udp_bound,
    wait_for,
)
from loadtest.workload import Workload

HERE = Path(__file__).resolve().parent
KAMAILIO_CFG = HERE / "kamailio" / "kamailio.cfg"


@dataclass(frozen=True)
class TargetOptions:
    record_route: bool = True
    workers: int | None = None  # written as [sip] workers = N when given
    worker_balance: str = ""  # [sip] worker_balance when given: "source" or "message"
    worker_ports: bool = False  # [sip] worker_port_base: each worker a port of its own
    verdict_log: bool = True
    source: Path | None = None  # a copy of proxy/ and blocklists/ to run (PYTHONPATH)


def snapshot_source(into: Path, revision: str) -> Path:
    """proxy/ and blocklists/ as they are now (``worktree``) or at a git
    revision, copied under ``into``: the whole run measures one version even
    while the tree is being edited."""
    into.mkdir(parents=True, exist_ok=True)
    if revision == "worktree":
        for package in ("proxy", "blocklists"):
            shutil.copytree(
                ROOT / package, into / package, ignore=shutil.ignore_patterns("__pycache__")
            )
        return into
    archive = subprocess.run(
        ["git", "archive", "--format=tar", revision, "proxy", "blocklists"],
        cwd=ROOT, capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    if archive.returncode != 0:
        raise SystemExit(f"loadtest: git archive {revision}: {archive.stderr.decode()[-500:]}")
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, timeout=60, check=True)
    return into


def source_env(source: Path | None) -> dict[str, str] | None:
    """The environment that makes ``python -m proxy`` import ``source``."""
    if source is None:
        return None
    env = dict(os.environ)
    env["PYTHONPATH"] = str(source) + os.pathsep + env.get("PYTHONPATH", "")
    return env


class Target:
    """One system under test; ``start`` returns once it answers on ``sip_port``."""

    name = ""
    description = ""

    def __init__(self) -> None:
        self.pid = 0

    def start(
        self, procs: Processes, work: Path, sip_port: int, switch_port: int, workload: Workload
    ) -> None:
        raise NotImplementedError

    def cpu_seconds(self) -> float:
        """utime+stime of every process in the target's tree, in seconds."""
        return sum(sum(proc_times(f"/proc/{p}/stat")) for p in descendants(self.pid))

    def process_count(self) -> int:
        return len(descendants(self.pid))

    @property
    def answers_probes(self) -> bool:
        """Whether the latency probe can run through it (it routes by SIP headers)."""
        return True


class ProxyTarget(Target):
    name = "proxy"

    def __init__(self, options: TargetOptions) -> None:
        super().__init__()
        self.options = options
        workers = f", {options.workers} workers" if options.workers else ", 1 worker"
        if options.workers and options.worker_balance:
            workers += f" ({options.worker_balance} balance)"
        if options.workers and options.worker_ports:
            workers += " with worker ports"
        self.description = (
            "robocall-shield" + workers
            + (", record-route" if options.record_route else "")
            + (", verdict log to a file" if options.verdict_log else "")
        )  # fmt: skip
        self.admin_port = 0

    def config(self, work: Path, sip_port: int, switch_port: int, workload: Workload) -> str:
        o = self.options
        vlog = str(work / "verdicts.jsonl") if o.verdict_log else ""
        sip = [
            "[sip]",
            f'host = "{HOST}"',
            f"port = {sip_port}",
            'transports = ["udp"]',
            f"record_route = {'true' if o.record_route else 'false'}",
        ]
        if o.workers is not None:
            sip.append(f"workers = {o.workers}")
        if o.worker_balance:
            sip.append(f'worker_balance = "{o.worker_balance}"')
        if o.worker_ports:
            sip.append(f"worker_port_base = {free_port_block(o.workers or 64)}")
        return "\n".join(
            [
                *sip,
                "",
                "[[switches]]",
                'name = "uas"',
                f'host = "{HOST}"',
                f"port = {switch_port}",
                "",
                "[routing]",
                "health_checks = false",
                "",
                "[admin]",
                f'host = "{HOST}"',
                f"port = {self.admin_port}",
                "",
                "[log]",
                'level = "warning"',
                f"verdict_log = {json.dumps(vlog)}",
                "",
                "[blocklists]",
                f"dir = {json.dumps(str(workload.artefact_dir))}",
                "",
                "[screening]",
                f"label = {json.dumps(list(workload.label_numbers))}",
                "",
            ]
        )

    def start(
        self, procs: Processes, work: Path, sip_port: int, switch_port: int, workload: Workload
    ) -> None:
        self.admin_port = free_port()
        config = work / "proxy.toml"
        config.write_text(self.config(work, sip_port, switch_port, workload))
        cmd = [sys.executable, "-m", "proxy", "serve", "--config", str(config)]
        env = source_env(self.options.source)
        proc = procs.start("proxy", cmd, work, work / "proxy.log", env)
        self.pid = proc.pid
        wait_for("proxy /readyz", lambda: self._status("/readyz") == 200, 30, proc)

    def _status(self, path: str) -> int:
        url = f"http://{HOST}:{self.admin_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return exc.code


class BareTarget(Target):
    name = "bare"
    description = "bare uvloop UDP forwarder (no SIP parsing, no screening)"

    def start(
        self, procs: Processes, work: Path, sip_port: int, switch_port: int, workload: Workload
    ) -> None:
        control = free_port()
        cmd = [
            sys.executable, str(HERE / "bare_forwarder.py"), "--host", HOST,
            "--port", str(sip_port), "--upstream-port", str(switch_port),
            "--control-port", str(control),
        ]  # fmt: skip
        proc = procs.start("bare", cmd, work, work / "bare.log")
        self.pid = proc.pid

        def answers() -> bool:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(0.5)
                s.sendto(b"stats", (HOST, control))
                return bool(s.recv(4096))

        wait_for("bare forwarder", answers, 20, proc)

    @property
    def answers_probes(self) -> bool:
        return False  # it relays to the one SIPp UAS and back to the last sender


class KamailioTarget(Target):
    def __init__(self, allocator: str, options: TargetOptions) -> None:
        super().__init__()
        if allocator not in ("default", "tlsf"):
            raise ValueError(f"unknown Kamailio allocator {allocator!r}")
        self.allocator = allocator
        self.options = options
        self.name = "kamailio" if allocator == "default" else "kamailio-tlsf"
        alloc = "Debian's default allocators" if allocator == "default" else "-x tlsf -X tlsf"
        self.description = f"Kamailio {kamailio_version()}, children=1, {alloc}" + (
            ", record_route()" if options.record_route else ""
        )

    def command(self, work: Path, sip_port: int, switch_port: int, workload: Workload) -> list[str]:
        exe = shutil.which("kamailio")
        if exe is None:
            raise SystemExit("loadtest: kamailio not found (make bench-deps installs it)")
        run_dir = work / "kamailio-run"
        run_dir.mkdir(exist_ok=True)
        # -m 512: 100,000 htable cells overflow 128 MB of shared memory with
        # Debian's default allocator (q_malloc with its debugging overhead)
        cmd = [
            exe, "-f", str(KAMAILIO_CFG), "-DD", "-E", "-e",
            "-l", f"udp:{HOST}:{sip_port}", "-Y", str(run_dir), "-P", str(run_dir / "kamailio.pid"),
            "-m", "512", "-M", "16",
            "-A", f'SWITCH_HOST="{HOST}"', "-A", f"SWITCH_PORT={switch_port}",
            "-A", f'LISTS_DB="text://{workload.kamailio_db}"',
        ]  # fmt: skip
        if self.options.record_route:
            cmd += ["-A", "WITH_RR"]
        if self.allocator == "tlsf":
            cmd += ["-x", "tlsf", "-X", "tlsf"]
        return cmd

    def start(
        self, procs: Processes, work: Path, sip_port: int, switch_port: int, workload: Workload
    ) -> None:
        cmd = self.command(work, sip_port, switch_port, workload)
        proc = procs.start(self.name, cmd, work, work / f"{self.name}.log")
        self.pid = proc.pid
        wait_for(self.name, lambda: udp_bound(sip_port), 30, proc)
        # the listener binds before the htable is loaded in the children
        wait_for(f"{self.name} children", lambda: self.process_count() >= 3, 10, proc)


_KAMAILIO_VERSION: list[str] = []


def kamailio_version() -> str:
    if not _KAMAILIO_VERSION:
        exe = shutil.which("kamailio")
        text = ""
        if exe:
            done = subprocess.run(
                [exe, "-v"], capture_output=True, text=True, timeout=10, check=False
            )
            text = done.stdout.split("\n", 1)[0].replace("version: kamailio", "").strip()
        _KAMAILIO_VERSION.append(text.split(" ")[0] if text else "(not installed)")
    return _KAMAILIO_VERSION[0]


def make_targets(names: list[str], options: TargetOptions) -> list[Target]:
    out: list[Target] = []
    for name in names:
        if name == "proxy":
            out.append(ProxyTarget(options))
        elif name == "bare":
            out.append(BareTarget())
        elif name == "kamailio":
            out.append(KamailioTarget("default", options))
        elif name == "kamailio-tlsf":
            out.append(KamailioTarget("tlsf", options))
        else:
            raise ValueError(f"unknown target {name!r}")
    return out


def free_port_block(count: int) -> int:
    """A base port with ``count`` free UDP ports after it (checked by binding)."""
    for _ in range(50):
        base = free_port()
        if base + count >= 65536:
            continue
        socks = []
        try:
            for port in range(base, base + count):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind((HOST, port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no block of free ports found")
