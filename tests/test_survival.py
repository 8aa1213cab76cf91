"""The survival test (loadtest/survival.py) at CI size: a real `serve`
process takes 20,000 hostile datagrams and 300 TCP abuses (slowloris,
connection floods past the per-source cap, oversized headers, garbage,
huge Content-Length, hundreds of Vias, peers that never read) while calls
go through it to a stand-in switch. About 20 s; loopback only."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RSS_GROWTH_MB = 50  # the bound this test holds the proxy to
CAP = 100  # --cap: the per-number and per-address tables' bound in this run


def test_the_proxy_survives_hostile_input_and_calls_still_complete(tmp_path: Path) -> None:
    out = tmp_path / "survival.json"
    cmd = [
        sys.executable, "-m", "loadtest.survival",
        "--datagrams", "20000", "--rate", "2000", "--tcp-abuses", "300",
        "--message-timeout", "1", "--call-rate", "10", "--max-seconds", "25",
        "--cap", str(CAP),
        "--json", str(out),
    ]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=150, check=False)
    assert out.exists(), f"no report\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    report = json.loads(out.read_text())
    summary = json.dumps({k: v for k, v in report.items() if k != "proxy_metrics"}, indent=1)
    assert report["crashes"] == 0, summary
    assert report["tracebacks_in_log"] == 0, summary
    assert report["datagrams"]["sent"] == 20000, summary
    calls = report["calls"]
    assert calls["attempted"] >= 50 and calls.get("completed") == calls["attempted"], summary
    rss = report["rss_mb"]
    assert rss["end"] - rss["start"] < RSS_GROWTH_MB and rss["peak"] - rss["start"] < RSS_GROWTH_MB
    fds = report["fds"]
    assert fds["end"] <= fds["start"] + 4, summary  # every abusive connection was closed
    tcp = report["tcp"]
    assert tcp["launched"] == 300, summary
    outcomes = tcp["outcomes"]
    # slowloris connections are ended by the proxy, at the message deadline
    ended = outcomes.get("slowloris:closed", 0) + outcomes.get("slowloris:reset", 0)
    assert ended == tcp["by_kind"]["slowloris"], summary
    assert outcomes.get("flood:refused-connections", 0) > 0, summary
    closed = report["proxy_metrics"]
    assert closed.get("rs_tcp_closed_total[message-timeout]", 0) > 0, closed
    assert closed.get("rs_tcp_closed_total[source-limit]", 0) > 0, closed
    # the attack's junk INVITEs and the calls bring more distinct callers
    # and addresses than CAP: the tables that hold them stay at their bound
    for table in ("rs_reputation_tracked[callers]", "rs_flood_tracked[callers]"):
        assert 0 < closed.get(table, -1) <= CAP, (table, closed)
    assert 0 < closed.get("rs_flood_tracked[ips]", -1) <= CAP, closed
    assert done.returncode == 0, summary
