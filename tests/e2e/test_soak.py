"""The soak (loadtest/soak.py, `make soak`) in its 60-second CI version:
SIPp at 200 calls/s through a real proxy while the blocklist is rebuilt and
reloaded and subscribers are written. Memory is judged more loosely than in
the 10-minute run (25%): a minute is mostly the warm-up of bounded tables."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def test_a_one_minute_soak_fails_no_call_and_leaks_nothing(tmp_path: Path) -> None:
    if shutil.which("sipp") is None:
        pytest.skip("sipp is not on PATH: install Debian's sip-tester (make system-deps)")
    out = tmp_path / "soak.json"
    cmd = [sys.executable, "-m", "loadtest.soak", "--seconds", "60", "--rate", "200",
           "--rss-tolerance", "0.25", "--json", str(out), "--work", str(tmp_path / "work")]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=400, check=False)
    assert out.exists(), f"soak failed\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    result = json.loads(out.read_text())
    assert result["failed"] == 0 and result["shed"] == 0, result
    assert result["calls_made"] == 12000, result
    assert result["completed"] + result["blocked"] == result["calls_made"], result
    assert len(result["reloads"]) >= 5 and set(result["reloads"]) == {"200 loaded"}, result
    assert result["subscriber_writes"]["failed"] == 0 and result["subscriber_writes"]["ok"] > 10
    assert result["fds_flat"], result
    assert result["rss_flat"], result
    assert result["passed"] and done.returncode == 0, done.stdout[-2000:]
