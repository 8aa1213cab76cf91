"""Traceback from the decision records: the query, the CLI and the admin route."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import json
from collections import Counter
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from loadtest.records_sim import SimRecord, generate, screened
from proxy.admin import AdminApi
from proxy.cli import main
from proxy.records.query import (
    CSV_COLUMNS,
    SAMPLES,
    QueryError,
    parse_caller,
    parse_time,
    parse_window,
    traceback,
)
from proxy.records.recorder import DecisionRecorder
from proxy.records.settings import RecordsConfig
from proxy.records.store import iso
from proxy.routing import SwitchPool
from proxy.screening import Action
from tests.conftest import make_config

START = dt.datetime(2025, 9, 14, 20, tzinfo=dt.UTC).timestamp()
TOKEN = "t" * 32
# a caller whose calls came in through two peers (a spoofed number two
# upstreams carried): 30 via the gateway, 4 via carrier-b, 9 hours apart
TWO_PEER_CALLER = 14695550177
Records = tuple[Path, list[SimRecord]]


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> Records:
    sims, _ = generate(seed=11, start=START, hours=8, callers=200, campaign_calls=300)
    for i in range(30):
        t = START + 3600 + 60 * i
        ev = screened(90_000 + i, t, "203.0.113.66", TWO_PEER_CALLER, 12127360000 + i, "C",
                      Action.BLOCK, 95, ("reputation:burst",))  # fmt: skip
        sims.append(SimRecord(t, "gateway", ev))
    for i in range(4):
        t = START + 10 * 3600 + 600 * i  # the next UTC day
        ev = screened(91_000 + i, t, "198.51.100.20", TWO_PEER_CALLER, 12127369000 + i, "A",
                      Action.PASS, 10, ())  # fmt: skip
        sims.append(SimRecord(t, "carrier-b", ev))
    directory = tmp_path_factory.mktemp("records")
    rec = DecisionRecorder(RecordsConfig(dir=str(directory)))
    for s in sims:
        rec.add(s.event, s.wall_time, s.peer)
    rec.close()
    assert rec.written == len(sims)
    return directory, sims


def test_traceback_names_each_peer_with_its_counts_and_samples(records: Records) -> None:
    directory, _ = records
    result = traceback(directory, TWO_PEER_CALLER, START, START + 86_400)
    assert [(p.peer, p.calls) for p in result.peers] == [("gateway", 30), ("carrier-b", 4)]
    gateway, carrier = result.peers
    assert gateway.first_seen == pytest.approx(START + 3600)
    assert gateway.last_seen == pytest.approx(START + 3600 + 60 * 29)
    assert carrier.first_seen == pytest.approx(START + 36_000)
    assert gateway.sources == {"203.0.113.66": 30} and carrier.sources == {"198.51.100.20": 4}
    assert gateway.actions == {"block": 30} and carrier.actions == {"pass": 4}
    assert len(gateway.samples) == SAMPLES and len(carrier.samples) == 4
    assert [r.ts for r in gateway.samples] == sorted(r.ts for r in gateway.samples)
    assert all(r.caller_key == TWO_PEER_CALLER and r.peer == "gateway" for r in gateway.samples)
    assert result.days_searched == 2 and result.total == 34


def test_traceback_of_a_campaign_caller_matches_the_generated_calls(records: Records) -> None:
    directory, sims = records
    gateway_callers = Counter(s.event.call.caller_key for s in sims if s.peer == "gateway")
    caller, calls = gateway_callers.most_common(2)[1]  # a rotating campaign caller ID
    assert caller != TWO_PEER_CALLER and calls >= 2
    mine = [s for s in sims if s.event.call.caller_key == caller]
    result = traceback(directory, caller, START, START + 86_400)
    assert [(p.peer, p.calls) for p in result.peers] == [("gateway", len(mine))]
    assert {r.call_id for r in result.peers[0].samples} == {s.event.call.call_id for s in mine}
    assert result.peers[0].origids == {"gw-orig-1": len(mine)}


def test_the_window_bounds_the_answer(records: Records) -> None:
    directory, _ = records
    early = traceback(directory, TWO_PEER_CALLER, START, START + 3600 + 60 * 10)
    assert [(p.peer, p.calls) for p in early.peers] == [("gateway", 10)]
    assert traceback(directory, TWO_PEER_CALLER, START - 86_400, START).peers == []
    whole_day = parse_window("2025-09-15", "2025-09-15")  # a date as 'to': the whole day
    late = traceback(directory, TWO_PEER_CALLER, *whole_day)
    assert [(p.peer, p.calls) for p in late.peers] == [("carrier-b", 4)]


@pytest.mark.parametrize(
    "form", ["+14695550177", "14695550177", "4695550177", "(469) 555-0177", "+1-469-555-0177"]
)
def test_the_caller_in_any_nanp_form(form: str) -> None:
    assert parse_caller(form) == TWO_PEER_CALLER


@pytest.mark.parametrize("bad", ["", "alice", "555-0177", "+0123", "12345678901234567"])
def test_a_bad_caller_is_refused(bad: str) -> None:
    with pytest.raises(QueryError, match="not a telephone number"):
        parse_caller(bad)


def test_times_and_windows() -> None:
    assert parse_time("2025-09-14T20:00:00Z", "from") == START
    assert parse_time("2025-09-14T20:00:00", "from") == START  # no zone: UTC
    assert parse_time("2025-09-14T22:00:00+02:00", "from") == START
    assert parse_time("2025-09-14", "to", end=True) == START + 4 * 3600
    for bad in ("yesterday", "2025-13-01", "14/09/2025", ""):
        with pytest.raises(QueryError, match="ISO 8601"):
            parse_time(bad, "from")
    with pytest.raises(QueryError, match="must be after"):
        parse_window("2025-09-15", "2025-09-14T00:00:00Z")
    with pytest.raises(QueryError, match="over 400 days"):
        parse_window("2020-01-01", "2025-01-01")


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_json_and_csv(records: Records, capsys: pytest.CaptureFixture[str]) -> None:
    directory, _ = records
    base = ["traceback", "--caller", "(469) 555-0177", "--from", "2025-09-14",
            "--to", "2025-09-15", "--records-dir", str(directory)]  # fmt: skip
    code, out, _ = run_cli(base, capsys)
    assert code == 0
    answer = json.loads(out)
    assert answer["caller"] == "+14695550177" and answer["total_calls"] == 34
    assert answer["from"] == "2025-09-14T00:00:00Z" and answer["to"] == "2025-09-16T00:00:00Z"
    gateway = answer["peers"][0]
    assert (gateway["peer"], gateway["calls"], gateway["first_seen"]) == (
        "gateway", 30, iso(START + 3600),
    )  # fmt: skip
    sample = gateway["samples"][0]
    assert sample["caller_e164"] == "+14695550177" and sample["source"] == "203.0.113.66"
    assert sample["action"] == "block" and sample["reasons"] == ["reputation:burst"]

    code, out, _ = run_cli([*base, "--format", "csv"], capsys)
    assert code == 0
    rows = list(csv.reader(io.StringIO(out)))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == 1 + SAMPLES + 4
    body = [dict(zip(rows[0], r, strict=True)) for r in rows[1:]]
    assert Counter(r["peer"] for r in body) == {"gateway": SAMPLES, "carrier-b": 4}
    assert {r["peer_calls"] for r in body if r["peer"] == "gateway"} == {"30"}
    assert all(r["caller_key"] == str(TWO_PEER_CALLER) for r in body)


def test_cli_reads_the_records_dir_from_the_config(
    records: Records, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory, _ = records
    config = tmp_path / "rs.toml"
    config.write_text(f'[records]\ndir = "{directory}"\n')
    code, out, _ = run_cli(["traceback", "--caller", "+14695550177", "--from", "2025-09-14",
                            "--to", "2025-09-14", "--config", str(config)], capsys)  # fmt: skip
    assert code == 0 and json.loads(out)["total_calls"] == 30


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--caller", "nobody"], "not a telephone number"),
        (["--from", "last week"], "not an ISO 8601"),
        (["--to", "2025-09-01"], "must be after"),
        (["--records-dir", "/nonexistent/records"], "no records directory"),
    ],
)
def test_cli_bad_input_exits_2_with_a_message(
    records: Records, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    directory, _ = records
    given = {"--caller": "+14695550177", "--from": "2025-09-14", "--to": "2025-09-15",
             "--records-dir": str(directory)}  # fmt: skip
    given.update(zip(args[::2], args[1::2], strict=True))
    code, out, err = run_cli(["traceback", *(x for kv in given.items() for x in kv)], capsys)
    assert code == 2 and out == ""
    assert err.startswith("robocall-shield traceback: ") and message in err


def admin(directory: Path) -> AdminApi:
    cfg = make_config()
    api = AdminApi(SwitchPool(cfg.switches, cfg.routing), CollectorRegistry(), lambda: True,
                   token=TOKEN)  # fmt: skip
    api.serve_traceback(directory)
    return api


async def get(api: AdminApi, target: str, token: str | None = TOKEN) -> tuple[int, str, bytes]:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    resp = await api.handle("GET", target, headers)
    return resp.status, resp.content_type, resp.body


QUERY = "/admin/traceback?caller=%2B14695550177&from=2025-09-14&to=2025-09-15"


async def test_admin_traceback_needs_the_token(records: Records) -> None:
    api = admin(records[0])
    assert (await get(api, QUERY, token=None))[0] == 401
    assert (await get(api, QUERY, token="w" * 32))[0] == 401


async def test_admin_traceback_answers_json_and_csv(records: Records) -> None:
    api = admin(records[0])
    status, kind, body = await get(api, QUERY)
    assert (status, kind) == (200, "application/json")
    answer = json.loads(body)
    assert [(p["peer"], p["calls"]) for p in answer["peers"]] == [("gateway", 30), ("carrier-b", 4)]
    status, kind, body = await get(api, QUERY + "&format=csv")
    assert status == 200 and kind.startswith("text/csv")
    rows = list(csv.reader(io.StringIO(body.decode())))
    assert tuple(rows[0]) == CSV_COLUMNS and len(rows) == 1 + SAMPLES + 4


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("/admin/traceback?from=2025-09-14&to=2025-09-15", "missing query parameter(s): caller"),
        ("/admin/traceback?caller=1", "missing query parameter(s): from, to"),
        (QUERY.replace("%2B14695550177", "bob"), "not a telephone number"),
        (QUERY.replace("from=2025-09-14", "from=soon"), "not an ISO 8601"),
        (QUERY + "&format=xml", "expected json or csv"),
        (QUERY.replace("to=2025-09-15", "to=2025-09-01"), "must be after"),
    ],
)
async def test_admin_traceback_bad_params_get_400(
    records: Records, target: str, message: str
) -> None:
    status, kind, body = await get(admin(records[0]), target)
    assert (status, kind) == (400, "application/json")
    assert message in json.loads(body)["error"]


async def test_admin_traceback_over_http_on_loopback(records: Records) -> None:
    api = admin(records[0])
    server = await api.start("127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET {QUERY} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
                     .encode())  # fmt: skip
        raw = await asyncio.wait_for(reader.read(), 10)
        writer.close()
    finally:
        server.close()
        await server.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert json.loads(body)["total_calls"] == 34
