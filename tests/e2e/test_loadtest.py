"""The load-comparison harness (python -m loadtest) in a tiny bounded mode.

Real SIPp, the real proxy and (when installed) Kamailio on 127.0.0.1; each
run is 2 s of calls at a low rate. The checks are on the JSON the harness
writes: every call accounted for, the blocked and cancelled shares exactly
as generated from the blocklist, CPU measured.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
KAMAILIO_CFG = ROOT / "loadtest" / "kamailio" / "kamailio.cfg"
RATE, SECONDS = 100, 2
CALLS = RATE * SECONDS


def run_harness(tmp_path: Path, target: str, *extra: str) -> dict[str, Any]:
    if shutil.which("sipp") is None:
        pytest.skip("sipp is not on PATH: install Debian's sip-tester (make system-deps)")
    out = tmp_path / "comparison.json"
    cmd = [
        sys.executable, "-m", "loadtest", "--targets", target,
        "--fixed-rate", str(RATE), "--step-seconds", str(SECONDS),
        "--blocked-share", "0.1", "--labelled-share", "0.1", "--cancel-share", "0.1",
        "--list-size", "5000", "--no-overload",
        "--json", str(out), "--markdown", str(tmp_path / "comparison.md"), *extra,
    ]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, f"harness failed\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def check_run(run: dict[str, Any]) -> None:
    assert run["calls_made"] == CALLS, run
    assert run["failed"] == 0, run
    # every call ended one way: answered, blocked, cancelled or shed
    accounted = run["completed"] + run["blocked"] + run["cancelled"] + run["shed"] + run["failed"]
    assert accounted == run["calls_made"], run
    # the CSV repeats every 1000 rows with 10% of each kind spread evenly
    assert run["expected"] == {"clean": 140, "blocked": 20, "labelled": 20, "cancel": 20}, run
    assert run["blocked"] == run["expected"]["blocked"], run
    assert run["cancelled"] == run["expected"]["cancel"], run
    assert run["completed"] == run["expected"]["clean"] + run["expected"]["labelled"], run
    # the proxy's reputation may label more callers; it never labels fewer
    assert run["labelled"] >= run["expected"]["labelled"], run
    assert run["target_cpu_s"] > 0 and run["cpu_per_1000_calls"] > 0, run
    assert run["target_processes"] >= 1
    assert run["passed"] and all(run["checks"].values()), run


def test_harness_measures_the_proxy(tmp_path: Path) -> None:
    result = run_harness(tmp_path, "proxy", "--probe-samples", "30")
    proxy = result["targets"]["proxy"]
    (run,) = proxy["search"]
    check_run(run)
    assert run["target"] == "proxy" and run["rate"] == RATE
    assert proxy["max_rate"] == RATE
    assert proxy["cost"]["cpu_per_1000_calls"] == run["cpu_per_1000_calls"]
    # the probe got answers through the proxy, idle and under load
    for when in ("idle", "loaded"):
        probe = proxy["latency"][when]
        assert probe["samples"]["invite_603_via_target"] > 0, probe
        assert probe["samples"]["bye_200_via_target"] > 0, probe
        assert probe["us"]["invite_603_via_target"]["p50"] > 0, probe
    loaded = proxy["latency"]["loaded_run"]
    assert loaded["rate"] == RATE // 2 and loaded["calls_made"] == RATE // 2 * SECONDS, loaded
    assert loaded["failed"] == 0 and loaded["blocked"] == loaded["expected"]["blocked"], loaded
    table = (tmp_path / "comparison.md").read_text()
    assert "| highest rate with < 0.1% failed calls (calls/s) | 100 |" in table, table


def test_harness_rejects_bad_input(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "loadtest", "--blocked-share", "0.7", "--cancel-share", "0.5"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "shares exceed 1" in done.stderr
    done = subprocess.run(
        [sys.executable, "-m", "loadtest", "--targets", "asterisk"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "unknown ['asterisk']" in done.stderr


def kamailio_or_skip() -> str:
    exe = shutil.which("kamailio") or (
        "/usr/sbin/kamailio" if Path("/usr/sbin/kamailio").exists() else None
    )
    if exe is None:
        pytest.skip("kamailio is not installed: make system-deps (or make bench-deps) installs it")
    return exe


def test_kamailio_accepts_the_config() -> None:
    exe = kamailio_or_skip()
    for defines in ([], ["-A", "WITH_RR"]):
        done = subprocess.run(
            [exe, "-c", "-f", str(KAMAILIO_CFG), *defines],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "config file ok" in (done.stdout + done.stderr).lower(), done.stderr


def test_harness_runs_kamailio_on_the_same_work(tmp_path: Path) -> None:
    kamailio_or_skip()
    result = run_harness(tmp_path, "kamailio", "--no-latency")
    (run,) = result["targets"]["kamailio"]["search"]
    check_run(run)
    # Kamailio labels exactly the listed callers: it has no reputation engine
    assert run["labelled"] == run["expected"]["labelled"], run
    assert run["target_processes"] >= 3  # main, UDP receiver, timers: all counted
