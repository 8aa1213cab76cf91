"""Two proxy nodes on two "hosts": network namespaces this test creates,
each joined to the test's own namespace by a veth pair. Redis and the SIPp
callers and switches run in the test's namespace on the host ends of the
pairs; nothing listens anywhere but on these private links and loopback."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from .harness import http_call, proxy_command, stop_process

TOKEN = "multi-node-test-token"
LOAD = Path(__file__).resolve().parents[2] / "loadtest" / "scenarios"
SCENARIOS = Path(__file__).resolve().parent / "scenarios"


def unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    for tool in ("ip", "sipp", "redis-server"):
        if shutil.which(tool) is None:
            return f"needs {tool} (make test installs iproute2, sip-tester and redis-server)"
    return None


def run(*args: str) -> None:
    done = subprocess.run(args, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {done.stderr.strip()}")


@dataclass
class Node:
    name: str
    ns: str
    host_ip: str  # the test's end of the link: Redis, SIPp
    node_ip: str  # the proxy's
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None
    extra: list[str] = field(default_factory=list)

    @property
    def verdict_log(self) -> Path:
        return self.workdir / "verdicts.jsonl"

    def write_config(self, redis_url: str) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        q = json.dumps
        lines = [
            "[sip]", f"host = {q(self.node_ip)}", "port = 5060", 'transports = ["udp"]',
            "", "[[switches]]", 'name = "sw"', f"host = {q(self.host_ip)}", "port = 5080",
            "", "[routing]", "health_checks = false",
            "", "[[peers]]", f'name = "upstream-{self.name}"', f"addresses = [{q(self.host_ip)}]",
            "", "[admin]", "enabled = true", f"host = {q(self.node_ip)}", "port = 8080",
            f"token = {q(TOKEN)}",
            "", "[log]", f"verdict_log = {q(str(self.verdict_log))}",
            "", "[subscribers]", f"data_dir = {q(str(self.workdir / 'data'))}",
            "", "[reputation]", "label_at = 60", "block_at = 95",
            "[reputation.weights]", '"fan-out" = 100', "unattested = 0",
            "", "[cluster]", "enabled = true", f"redis_url = {q(redis_url)}",
            f"node = {q(self.name)}", "sync_interval = 0.5", "timeout = 1.0",
            *self.extra,
        ]  # fmt: skip
        path = self.workdir / "node.toml"
        path.write_text("\n".join(lines) + "\n")
        return path

    def start(self, redis_url: str) -> None:
        config = self.write_config(redis_url)
        out = (self.workdir / "proxy.log").open("wb")
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, *proxy_command(config)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while self.status("/readyz") != 200:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"node {self.name} did not start:\n{self.output()}")
            time.sleep(0.1)

    def stop(self) -> None:
        stop_process(self.proc)

    def output(self) -> str:
        path = self.workdir / "proxy.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def request(self, method: str, path: str, body: object = None) -> tuple[int, object]:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
        return http_call(f"http://{self.node_ip}:8080{path}", method, data, headers)

    def status(self, path: str) -> int:
        return self.request("GET", path)[0]

    def explain(self, number: str) -> dict[str, object]:
        status, body = self.request("GET", f"/admin/reputation/{number}")
        assert status == 200 and isinstance(body, dict), (status, body)
        return body

    def metric(self, name: str) -> float | None:
        _status, text = self.request("GET", "/metrics")
        for line in str(text).splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
        return None

    def verdicts(self) -> list[dict[str, object]]:
        if not self.verdict_log.exists():
            return []
        return [json.loads(x) for x in self.verdict_log.read_text().splitlines() if x.strip()]


class NamespacesUnavailable(Exception):
    """This machine (a container without CAP_SYS_ADMIN) cannot make one."""


class Topology:
    """Namespaces, veth pairs and addresses; ``close`` removes them all."""

    def __init__(self, workdir: Path) -> None:
        self.nodes: list[Node] = []
        self.links: list[str] = []
        try:
            self._build(workdir)
        except BaseException:
            self.close()  # what was made so far
            raise

    def _build(self, workdir: Path) -> None:
        tag = uuid.uuid4().hex[:6]
        net = random.randint(16, 250)  # 10.<net>.{1,2}.0/30: private to this test
        for i, name in enumerate(("a", "b"), start=1):
            ns, host_if, node_if = f"rs-{name}-{tag}", f"rs{name}h{tag}", f"rs{name}n{tag}"
            host_ip, node_ip = f"10.{net}.{i}.1", f"10.{net}.{i}.2"
            made = subprocess.run(["ip", "netns", "add", ns], capture_output=True, text=True)
            if made.returncode != 0:
                raise NamespacesUnavailable(made.stderr.strip())
            self.nodes.append(Node(name, ns, host_ip, node_ip, workdir / name))
            run("ip", "link", "add", host_if, "type", "veth", "peer", "name", node_if)
            self.links.append(host_if)
            run("ip", "link", "set", node_if, "netns", ns)
            run("ip", "addr", "add", f"{host_ip}/30", "dev", host_if)
            run("ip", "link", "set", host_if, "up")
            run("ip", "netns", "exec", ns, "ip", "addr", "add", f"{node_ip}/30", "dev", node_if)
            run("ip", "netns", "exec", ns, "ip", "link", "set", node_if, "up")
            run("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")

    def close(self) -> None:
        for node in self.nodes:
            node.stop()
            subprocess.run(["ip", "netns", "del", node.ns], capture_output=True, timeout=30)
        for link in self.links:  # gone with its namespace's peer; just in case
            subprocess.run(["ip", "link", "del", link], capture_output=True, timeout=30)


def write_calls(path: Path, calls: list[tuple[str, str]]) -> Path:
    path.write_text("SEQUENTIAL\n" + "".join(f"{a};{b};\n" for a, b in calls))
    return path


class Sipp:
    """SIPp on the test's end of a link: a switch, or a bounded caller."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[subprocess.Popen[bytes]] = []

    def switch(self, ip: str) -> None:
        self._spawn(f"uas-{ip}", [
            "-sf", str(LOAD / "uas_switch.xml"), "-i", ip, "-p", "5080",
            "-nostdin", "-nd", "-recv_timeout", "20000", "-trace_err",
        ])  # fmt: skip

    def calls(
        self, node: Node, inf: Path, count: int, rate: int, port: int
    ) -> subprocess.Popen[bytes]:
        return self._spawn(f"uac-{node.name}-{inf.stem}", [
            f"{node.node_ip}:5060", "-sf", str(SCENARIOS / "uac_campaign.xml"), "-inf", str(inf),
            "-i", node.host_ip, "-p", str(port), "-r", str(rate), "-m", str(count),
            "-nd", "-nostdin", "-recv_timeout", "8000", "-timeout", "60s", "-timeout_error",
            "-trace_err", "-trace_stat", "-fd", "1",
        ])  # fmt: skip

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        sipp = shutil.which("sipp")
        assert sipp is not None
        out = (self.workdir / f"{name}.out").open("wb")
        proc = subprocess.Popen(
            [sipp, *args], cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.procs:
            stop_process(proc, grace=2)
