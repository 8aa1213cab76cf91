"""The alert rules and the dashboard, without a live Prometheus.

``promtool test rules`` runs tests/promtool/alerts_test.yml: each alert of
the reliability and security group fires on the series that should fire it,
with its labels and rendered annotations, and stays quiet on near misses
(under a threshold or traffic floor, before its ``for:``). And every metric
the dashboard's queries and the alert expressions name is one a running
worker exports, with [stir], [flood], TCP and the subscriber store on
(tests/test_prometheus.py then queries them against a live lab).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from proxy.config import parse_config
from proxy.server import Worker
from proxy.stir.verify import Outcome
from tests.promlab import ALERTS, DASHBOARD, dashboard_queries
from tests.stir_ca import make_sti_ca
from tests.test_prometheus import ALERT_NAMES, load_dashboard
from tests.test_server import free_port, open_peer

UNITS = Path(__file__).resolve().parent / "promtool" / "alerts_test.yml"

# Each must have a unit test in which it fires and one in which it does not.
UNIT_TESTED = {
    "FloodLimiting",
    "KernelDropIneffective",
    "TcpConnectionLimitReached",
    "TcpConnectionsCutOff",
    "StirCertificateFetchesFailing",
    "StirVerificationFailing",
    "NewCallsThrottled",
    "UdpReceiveDrops",
    "ClusterDegraded",
    "ClusterRowsDropped",
    "ClusterBlocklistMismatch",
    "DecisionRecordsDropped",
    "PeerFlaggedShareHigh",
    "RmdImportFailing",
}

# Prometheus's own series; every other name is the proxy's
PROMETHEUS_SERIES = {"up"}


def test_alert_rules_pass_their_promtool_unit_tests() -> None:
    if shutil.which("promtool") is None:
        pytest.skip("promtool missing: `make system-deps` installs Debian's prometheus")
    done = subprocess.run(
        ["promtool", "test", "rules", str(UNITS)], capture_output=True, timeout=60
    )
    output = (done.stdout + done.stderr).decode()
    assert done.returncode == 0, output
    assert "SUCCESS" in output and "FAILED" not in output, output


def test_each_unit_tested_alert_fires_and_stays_quiet_in_its_tests() -> None:
    """By text: after each ``alertname:``, ``exp_alerts: []`` is a quiet
    case and ``- exp_labels:`` a firing one."""
    text = UNITS.read_text()
    rule_file = re.search(r"rule_files:\n\s+- (\S+)\n", text)
    assert rule_file and (UNITS.parent / rule_file.group(1)).resolve() == ALERTS
    fired: set[str] = set()
    quiet: set[str] = set()
    for m in re.finditer(r"alertname: (\w+)\n\s+exp_alerts:( \[\])?\n(\s+- exp_labels:)?", text):
        name, empty, labels = m.groups()
        assert name in ALERT_NAMES, f"the unit tests name an unknown alert {name}"
        if empty:
            quiet.add(name)
        else:
            assert labels, f"{name}: exp_alerts is neither [] nor a list of alerts"
            fired.add(name)
    assert fired >= UNIT_TESTED, UNIT_TESTED - fired
    assert quiet >= UNIT_TESTED, UNIT_TESTED - quiet


def exported_names(registry: CollectorRegistry) -> dict[str, set[tuple[str, ...]]]:
    """Every sample name the registry can export (a counter's _total, a
    histogram's _bucket, ...), with the label sets seen on its samples now."""
    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_count", "_sum"),
        "info": ("_info",),
        "gauge": ("",),
        "summary": ("", "_count", "_sum"),
    }
    out: dict[str, set[tuple[str, ...]]] = {}
    for family in registry.collect():
        for suffix in suffixes.get(family.type, ("",)):
            out.setdefault(family.name + suffix, set())
        for sample in family.samples:
            out.setdefault(sample.name, set()).add(tuple(sorted(sample.labels.items())))
    return out


def expression(rule: str) -> str:
    """The expr of one rule's text, without the comments above it."""
    return rule.split("expr:", 1)[1].split("\n        for:", 1)[0]


def used_names(expr: str) -> set[str]:
    return set(re.findall(r"\b(rs_\w+|up)\b(?![\w(])", expr))


async def test_every_metric_the_dashboard_and_alerts_name_is_exported(tmp_path: Path) -> None:
    ca = make_sti_ca()
    (tmp_path / "sti-ca").mkdir()
    (tmp_path / "sti-ca" / "root.pem").write_bytes(ca.root.pem)
    switch, switch_port = await open_peer()
    cfg = parse_config(
        {
            "sip": {"host": "127.0.0.1", "port": free_port(), "transports": ["udp", "tcp"]},
            "switches": [{"name": "sw", "host": "127.0.0.1", "port": switch_port}],
            "routing": {"health_checks": False},
            "admin": {"enabled": False},
            "log": {"verdict_log": ""},
            "subscribers": {"data_dir": str(tmp_path / "data")},
            "stir": {"enabled": True, "trust_dir": str(tmp_path / "sti-ca")},
            "peers": [{"name": "trunk", "addresses": ["192.0.2.0/24"]}],
            # nothing listens there: the link starts degraded, its metrics exported
            "cluster": {"enabled": True, "redis_url": "redis://127.0.0.1:1/0", "timeout": 0.2},
        }
    )
    worker = Worker(cfg)
    await worker.start()
    try:
        exported = exported_names(worker.metrics.registry)
    finally:
        await worker.stop()
        assert switch.transport is not None
        switch.transport.close()

    dashboard = {q.panel: used_names(q.expr) for q in dashboard_queries(load_dashboard())}
    rules = re.split(r"^\s*- alert: ", ALERTS.read_text(), flags=re.M)[1:]
    alerts = {r.split("\n", 1)[0].strip(): used_names(expression(r)) for r in rules}
    for where, names in [*dashboard.items(), *alerts.items()]:
        assert names, f"{where} names no metric"
        unknown = names - set(exported) - PROMETHEUS_SERIES
        assert not unknown, f"{where}: {sorted(unknown)} not exported by a running worker"
    # the reliability panels are in the file this test read
    assert {"rs_flood_limited_total", "rs_tcp_closed_total", "rs_new_calls_admitted_ratio",
            "rs_stir_certificate_fetches_total"} <= set().union(*dashboard.values())  # fmt: skip
    assert DASHBOARD.name == "robocall-shield.json"

    # label values the alerts match exactly are ones the proxy exports
    outcomes = {dict(labels)["outcome"] for labels in exported["rs_stir_certificate_fetches_total"]}
    fetch_rule = ALERTS.read_text().split("- alert: StirCertificateFetchesFailing")[1]
    matched = set(re.findall(r'outcome=~"([\w|-]+)"', expression(fetch_rule)))
    assert matched and all(set(m.split("|")) <= outcomes for m in matched), (matched, outcomes)
    assert f'result="{Outcome.FAILED}"' in ALERTS.read_text()
