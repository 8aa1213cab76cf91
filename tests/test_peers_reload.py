"""The worker's peer wiring across a SIGHUP: [peer_policy] applies at once,
the RMD export is read again (a broken one keeps the old data), and a
worker without [[peers]] runs without any of it."""

from __future__ import annotations

import asyncio
from pathlib import Path

from proxy.config import load_config, parse_config
from proxy.events import Address, Replied
from proxy.gateway.metrics import StatsMetrics
from proxy.screening import Mode
from proxy.server import Worker
from proxy.serving import reload_from_file as _reload
from tests.sipmsg import request
from tests.test_peers_rmd import HEADER, row

GATEWAY = Address("203.0.113.66", 5060, "udp")
TOML = """
[sip]
host = "192.0.2.5"
[[switches]]
name = "sw1"
host = "192.0.2.20"
port = 5080
[routing]
health_checks = false
[log]
verdict_log = ""
[subscribers]
data_dir = "{data}"
[[peers]]
name = "gateway-x"
addresses = ["203.0.113.64/28"]
frn = "0000000113"
[peer_policy]
rmd_file = "{rmd}"
missing_from_rmd = "{missing}"
mode = "{mode}"
"""


def write_config(tmp_path: Path, **values: str) -> Path:
    path = tmp_path / "shield.toml"
    settings = {"data": str(tmp_path / "data"), "rmd": str(tmp_path / "rmd.csv"),
                "missing": "observe", "mode": "enforce", **values}  # fmt: skip
    path.write_text(TOML.format(**settings))
    return path


def write_rmd(tmp_path: Path, *rows: str) -> None:
    (tmp_path / "rmd.csv").write_text("\n".join([HEADER, *rows]) + "\n")


def call_status(worker: Worker, n: int) -> int | None:
    data = request(call_id=f"r{n}@x", branch=f"z9hG4bK-r{n}", via_host="203.0.113.66:5060")
    events = worker.core.receive_datagram(data, GATEWAY, 10.0 + n)
    return next((e.status for e in events if isinstance(e, Replied)), None)


async def settle(worker: Worker) -> None:
    for _ in range(200):  # the background RMD read: a thread, bounded wait
        if not worker._jobs:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the RMD reload did not finish")


async def test_sighup_applies_the_policy_and_rereads_the_rmd(tmp_path: Path) -> None:
    write_rmd(tmp_path, row("RMD0000001", "0000000101"))  # gateway-x's FRN is not listed
    path = write_config(tmp_path)
    worker = Worker(load_config(path))
    try:
        svc = worker.peer_service
        assert svc is not None and isinstance(worker.metrics, StatsMetrics)
        assert svc.actions.views["gateway-x"].standing.status == "missing"
        assert call_status(worker, 1) is None  # missing, but the policy only observes

        write_config(tmp_path, missing="block")
        _reload(worker, str(path))
        await settle(worker)
        assert svc.actions.views["gateway-x"].effective.action == "block"
        assert call_status(worker, 2) == 603

        write_rmd(tmp_path, row("RMD0000113", "0000000113"))  # it has filed since
        _reload(worker, str(path))
        await settle(worker)
        assert svc.actions.views["gateway-x"].standing.status == "mitigating"
        assert call_status(worker, 3) is None

        (tmp_path / "rmd.csv").write_text("not,an,export\n")  # a broken export: old data kept
        _reload(worker, str(path))
        await settle(worker)
        assert svc.actions.rmd_error is not None and "lacks the column(s)" in svc.actions.rmd_error
        assert svc.actions.views["gateway-x"].standing.status == "mitigating"

        write_config(tmp_path, missing="block", mode="observe")  # a dry run from now on
        write_rmd(tmp_path, row("RMD0000001", "0000000101"))
        _reload(worker, str(path))
        await settle(worker)
        modes = {s.mode for s in worker.core.pipeline.stages if s.check.name == "peer"}
        assert modes == {Mode.OBSERVE}
        assert svc.actions.views["gateway-x"].effective.action == "block"
        assert call_status(worker, 4) is None, "observed, not applied"
    finally:
        await worker.stop()


async def test_a_worker_without_peers_has_no_peer_machinery(tmp_path: Path) -> None:
    cfg = parse_config({"log": {"verdict_log": ""},
                             "subscribers": {"data_dir": str(tmp_path / "data")}})  # fmt: skip
    worker = Worker(cfg)
    try:
        assert worker.peer_service is None and not isinstance(worker.metrics, StatsMetrics)
        assert "peer" not in [s.check.name for s in worker.core.pipeline.stages]
        assert not (tmp_path / "data" / "peers.sqlite3").exists()
    finally:
        await worker.stop()
