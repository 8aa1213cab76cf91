"""The Grafana dashboard and the Prometheus alert rules, against the real thing.

Static (no SIPp; promtool only): ``promtool check rules`` passes on
config/prometheus/alerts.yml and on the short-window copy the live test
loads; every alert has a severity and a runbook anchor; the dashboard is an
importable Grafana document whose every panel and query uses ``${datasource}``
and filters by ``$job`` and ``$instance``.

Live (``e2e``: SIPp, prometheus and promtool): the proxy of the e2e ``Lab``
with a [[peers]] name for 127.0.0.1, static block and label lists, a tiny
blocklist artefact, the prefix-rule check in observe mode and the subscriber
store in the test's directory, [flood] tight for strangers; Debian's
prometheus scraping its /metrics every second under job ``robocall-shield``
with alerts.yml loaded (and the short-window copy). SIPp drives 600 calls at
30/s with a mix of clean, blocked, labelled and observed callers and an
attestation mix; a stranger (127.0.0.2) sends a burst (403s, then
flood-limited) and a TCP stream without Content-Length is cut off. Then:
``promtool check metrics`` on a live scrape; every PromQL expression of
every dashboard panel and every alert rule evaluated through the HTTP API;
a spike of blocked and labelled callers with malformed messages and a
stranger's flood must fire BlockedShareSpike, PeerLabelledShareSpike,
ParseErrorSpike and FloodLimiting (the short-window copy), and stopping the
proxy RobocallShieldDown. Each alert's firing and quiet cases are in
tests/promtool/alerts_test.yml (tests/test_alert_rules.py).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .e2e.conftest import Lab
from .e2e.harness import HOST, udp_port_taken, wait_until
from .promlab import (
    ALERTS,
    DASHBOARD,
    JOB,
    PEER,
    ConfiguredProxy,
    PrometheusServer,
    build_blocklist,
    clean_callers,
    dashboard_queries,
    finite,
    identity_header,
    panels,
    send_from_stranger,
    send_malformed,
    send_unframed_tcp,
    shorten_expr,
    shortened_rules,
    start_callers,
    start_switch,
    substitute,
)
from .redis_server import RedisServer

STATIC_BLOCKED = "+12125550100"  # [screening] block
STATIC_LABELLED = "+12125550111"  # [screening] label
LIST_BLOCKED = "+13105550142"  # the artefact's operator block list
OBSERVED_PREFIX = "+1876555"  # artefact prefix rule "+1876 label", check in observe mode

ALERT_NAMES = [
    "RobocallShieldDown",
    "SwitchUnreachable",
    "RobocallShieldAbsent",
    "AllSwitchesDown",
    "BlockedShareSpike",
    "PeerLabelledShareSpike",
    "BlocklistStale",
    "BlocklistReloadFailing",
    "ParseErrorSpike",
    "EventLoopLagHigh",
    "Overloaded",
    "DisputeNearingDeadline",
    "WorkerRestarting",
    "UdpReceiveDrops",
    "FloodLimiting",
    "KernelDropIneffective",
    "TcpConnectionLimitReached",
    "TcpConnectionsCutOff",
    "StirCertificateFetchesFailing",
    "StirVerificationFailing",
    "NewCallsThrottled",
    "ClusterDegraded",
    "ClusterRowsDropped",
    "ClusterBlocklistMismatch",
    "DecisionRecordsDropped",
    "PeerFlaggedShareHigh",
    "RmdImportFailing",
]

# The live test loads a copy of alerts.yml with every window and offset
# divided by SHORTEN (5m -> 10s, 1h -> 2m) and every `for:` set to HOLD, in
# its own group and with label variant="shortened", beside the original.
SHORTEN = 30
HOLD = "2s"
SHORT_GROUP = "robocall-shield-shortened"
SHORT = "shortened"

BASELINE_CALLS = 600
RATE = 30  # calls/s: BASELINE_CALLS take 20 s

# Dashboard queries that must come back empty in this scenario, and why. Each
# counter here has labels, so prometheus_client shows no series before the
# first increment: empty means "it never happened", and it did not.
EXPECTED_EMPTY_PANELS = {
    ("Send errors", "A"): "no send fails on loopback",
    ("Check errors", "A"): "no screening check raises",
    ("Shed calls per second", "A"): "the proxy is never overloaded at 30 calls/s",
    ("STIR/SHAKEN verifications", "A"): "[stir] is off in the e2e lab: it needs trust anchors",
    ("STIR certificate cache and fetches", "A"): "[stir] is off in the e2e lab",
    ("STIR certificate cache and fetches", "B"): "[stir] is off in the e2e lab",
    ("STIR certificate fetch time and cache size", "A"): "[stir] is off in the e2e lab",
    ("STIR certificate fetch time and cache size", "B"): "[stir] is off in the e2e lab",
    ("STIR certificate fetch time and cache size", "C"): "[stir] is off in the e2e lab",
    ("Requests refused from unknown sources", "A"): (
        "[sip] unknown_sources is reject in the lab: the stranger gets 403, nothing is dropped"
    ),
    ("Switch OPTIONS responses", "A"): (
        "health checks are off in the e2e lab: the SIPp switch cannot answer OPTIONS"
    ),
}

# Every alert rule must be quiet in the healthy baseline, each for a reason.
QUIET_ALERTS = {
    "RobocallShieldDown": "the proxy is up and scraped",
    "SwitchUnreachable": "health checks are off, so the switch stays up",
    "RobocallShieldAbsent": "the job has its target",
    "AllSwitchesDown": "health checks are off, so the switch stays up",
    "BlockedShareSpike": (
        "the baseline is `[1h] offset 5m`: a Prometheus a minute old has nothing "
        "there, and the blocked share is steady anyway (the short copy fires below)"
    ),
    "PeerLabelledShareSpike": "as BlockedShareSpike, per peer",
    "BlocklistStale": "the artefact was built seconds ago",
    "BlocklistReloadFailing": "the artefact loaded: no reload failed",
    "ParseErrorSpike": "3 malformed messages: under the 0.1/s floor",
    "EventLoopLagHigh": "30 calls/s lag the loop by milliseconds",
    "Overloaded": "never overloaded at 30 calls/s",
    "DisputeNearingDeadline": "no dispute open",
    "WorkerRestarting": "one worker, never restarted",
    "UdpReceiveDrops": "30 calls/s never fill the receive queue",
    "FloodLimiting": "a burst of 30 limited messages is 0.1/s over 5 minutes (the short copy fires)",
    "KernelDropIneffective": "[flood] kernel_drop is off: no source is handed to the kernel",
    "TcpConnectionLimitReached": "one TCP connection at a time, of 4096 allowed",
    "TcpConnectionsCutOff": "the one connection cut off is bad-framing, not a limit's",
    "StirCertificateFetchesFailing": "[stir] is off: no certificate is fetched",
    "StirVerificationFailing": "[stir] is off: no call is verified",
    "NewCallsThrottled": "every new call is admitted at 30 calls/s",
    "ClusterDegraded": "the lab's Redis is up all along",
    "ClusterRowsDropped": "Redis never went away: no row waited, none was dropped",
    "ClusterBlocklistMismatch": "the only node: nobody announces another version",
    "DecisionRecordsDropped": "the writer keeps up with 30 calls/s",
    "PeerFlaggedShareHigh": "the lab's peer carries a small flagged share, under 100 calls in 5m",
    "RmdImportFailing": "no RMD export is configured: nothing fails",
}

# Alerts of the form `<quantity> <comparison> <number>`: the quantity alone
# must return data, which proves the metric and label names in the rule;
# except these, on a counter labelled by reason whose reasons never happened
# here (no series is born before the first; tests/test_tcp_limits.py shows
# the worker exporting each reason).
UNBORN = ("TcpConnectionLimitReached", "TcpConnectionsCutOff")
THRESHOLD = re.compile(r"^(?P<quantity>.+?)\s*(?:==|!=|>=|<=|>|<)\s*[\d.\s*+]+$", re.S)


def missing_tools(*tools: str) -> str | None:
    missing = [t for t in tools if shutil.which(t) is None]
    if not missing:
        return None
    return (
        f"{', '.join(missing)} not on PATH: install Debian's prometheus (prometheus, "
        "promtool) and sip-tester (sipp), e.g. `make system-deps`"
    )


def need(*tools: str) -> None:
    reason = missing_tools(*tools)
    if reason:
        pytest.skip(reason)


def promtool(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["promtool", *args], input=stdin, capture_output=True, timeout=30)


def load_dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text(encoding="utf-8")))


# -- static ----------------------------------------------------------------------


def test_alert_rules_pass_promtool() -> None:
    need("promtool")
    done = promtool("check", "rules", str(ALERTS))
    assert done.returncode == 0, (done.stdout + done.stderr).decode()
    assert f"SUCCESS: {len(ALERT_NAMES)} rules found" in done.stdout.decode()


def test_shortened_rules_pass_promtool(tmp_path: Path) -> None:
    need("promtool")
    path = tmp_path / "short.yml"
    path.write_text(
        shortened_rules(
            ALERTS.read_text(), factor=SHORTEN, hold=HOLD, group=SHORT_GROUP, label=SHORT
        )
    )
    done = promtool("check", "rules", str(path))
    assert done.returncode == 0, (done.stdout + done.stderr).decode()


def test_every_alert_has_severity_and_runbook_anchor() -> None:
    """By text, so no YAML library is needed (the live test reads the rules
    back from Prometheus as well)."""
    text = ALERTS.read_text()
    rules = re.split(r"^\s*- alert: ", text, flags=re.M)[1:]
    assert [r.split("\n", 1)[0].strip() for r in rules] == ALERT_NAMES
    for name, body in zip(ALERT_NAMES, rules, strict=True):
        assert re.search(r"^\s*for: \d+[smh]$", body, re.M), name
        assert re.search(r"^\s*severity: (critical|warning)$", body, re.M), name
        for key in ("summary", "description"):
            assert re.search(rf"^\s*{key}: ", body, re.M), f"{name}: no {key}"
        runbook = re.search(r'^\s*runbook: "README\.md#(\w+)"$', body, re.M)
        assert runbook and runbook.group(1) == name.lower(), name


def test_dashboard_is_importable_and_uses_the_variables() -> None:
    dash = load_dashboard()
    assert 36 <= dash["schemaVersion"] <= 41
    assert dash["uid"] == "robocall-shield" and dash["id"] is None
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert list(variables) == ["datasource", "job", "instance"]
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ds = {"type": "prometheus", "uid": "${datasource}"}
    assert variables["job"]["datasource"] == ds and variables["instance"]["datasource"] == ds

    ids = set()
    for panel in panels(dash):
        assert panel["id"] not in ids, f"duplicate panel id {panel['id']}"
        ids.add(panel["id"])
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == ds, panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]
        for t in panel["targets"]:
            assert t["datasource"] == ds, panel["title"]

    queries = dashboard_queries(dash)
    assert len(queries) >= 40
    for q in queries:
        # Every metric selector filters by the job and instance variables.
        names = re.findall(r"\b(rs_\w+|up)\b(\{[^}]*\})?", q.expr)
        assert names, q
        for name, selector in names:
            assert 'job=~"$job", instance=~"$instance"}' in selector, (q, name)


# -- live: the lab -----------------------------------------------------------------


@dataclass
class Live:
    lab: Lab
    proxy: ConfiguredProxy
    prom: PrometheusServer
    artefact_version: str

    def report(self) -> str:
        return f"{self.lab.report()}\n--- prometheus (tail):\n{self.prom.output()}"


def baseline_rows(count: int) -> list[tuple[str, str]]:
    """Per 20 calls: 1 static block, 1 artefact block, 1 static label, 1
    caller matching the observed prefix rule (passes), 16 clean callers; the
    clean ones claim attestation A, B, C or none. Callers are distinct
    except the listed ones, so the reputation engine sees no pattern."""
    clean = clean_callers(count)
    attests = ("A", "A", "A", "B", "C", None)
    rows = []
    for i in range(count):
        slot = i % 20
        if slot == 0:
            rows.append((STATIC_BLOCKED, identity_header(None, STATIC_BLOCKED)))
        elif slot == 10:
            rows.append((LIST_BLOCKED, identity_header("C", LIST_BLOCKED)))
        elif slot == 5:
            rows.append((STATIC_LABELLED, identity_header("B", STATIC_LABELLED)))
        elif slot == 15:
            caller = f"{OBSERVED_PREFIX}{i:04d}"
            rows.append((caller, identity_header("C", caller)))
        else:
            caller = next(clean)
            rows.append((caller, identity_header(attests[i % len(attests)], caller)))
    return rows


def spike_rows() -> list[tuple[str, str]]:
    """Half blocked, half labelled."""
    return [
        (STATIC_BLOCKED, identity_header(None, STATIC_BLOCKED)),
        (STATIC_LABELLED, identity_header("C", STATIC_LABELLED)),
        (LIST_BLOCKED, identity_header(None, LIST_BLOCKED)),
        (STATIC_LABELLED, identity_header(None, STATIC_LABELLED)),
    ]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    reason = missing_tools("sipp", "prometheus", "promtool")
    if reason:
        pytest.skip(reason)
    work = tmp_path_factory.mktemp("prometheus-lab")
    lab = Lab(work)
    prom = PrometheusServer(work / "prometheus")
    redis = RedisServer(work / "redis")  # [cluster]: a real link, so its panels have data
    try:
        redis.start()
        lists = build_blocklist(work, [LIST_BLOCKED], [f"{OBSERVED_PREFIX[:5]} label"])
        version = json.loads((lists / "manifest.json").read_text())["version"]

        switch = start_switch(lab)
        wait_until(lambda: udp_port_taken(lab.uas_port), 10.0, "the SIPp switch to bind")
        assert switch.process is not None and switch.process.poll() is None, lab.report()

        proxy = ConfiguredProxy(
            work,
            sip_port=lab.proxy_port,
            admin_port=lab.admin_port,
            switch_port=lab.uas_port,
            block=[STATIC_BLOCKED],
            label=[STATIC_LABELLED],
            extra_config="\n".join(
                [
                    "[screening.modes]",
                    'prefix_rule = "observe"  # rs_screening_observed_total gets data',
                    "",
                    "[blocklists]",
                    f"dir = {json.dumps(str(lists))}",
                    "watch_interval = 0.0",
                    "",
                    "[subscribers]",
                    f"data_dir = {json.dumps(str(work / 'subscribers'))}",
                    "",
                    "[flood]  # the stranger goes over at once; the lab's peer is exempt",
                    "per_ip_rate = 5.0",
                    "per_ip_burst = 10",
                    "peer_factor = 0.0",
                    "",
                    "[[peers]]",
                    f'name = "{PEER}"',
                    f'addresses = ["{HOST}/32"]',
                    "",
                    "[cluster]",
                    "enabled = true",
                    f"redis_url = {json.dumps(redis.url)}",
                    'node = "lab"',
                    "",
                ]
            ),
        )
        lab.proxy = proxy
        proxy.start()
        proxy.wait_metric("rs_blocklist_entries", 1, timeout=10, kind="numbers")

        short = work / "alerts-shortened.yml"
        short.write_text(
            shortened_rules(
                ALERTS.read_text(), factor=SHORTEN, hold=HOLD, group=SHORT_GROUP, label=SHORT
            )
        )
        prom.start(f"{HOST}:{lab.admin_port}", [ALERTS, short])
        live = Live(lab, proxy, prom, version)
        wait_until(
            lambda: prom.value(f'up{{job="{JOB}"}}') == 1, 15.0, "prometheus to scrape the proxy"
        )

        # one 403 first, scraped before the burst: a counter series that is
        # born at its final value has no rate
        send_from_stranger(lab.proxy_port, 1)
        wait_until(
            lambda: prom.value('sum(rs_sip_local_replies_total{status="403"})') == 1,
            10.0,
            "prometheus to scrape the first 403",
        )
        uac = start_callers(
            lab, "baseline", baseline_rows(BASELINE_CALLS), rate=RATE, calls=BASELINE_CALLS
        )
        send_malformed(lab.proxy_port, 3)
        send_from_stranger(lab.proxy_port, 40)  # 403s, then flood-limited
        assert send_unframed_tcp(lab.proxy_port), "the proxy kept an unframed stream open"
        assert uac.wait(60) == 0, f"baseline calls failed\n{live.report()}"
        proxy.wait_metric("rs_screening_verdicts_total", BASELINE_CALLS, timeout=5)
        wait_until(
            lambda: prom.value("sum(rs_screening_verdicts_total)") == BASELINE_CALLS,
            10.0,
            "prometheus to scrape the last verdicts",
        )
        yield live
    finally:
        prom.stop()
        lab.close()
        redis.kill()


# -- live: the checks ------------------------------------------------------------


@pytest.mark.e2e
def test_promtool_check_metrics_on_a_live_scrape(live: Live) -> None:
    scrape = live.proxy.scrape()
    assert b"rs_peer_calls_total{" in scrape  # a scrape after traffic, labels and all
    done = promtool("check", "metrics", stdin=scrape)
    problems = (done.stdout + done.stderr).decode()
    assert done.returncode == 0 and not problems.strip(), f"promtool check metrics:\n{problems}"


def grafana_values(live: Live) -> dict[str, str]:
    """What Grafana would put in for the variables: one job, this instance,
    and a range for the $__range tables (the lab is under a minute old)."""
    return {
        "job": JOB,
        "instance": f"{HOST}:{live.lab.admin_port}",
        "__rate_interval": "1m",
        "__range": "5m",
    }


@pytest.mark.e2e
def test_dashboard_variables_resolve(live: Live) -> None:
    values = grafana_values(live)
    variables = {v["name"]: v for v in load_dashboard()["templating"]["list"]}
    for name in ("job", "instance"):
        query = variables[name]["query"]["query"]
        m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query)
        assert m, query
        found = live.prom.label_values(m.group(2), substitute(m.group(1), values))
        assert found == [values[name]], (name, query, found)


@pytest.mark.e2e
def test_every_dashboard_expression_returns_data(live: Live) -> None:
    values = grafana_values(live)
    dash = load_dashboard()
    queries = dashboard_queries(dash)
    keys = {(q.panel, q.ref) for q in queries}
    assert set(EXPECTED_EMPTY_PANELS) <= keys, "EXPECTED_EMPTY_PANELS names a missing query"

    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    failures = []
    for q in queries:
        expr = substitute(q.expr, values)
        try:
            samples = live.prom.query(expr)
        except AssertionError as exc:
            failures.append(f"{q.panel} {q.ref}: {exc}")
            continue
        results[(q.panel, q.ref)] = samples
        if (q.panel, q.ref) in EXPECTED_EMPTY_PANELS:
            if samples:
                failures.append(f"{q.panel} {q.ref}: expected empty, got {samples}\n  {expr}")
        elif not samples:
            failures.append(f"{q.panel} {q.ref}: no data\n  {expr}")
        elif not finite(samples):
            failures.append(f"{q.panel} {q.ref}: NaN or Inf in {samples}\n  {expr}")
    assert not failures, "\n".join(failures) + "\n" + live.report()

    def labels(panel: str, ref: str, label: str) -> set[str]:
        return {s["metric"].get(label, "") for s in results[(panel, ref)]}

    def value(panel: str, ref: str, **match: str) -> float:
        found = [s for s in results[(panel, ref)] if match.items() <= s["metric"].items()]
        assert len(found) == 1, (panel, ref, match, results[(panel, ref)])
        return float(found[0]["value"][1])

    # The panels show what their titles say, for this traffic mix.
    assert labels("Verdicts per second", "A", "action") == {"pass", "label", "block"}
    assert 0.07 < value("Blocked and labelled share", "A") < 0.14  # 2 in 20
    assert 0.03 < value("Blocked and labelled share", "B") < 0.2  # 1 in 20, + reputation
    reasons = {
        (s["metric"]["action"], s["metric"]["reason"]) for s in results[("Top reasons", "A")]
    }
    assert {("block", "blocklist"), ("label", "labellist")} <= reasons, reasons
    assert ("prefix_rule", "label") in {
        (s["metric"]["check"], s["metric"]["action"])
        for s in results[("Observe-mode verdicts", "A")]
    }
    table = "Per peer (over the dashboard's time range)"
    for ref in "ABCDEFGHI":
        assert labels(table, ref, "peer") == {PEER}, (ref, results[(table, ref)])
    for ref in "DEFG":  # attestation A, B, C and none are all claimed
        assert value(table, ref) > 0.03, ref
    # ASR: the switch answers every call it gets (the proxy's own 603s are
    # no final response of the switch, so blocked calls are not counted)
    assert value(table, "H") > 0.99
    assert 0.15 < value(table, "I") < 1.5  # ACD: SIPp hangs up after 0.2 s
    assert labels("Blocklist version", "A", "version") == {live.artefact_version}
    assert value("Blocklist entries", "A", kind="numbers") == 1
    assert value("Blocklist entries", "A", kind="prefix_rules") == 1
    assert labels("Parse errors by status", "A", "status") == {"400"}
    assert "ack-absorbed" in labels("Drops by reason", "A", "reason")
    assert value("Switch up", "A", switch="sw") == 1
    assert value("Proxy scrape up", "A") == 1
    assert "block-all-suspected" in labels("Subscribers by policy", "A", "policy")
    # reliability and security: the stranger's burst, the unframed TCP stream
    assert value("Flood-limited messages by scope and action", "A", scope="ip", action="drop") > 0
    assert labels("Flood tables", "A", "table") == {"ips", "callers"}
    assert value("Flood tables", "A", table="ips") >= 1  # the stranger's bucket
    assert value("Sources dropped in the kernel", "A") == 0  # [flood] kernel_drop is off
    assert labels("TCP connections refused or cut off", "A", "reason") == {"bad-framing"}
    assert labels("SIP messages received over TCP and TLS", "A", "transport") == {"tcp"}
    assert value("TCP connections and unfinished bytes", "B") == 0
    assert value("New-call admission ratio", "A") == 1
    assert value("Requests refused from unknown sources", "B") > 0  # the stranger's 403s


@pytest.mark.e2e
def test_every_alert_rule_is_valid_and_quiet(live: Live) -> None:
    groups = {g["name"]: g for g in live.prom.rule_groups()}
    assert set(groups) == {"robocall-shield", SHORT_GROUP}, groups.keys()
    rules = groups["robocall-shield"]["rules"]
    assert [r["name"] for r in rules] == ALERT_NAMES
    assert set(QUIET_ALERTS) == set(ALERT_NAMES)
    short = {r["name"]: r for r in groups[SHORT_GROUP]["rules"]}
    measured: set[str] = set()

    for rule in rules:
        name = rule["name"]
        assert rule["type"] == "alerting", name
        assert rule["health"] == "ok", f"{name}: {rule.get('lastError')}"
        assert rule["duration"] > 0, name
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        assert rule["annotations"]["runbook"] == f"README.md#{name.lower()}", name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
        # The expression of alerts.yml, as Prometheus parsed it: valid, and
        # quiet in a healthy lab (QUIET_ALERTS says why for each).
        assert live.prom.query(rule["query"]) == [], f"{name}: {QUIET_ALERTS[name]}"
        threshold = THRESHOLD.match(rule["query"])
        if threshold and " and " not in rule["query"] and name not in UNBORN:
            quantity = threshold.group("quantity")
            assert live.prom.query(quantity), f"{name}: no data for {quantity}"
            measured.add(name)
        # The short copy differs in its windows only.
        copy = short[name]
        assert copy["health"] == "ok", f"{name} (short): {copy.get('lastError')}"
        assert copy["query"] == shorten_expr(rule["query"], SHORTEN), name

    # The compound rules (shares with a traffic floor) are shown to work by
    # firing their short copies in test_spike_and_down_fire_alerts.
    assert measured == set(ALERT_NAMES) - {
        "RobocallShieldAbsent",  # absent(): empty exactly when the job is there
        "BlockedShareSpike",
        "PeerLabelledShareSpike",
        "ParseErrorSpike",
        "KernelDropIneffective",
        "StirCertificateFetchesFailing",
        "StirVerificationFailing",
        "PeerFlaggedShareHigh",  # a share with a floor: fired in tests/promtool/alerts_test.yml
        *UNBORN,
    }, measured
    active = [a for a in live.prom.alerts() if "variant" not in a["labels"]]
    assert active == [], active


@pytest.mark.e2e
def test_spike_and_down_fire_alerts(live: Live) -> None:
    """Runs last: it changes the traffic mix and stops the proxy."""
    prom = live.prom

    def short_alerts() -> dict[str, dict[str, Any]]:
        return {
            a["labels"]["alertname"]: a
            for a in prom.alerts()
            if a["labels"].get("variant") == SHORT
        }

    spikes = {"BlockedShareSpike", "PeerLabelledShareSpike", "ParseErrorSpike"}
    # A steady mix does not look like a spike, short windows or not.
    assert not spikes & set(short_alerts()), short_alerts()

    stop = threading.Event()

    def malformed() -> None:  # 10 per second: a few % of the messages received
        while not stop.wait(0.1):
            send_malformed(live.lab.proxy_port, 1)
            send_from_stranger(live.lab.proxy_port, 5)  # 50/s: 45/s over its flood limit

    sender = threading.Thread(target=malformed, daemon=True)
    uac = start_callers(live.lab, "spike", spike_rows(), rate=RATE, calls=600)
    sender.start()
    start = time.monotonic()
    expected = spikes | {"FloodLimiting"}
    seen: dict[str, list[str]] = {name: [] for name in expected}
    firing: dict[str, dict[str, Any]] = {}
    try:
        while time.monotonic() - start < 30 and len(firing) < len(expected):
            for name, alert in short_alerts().items():
                if name in seen:
                    if alert["state"] not in seen[name]:
                        seen[name].append(alert["state"])
                    if alert["state"] == "firing":
                        firing[name] = alert
            time.sleep(0.25)
    finally:
        stop.set()
        sender.join(timeout=2)
        uac.kill()
    elapsed = time.monotonic() - start
    assert set(firing) == expected, f"after {elapsed:.1f}s: states seen {seen}\n{live.report()}"
    assert firing["BlockedShareSpike"]["labels"]["job"] == JOB
    assert firing["BlockedShareSpike"]["labels"]["severity"] == "warning"
    assert float(firing["BlockedShareSpike"]["value"]) > 0.3
    assert firing["PeerLabelledShareSpike"]["labels"]["peer"] == PEER
    assert firing["ParseErrorSpike"]["labels"]["instance"] == f"{HOST}:{live.lab.admin_port}"
    assert firing["FloodLimiting"]["labels"]["scope"] == "ip"
    assert float(firing["FloodLimiting"]["value"]) > 1

    # The proxy goes away: `up` is 0 from the next scrape.
    live.proxy.stop()
    wait_until(
        lambda: short_alerts().get("RobocallShieldDown", {}).get("state") == "firing",
        15.0,
        "RobocallShieldDown to fire",
    )
    down = short_alerts()["RobocallShieldDown"]
    assert down["labels"]["instance"] == f"{HOST}:{live.lab.admin_port}"
    assert down["labels"]["severity"] == "critical"
