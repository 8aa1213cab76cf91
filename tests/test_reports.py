"""Monthly reports from the decision records: campaigns and peers."""

from __future__ import annotations

import csv
import datetime as dt
from collections import Counter
from pathlib import Path

import pytest

from loadtest.records_sim import CampaignTruth, SimRecord, generate
from proxy.cli import main
from proxy.records.query import QueryError
from proxy.records.recorder import DecisionRecorder
from proxy.records.reports import (
    MIN_SCORE,
    find_campaigns,
    parse_month,
    peer_stats,
    prefix_of,
)
from proxy.records.settings import RecordsConfig

# two days of traffic at the end of September, the campaign on the first
START = dt.datetime(2025, 9, 29, 6, tzinfo=dt.UTC).timestamp()
PNG = b"\x89PNG\r\n\x1a\n"
Data = tuple[Path, list[SimRecord], CampaignTruth]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Data:
    sims, truth = generate(seed=21, start=START, hours=40, callers=600, campaign_calls=500)
    # a day of the next month: outside a September report
    later, _ = generate(seed=22, start=START + 3 * 86_400, hours=4, callers=50, campaign_calls=30)
    directory = tmp_path_factory.mktemp("records")
    rec = DecisionRecorder(RecordsConfig(dir=str(directory)))
    for s in [*sims, *later]:
        rec.add(s.event, s.wall_time, s.peer)
    rec.close()
    assert rec.written == len(sims) + len(later)
    return directory, sims, truth


def flagged(s: SimRecord) -> bool:
    ev = s.event
    return ev.action.value != "pass" or ev.screening.verdict.score >= MIN_SCORE


def test_the_injected_campaign_is_the_top_one(data: Data) -> None:
    directory, sims, truth = data
    report = find_campaigns(directory, parse_month("2025-09"))
    assert report.days_read == 2
    assert report.flagged_calls == sum(map(flagged, sims))
    top = report.campaigns[0]
    assert (top.peer, top.prefix) == (truth.peer, truth.prefix) == ("gateway", "469-382")
    assert top.calls == truth.calls == 500
    assert top.distinct_callers == truth.callers
    assert top.distinct_callees == truth.callees == 500  # dialled in sequence
    assert top.blocked == truth.blocked
    assert top.blocked_share == pytest.approx(truth.blocked / truth.calls)
    assert (top.first_seen, top.last_seen) == pytest.approx((truth.first, truth.last))
    assert sum(top.daily.values()) == 500
    # the ordinary callers' odd flagged calls are scattered: no other campaign
    assert len(report.campaigns) == report.found == 1


def test_a_long_gap_splits_a_campaign_and_min_calls_filters(data: Data) -> None:
    directory, _, truth = data
    month = parse_month("2025-09")
    tight = find_campaigns(directory, month, gap_minutes=0.05)  # 3 s: calls come 2-8 s apart
    assert all(c.calls < truth.calls for c in tight.campaigns)
    assert sum(c.calls for c in tight.campaigns if c.prefix == "469-382") <= truth.calls
    assert find_campaigns(directory, month, min_calls=501).campaigns == []
    assert find_campaigns(directory, month, min_calls=1).found > 1  # the scattered ones


def test_peer_stats_match_the_generated_traffic(data: Data) -> None:
    directory, sims, truth = data
    month = parse_month("2025-09")
    report = peer_stats(directory, month, campaigns=find_campaigns(directory, month))
    stats = {s.peer: s for s in report.peers}
    assert set(stats) == {"carrier-a", "carrier-b", "gateway"}
    for peer, s in stats.items():
        mine = [r for r in sims if r.peer == peer]
        assert s.calls == len(mine)
        assert s.flagged == sum(map(flagged, mine))
        assert s.blocked == sum(r.event.action.value == "block" for r in mine)
        mix = Counter(r.event.call.attest or "unsigned" for r in mine)
        assert s.attest == dict(mix)
        assert s.distinct_callers == len({r.event.call.caller_key for r in mine})
        assert s.verify_failed == sum(r.event.call.verified == "TN-Validation-Failed"
                                      for r in mine)  # fmt: skip
        assert sum(s.daily.values()) == s.calls
    gateway = stats["gateway"]
    assert gateway.share(gateway.flagged) == 1.0 and gateway.attest == {"C": truth.calls}
    assert [c.prefix for c in gateway.campaigns] == ["469-382"]
    assert gateway.verify_failed == truth.calls // 10
    assert stats["carrier-a"].campaigns == []


