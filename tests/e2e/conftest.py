"""Fixtures for the SIPp end-to-end tests.

Each test gets a ``Lab``: fresh ports, a SIPp UAS playing the switch, the
proxy as a subprocess pointed at it, and a SIPp UAC calling the proxy.
Everything listens on 127.0.0.1 and everything is killed at teardown.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from .harness import (
    HOST,
    PROCESS_TIMEOUT,
    ProxyProcess,
    SippRun,
    free_port,
    udp_port_taken,
    wait_until,
)

CLEAN_CALLER = "+13125550123"
CALLEE = "+16465550199"


class Lab:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.proxy_port = free_port()
        self.admin_port = free_port()
        self.uas_port = free_port()
        self.uac_port = free_port()
        self.proxy: ProxyProcess | None = None
        self.sipps: list[SippRun] = []

    def start_uas(self, scenario: str, name: str = "uas") -> SippRun:
        """SIPp UAS on UDP acting as the switch; returns once its socket is bound
        (a call forwarded earlier would be lost and retransmitted, skewing counts)."""
        uas = SippRun(name, self.workdir)
        self.sipps.append(uas)
        uas.spawn(uas.command(scenario, local_port=self.uas_port, transport="u1", extra=()))

        def bound() -> bool:
            assert uas.process is not None
            if uas.process.poll() is not None:
                raise AssertionError(f"UAS exited early\n{uas.report()}")
            return udp_port_taken(self.uas_port)

        wait_until(bound, 10.0, "the SIPp UAS to bind its port")
        return uas

    def start_proxy(
        self,
        *,
        record_route: bool = False,
        block: Sequence[str] = (),
        label: Sequence[str] = (),
    ) -> ProxyProcess:
        self.proxy = ProxyProcess(
            self.workdir,
            sip_port=self.proxy_port,
            admin_port=self.admin_port,
            switch_port=self.uas_port,
            record_route=record_route,
            block=block,
            label=label,
        )
        self.proxy.start()
        return self.proxy

    def run_uac(
        self,
        scenario: str,
        *,
        caller: str = CLEAN_CALLER,
        callee: str = CALLEE,
        caller_name: str = "Alice Example",
        transport: str = "u1",
        name: str = "uac",
    ) -> SippRun:
        """Run a SIPp UAC against the proxy to completion (one call)."""
        uac = SippRun(name, self.workdir)
        self.sipps.append(uac)
        extra = [
            f"{HOST}:{self.proxy_port}",
            "-s", callee,
            "-key", "caller", caller,
            "-key", "caller_name", caller_name,
        ]  # fmt: skip
        uac.spawn(uac.command(scenario, local_port=self.uac_port, transport=transport, extra=extra))
        uac.wait(PROCESS_TIMEOUT)
        return uac

    def close(self) -> None:
        for sipp in self.sipps:
            sipp.kill()
        if self.proxy is not None:
            self.proxy.stop()

    def report(self) -> str:
        """Everything useful for a failure message: SIPp output and proxy log."""
        parts = [s.report() for s in self.sipps]
        if self.proxy is not None:
            parts.append(f"--- proxy log (tail):\n{self.proxy.output()[-2000:]}")
        return "\n".join(parts)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    if shutil.which("sipp") is None:
        pytest.skip("sipp is not on PATH: install Debian's sip-tester (make system-deps)")
    lab = Lab(tmp_path)
    try:
        yield lab
    finally:
        lab.close()
