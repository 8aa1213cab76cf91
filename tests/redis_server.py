"""A private redis-server for tests: loopback (or an address the test gave),
a free port, no persistence unless asked, killed at the end. Tests that need
it skip with a clear message when Debian's redis-server is not installed
(``make test`` installs it)."""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

BINARY = shutil.which("redis-server")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class RedisServer:
    def __init__(self, workdir: Path, host: str = "127.0.0.1", port: int | None = None) -> None:
        if BINARY is None:
            pytest.skip("redis-server is not installed (make test installs Debian's redis-server)")
        self.workdir = workdir
        self.host = host
        self.port = port or free_port(host)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self, extra_binds: list[str] | None = None, cluster: bool = False) -> None:
        """``extra_binds``: more addresses to listen on (a test's own links);
        ``cluster``: a node of a Redis Cluster."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        assert BINARY is not None
        cmd = [
            BINARY, "--bind", self.host, *(extra_binds or []), "--port", str(self.port),
            "--save", "", "--appendonly", "no", "--dir", str(self.workdir),
            "--protected-mode", "no", "--daemonize", "no",
        ]  # fmt: skip
        if cluster:
            cmd += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
        log = open(self.workdir / "redis.log", "ab")  # noqa: SIM115 - kept with the process
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited: {(self.workdir / 'redis.log').read_text()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("redis-server did not answer PING within 10 s")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None


def cluster_port(host: str = "127.0.0.1") -> int:
    """A free port whose cluster bus port (10000 above) is free too."""
    for _ in range(200):
        port = random.randint(20000, 45000)
        try:
            for p in (port, port + 10000):
                with socket.socket() as s:
                    s.bind((host, p))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a Redis cluster node")


class RedisCluster:
    """Three masters with cluster-enabled on loopback, slots spread by
    ``redis-cli --cluster create``: what [cluster] mode = "cluster" is for."""

    def __init__(self, workdir: Path) -> None:
        if BINARY is None or shutil.which("redis-cli") is None:
            pytest.skip("redis-server is not installed (make test installs Debian's redis-server)")
        self.nodes = [RedisServer(workdir / f"n{i}", port=cluster_port()) for i in range(3)]

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def start(self) -> None:
        for node in self.nodes:
            node.start(cluster=True)
        addresses = [f"{n.host}:{n.port}" for n in self.nodes]
        done = subprocess.run(
            ["redis-cli", "--cluster", "create", *addresses, "--cluster-replicas", "0",
             "--cluster-yes"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create: {done.stdout}{done.stderr}")
        # every node, not only the first: a client may ask any of them
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if all(self._node_ok(node) for node in self.nodes):
                return
            time.sleep(0.1)
        raise RuntimeError("the Redis cluster did not reach cluster_state:ok within 30 s")

    @staticmethod
    def _node_ok(node: RedisServer) -> bool:
        info = subprocess.run(
            ["redis-cli", "-h", node.host, "-p", str(node.port), "cluster", "info"],
            capture_output=True, text=True, timeout=10,
        )  # fmt: skip
        return "cluster_state:ok" in info.stdout and "cluster_slots_ok:16384" in info.stdout

    def kill(self) -> None:
        for node in self.nodes:
            node.kill()