def test_prefixes() -> None:
    assert prefix_of(14693820000) == "469-382"
    assert prefix_of(12125550142) == "212-555"
    assert prefix_of(442079460000) == "+44207"
    assert prefix_of(None) == "withheld"


def test_months() -> None:
    m = parse_month("2024-02")
    assert (len(m.days), m.days[-1]) == (29, dt.date(2024, 2, 29))
    assert m.end - m.start == 29 * 86_400
    assert parse_month("2025-12").days[-1] == dt.date(2025, 12, 31)
    for bad in ("2025-13", "2025-00", "25-09", "2025-9", "2025/09", "September", ""):
        with pytest.raises(QueryError, match="expected YYYY-MM"):
            parse_month(bad)


def test_report_campaigns_writes_markdown_csv_and_png(
    data: Data, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory, _, truth = data
    out = tmp_path / "out"
    code = main(["report", "campaigns", "--month", "2025-09", "-o", str(out),
                 "--records-dir", str(directory)])  # fmt: skip
    assert code == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["campaigns-2025-09.csv", "campaigns-2025-09.md", "campaigns-2025-09.png"]
    assert capsys.readouterr().out.split() == [str(out / n) for n in
                                               (names[1], names[0], names[2])]  # fmt: skip
    png = (out / "campaigns-2025-09.png").read_bytes()
    assert png.startswith(PNG) and len(png) > 1000
    rows = list(csv.DictReader((out / "campaigns-2025-09.csv").open()))
    assert len(rows) == 1
    assert rows[0]["peer"] == "gateway" and rows[0]["caller_prefix"] == "469-382"
    assert (rows[0]["calls"], rows[0]["distinct_callers"], rows[0]["distinct_callees"]) == (
        "500", str(truth.callers), "500",
    )  # fmt: skip
    md = (out / "campaigns-2025-09.md").read_text()
    assert md.startswith("# Suspected robocall campaigns, 2025-09")
    assert "| 1 | gateway | 469-382 | 500 |" in md


def test_report_peers_writes_markdown_csv_and_png(
    data: Data, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory, sims, _ = data
    code = main(["report", "peers", "--month", "2025-09", "-o", str(tmp_path),
                 "--records-dir", str(directory)])  # fmt: skip
    assert code == 0
    png = (tmp_path / "peers-2025-09.png").read_bytes()
    assert png.startswith(PNG) and len(png) > 1000
    rows = {r["peer"]: r for r in csv.DictReader((tmp_path / "peers-2025-09.csv").open())}
    assert set(rows) == {"carrier-a", "carrier-b", "gateway"}
    assert int(rows["gateway"]["calls"]) == sum(s.peer == "gateway" for s in sims)
    assert float(rows["gateway"]["attest_c"]) == 1.0
    assert rows["gateway"]["top_campaigns"] == "469-382 (500 calls from 2025-09-29)"
    md = (tmp_path / "peers-2025-09.md").read_text()
    assert "| gateway |" in md and "100.0%" in md


def test_an_empty_month_still_writes_its_report(
    data: Data, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["report", "campaigns", "--month", "2025-06", "-o", str(tmp_path),
                 "--records-dir", str(data[0])])  # fmt: skip
    assert code == 0
    assert "No campaign found." in (tmp_path / "campaigns-2025-06.md").read_text()
    assert (tmp_path / "campaigns-2025-06.png").read_bytes().startswith(PNG)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--month", "2025-13"], "expected YYYY-MM"),
        (["--month", "09-2025"], "expected YYYY-MM"),
        (["--month", "2025-09", "--min-calls", "0"], "--min-calls"),
        (["--month", "2025-09", "--gap-minutes", "-5"], "--gap-minutes"),
    ],
)
@pytest.mark.parametrize("kind", ["campaigns", "peers"])
def test_report_bad_input_exits_2_and_writes_nothing(
    data: Data, tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str,
    args: list[str], message: str,
) -> None:  # fmt: skip
    out = tmp_path / "out"
    code = main(["report", kind, *args, "-o", str(out), "--records-dir", str(data[0])])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("robocall-shield report: ") and message in err
    assert not out.exists()
