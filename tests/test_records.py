"""Decision records: the day-file store, the recorder, retention, [records]."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from loadtest.records_sim import generate, identity_header, screened
from proxy.config_table import ConfigError
from proxy.records.recorder import DecisionRecorder
from proxy.records.settings import RecordsConfig
from proxy.records.store import (
    DayWriter,
    day_files,
    day_start,
    file_name,
    origid_of,
    read_records,
    row_of,
)
from proxy.screening import Action
from tests.conftest import make_config

# 2025-09-14 20:00 UTC: eight hours of traffic run past midnight into the 15th
START = dt.datetime(2025, 9, 14, 20, tzinfo=dt.UTC).timestamp()
DAY1, DAY2 = dt.date(2025, 9, 14), dt.date(2025, 9, 15)


def recorder(directory: Path, **kw: object) -> DecisionRecorder:
    cfg = RecordsConfig(dir=str(directory), **kw)  # type: ignore[arg-type]
    return DecisionRecorder(cfg)


def count(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute("SELECT count(*) FROM calls").fetchone()[0])


def test_records_round_trip_partitioned_by_utc_day(tmp_path: Path) -> None:
    sims, _ = generate(seed=3, start=START, hours=8, callers=120, campaign_calls=150)
    rec = recorder(tmp_path / "records")
    for s in sims:
        rec.add(s.event, s.wall_time, s.peer)
    rec.close()
    assert (rec.written, rec.dropped, rec.failed) == (len(sims), 0, 0)

    files = day_files(tmp_path / "records")
    assert list(files) == [DAY1, DAY2]
    assert files[DAY1].name == "calls-2025-09-14.sqlite"
    midnight = day_start(DAY2)
    assert count(files[DAY1]) == sum(s.wall_time < midnight for s in sims)
    assert count(files[DAY2]) == sum(s.wall_time >= midnight for s in sims)
    with sqlite3.connect(files[DAY1]) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"

    stored = read_records(files.values(), "1 = 1", ())
    assert len(stored) == len(sims)
    by_id = {r.call_id: r for r in stored}
    for s in sims[:: max(1, len(sims) // 50)]:  # fifty spread over the period
        r, call, verdict = by_id[s.event.call.call_id], s.event.call, s.event.screening.verdict
        assert r.ts == pytest.approx(s.wall_time)
        assert (r.method, r.caller, r.caller_key) == ("INVITE", call.caller, call.caller_key)
        assert (r.callee, r.callee_key, r.source) == (call.callee, call.callee_key, call.source)
        assert (r.peer, r.attest, r.verstat) == (s.peer, call.attest, call.verstat)
        assert (r.action, r.score, r.reasons) == (s.event.action.value, verdict.score,
                                                  verdict.reasons)  # fmt: skip
        assert r.origid == (None if call.identity is None else origid_of(call.identity))
    campaign = [r for r in stored if r.peer == "gateway"]
    assert campaign and all(r.origid == "gw-orig-1" and r.attest == "C" for r in campaign)


def test_origid_read_from_the_passport_and_junk_gives_none() -> None:
    good = identity_header(12125550142, 12125550143, "A", "0b0c4bd7-3bd1-4c1f", 1_757_000_000)
    assert origid_of(good) == "0b0c4bd7-3bd1-4c1f"
    head, _, rest = good.partition(".")
    compact = head + ".." + rest.split(".", 1)[1]
    for junk in ("", "garbage", "a.b.c", "!!!.***.###", '"unterminated', compact,
                 good.replace(good.split(".")[1], "bm90IGpzb24"),  # "not json"
                 good.replace(good.split(".")[1], "WzEsMl0"),  # [1,2]: not an object
                 "x" * 100_000):  # fmt: skip
        assert origid_of(junk) is None, junk[:40]


def test_junk_identity_still_records_the_call(tmp_path: Path) -> None:
    ev = screened(1, START, "192.0.2.1", 12125550142, 12125550143, "A", Action.PASS, 0, ())
    junk = type(ev.call)(**{**{f: getattr(ev.call, f) for f in ev.call.__slots__},
                            "identity": "this.is;not=<a passport"})  # fmt: skip
    row = row_of(type(ev)(junk, ev.screening, ev.action), START, "carrier-a")
    assert row[12] is None and row[1] == ev.call.call_id


def test_a_call_id_that_was_not_utf8_is_recorded_with_its_batch(tmp_path: Path) -> None:
    """Bytes that were not UTF-8 reach the record as lone surrogates
    (surrogateescape); sqlite3 refused them, and the whole batch with them
    (found by the survival test)."""
    ev = screened(1, START, "192.0.2.1", 12125550142, 12125550143, "A", Action.PASS, 0, ())
    hostile = type(ev.call)(**{**{f: getattr(ev.call, f) for f in ev.call.__slots__},
                               "call_id": "abc\udca8\udcffdef@h"})  # fmt: skip
    clean = screened(2, START + 1, "192.0.2.1", 12125550144, 12125550143, "A", Action.PASS, 0, ())
    writer = DayWriter(tmp_path)
    rows = [row_of(type(ev)(hostile, ev.screening, ev.action), START, "carrier-a"),
            row_of(clean, START + 1, "carrier-a")]  # fmt: skip
    assert writer.insert(rows) == 0
    assert count(tmp_path / file_name(DAY1)) == 2
    with sqlite3.connect(tmp_path / file_name(DAY1)) as db:
        ids = {r[0] for r in db.execute("SELECT call_id FROM calls")}
    assert "abc\ufffd\ufffddef@h" in ids


def test_a_burst_loses_nothing(tmp_path: Path) -> None:
    sims, _ = generate(seed=5, start=START, hours=1, callers=400, campaign_calls=300)
    burst = [s for _ in range(8) for s in sims]  # ~15,000 records added without a pause
    rec = recorder(tmp_path, max_pending=len(burst))
    for s in burst:
        rec.add(s.event, s.wall_time, s.peer)
    rec.close()
    assert (rec.written, rec.dropped, rec.failed, rec.pending) == (len(burst), 0, 0, 0)
    assert sum(count(p) for p in day_files(tmp_path).values()) == len(burst)


def test_a_full_queue_counts_drops_and_the_metric_says_so(tmp_path: Path) -> None:
    sims, _ = generate(seed=7, start=START, hours=1, callers=400, campaign_calls=100)
    assert len(sims) > 1500
    cfg = RecordsConfig(dir=str(tmp_path), max_pending=1000)
    rec = DecisionRecorder(cfg, poll=3600)  # the writer sleeps until close: the queue fills
    for s in sims[:1500]:
        rec.add(s.event, s.wall_time, s.peer)
    assert (rec.pending, rec.dropped) == (1000, 500)
    registry = CollectorRegistry()
    registry.register(rec)
    sample = registry.get_sample_value
    assert sample("rs_records_dropped_total", {"reason": "queue-full"}) == 500
    assert sample("rs_records_pending") == 1000
    rec.close()  # what was queued is written, the dropped are not
    assert rec.written == 1000 and sample("rs_records_written_total") == 1000
    assert sum(count(p) for p in day_files(tmp_path).values()) == 1000


def test_a_refused_batch_is_counted_and_other_days_still_written(tmp_path: Path) -> None:
    sims, _ = generate(seed=3, start=START, hours=8, callers=60, campaign_calls=20)
    (tmp_path / file_name(DAY1)).mkdir()  # a directory where the day file should be
    rec = recorder(tmp_path)
    for s in sims:
        rec.add(s.event, s.wall_time, s.peer)
    rec.close()
    on_day2 = sum(s.wall_time >= day_start(DAY2) for s in sims)
    assert rec.failed == len(sims) - on_day2 > 0
    assert count(tmp_path / file_name(DAY2)) == on_day2 == rec.written


def test_retention_deletes_whole_old_days_and_keeps_the_rest(tmp_path: Path) -> None:
    today = dt.date(2025, 12, 1)
    writer = DayWriter(tmp_path)
    ev = screened(1, START, "192.0.2.1", 12125550142, 12125550143, None, Action.PASS, 0, ())
    days = [today - dt.timedelta(days=n) for n in (120, 91, 90, 89, 30, 0)]
    for day in days:
        writer.insert([row_of(ev, day_start(day) + 3600, "carrier-a")])
    writer.close()
    (tmp_path / (file_name(days[0]) + "-wal")).write_bytes(b"")  # as a crash would leave it
    (tmp_path / "notes.txt").write_text("not a day file")

    clock = lambda: day_start(today) + 7200  # noqa: E731
    rec = DecisionRecorder(RecordsConfig(dir=str(tmp_path), retention_days=90), clock=clock)
    rec.sweep()
    rec.close()
    kept = today - dt.timedelta(days=89)  # ninety days: today and the 89 before it
    assert list(day_files(tmp_path)) == [d for d in days if d >= kept]
    assert rec.swept == 3
    assert not (tmp_path / (file_name(days[0]) + "-wal")).exists()
    assert (tmp_path / "notes.txt").exists()


def test_records_section_defaults_follow_the_subscriber_data_dir(tmp_path: Path) -> None:
    cfg = make_config(subscribers={"data_dir": str(tmp_path / "data")})
    assert cfg.records.enabled and cfg.records.dir == f"{tmp_path / 'data'}/records"
    assert cfg.records.retention_days == 90
    assert not make_config(subscribers={"enabled": False}).records.enabled
    own = make_config(
        subscribers={"enabled": False},
        records={"enabled": True, "dir": "/srv/records", "retention_days": 400},
    )
    assert (own.records.enabled, own.records.dir, own.records.retention_days) == (
        True, "/srv/records", 400,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ({"retention_days": 0}, "records.retention_days"),
        ({"retention_days": "90"}, "records.retention_days"),
        ({"dir": " "}, "records.dir"),
        ({"max_pending": 10}, "records.max_pending"),
        ({"retain": 9}, "records.retain"),
    ],
)
def test_bad_records_section_names_the_key(section: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        make_config(records=section)
    assert err.value.key == key
