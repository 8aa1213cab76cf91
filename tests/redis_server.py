"""A private redis-server for tests: loopback (or an address the test gave),
a free port, no persistence unless asked, killed at the end. Tests that need
it skip with a clear message when Debian's redis-server is not installed
(``make test`` installs it)."""

from __future__ import annotations

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

    def start(self, extra_binds: list[str] | None = None) -> None:
        """``extra_binds``: more addresses to listen on (a test's own links)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        assert BINARY is not None
        cmd = [
            BINARY, "--bind", self.host, *(extra_binds or []), "--port", str(self.port),
            "--save", "", "--appendonly", "no", "--dir", str(self.workdir),
            "--protected-mode", "no", "--daemonize", "no",
        ]  # fmt: skip
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
