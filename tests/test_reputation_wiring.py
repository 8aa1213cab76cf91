"""Reputation wired into the proxy: the sans-I/O core feeding the engine
(INVITE, final response, BYE, local answers), labels from a score, the
verdict log, the admin API and `robocall-shield explain` on a live worker,
and reload keeping the traffic state."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from blocklists.build import build
from blocklists.slot import ArtefactSlot
from blocklists.sources import FTC_COLUMNS, parse_source
from blocklists.store import Artefact
from proxy.cli import main as cli_main
from proxy.config import Config, parse_config
from proxy.core import StatelessProxy
from proxy.events import Address, Event, Screened, Send
from proxy.reputation import ReputationEngine
from proxy.reputation.traffic import Traffic
from proxy.routing import SwitchPool
from proxy.screening import Action, ReputationCheck, build_pipeline
from proxy.screening.list_checks import BlocklistCheck
from proxy.server import Worker
from proxy.sip import SipRequest, SipResponse, parse_datagram
from proxy.verdict_log import VerdictLog, format_verdict
from tests.conftest import make_config, make_reputation_core
from tests.sipmsg import request, response
from tests.test_server import free_port

PEER = Address("198.51.100.10", 5060, "udp")
SWITCH = Address("192.0.2.20", 5080, "udp")
CALLER, CALLER_KEY = "+12125550142", 12125550142
TOKEN = "test-token-0123456789abcdef"


def rep_core(
    slot: ArtefactSlot | None = None, **sections: Any
) -> tuple[StatelessProxy, ReputationEngine]:
    return make_reputation_core(slot, **sections)


def one_send(events: list[Event]) -> Send:
    sends = [e for e in events if isinstance(e, Send)]
    assert len(sends) == 1, events
    return sends[0]


def screened(events: list[Event]) -> Screened:
    found = [e for e in events if isinstance(e, Screened)]
    assert len(found) == 1, events
    return found[0]


def invite(
    core: StatelessProxy, t: float, call_id: str, *, callee: str = "+13125550187", **kw: Any
) -> tuple[list[Event], SipRequest | SipResponse]:
    data = request(
        ruri=f"sip:{callee}@192.0.2.5;user=phone",
        call_id=call_id,
        branch=f"z9hG4bK-{call_id}",
        **kw,
    )
    events = core.receive_datagram(data, PEER, t)
    msg = parse_datagram(one_send(events).data)
    assert isinstance(msg, SipRequest | SipResponse)
    return events, msg


def switch_answers(
    core: StatelessProxy, forwarded: SipRequest, status: int, t: float, reason: str = "X"
) -> None:
    vias = tuple(v for k, _, v in forwarded.headers if k == "via")
    data = response(
        status, reason, vias=vias, method=forwarded.cseq_method, call_id=forwarded.call_id
    )
    send = one_send(core.receive_datagram(data, SWITCH, t))
    assert send.dest == PEER  # relayed back to the caller's side


def bye(core: StatelessProxy, call_id: str, t: float) -> SipRequest:
    data = request(
        "BYE",
        "sip:+13125550187@192.0.2.20:5080",
        to_tag="switch-tag",
        call_id=call_id,
        cseq=102,
        branch=f"z9hG4bK-bye-{call_id}",
    )
    send = one_send(core.receive_datagram(data, PEER, t))
    assert send.dest == SWITCH
    msg = parse_datagram(send.data)
    assert isinstance(msg, SipRequest) and msg.method == "BYE"
    return msg


def traffic(engine: ReputationEngine, key: int = CALLER_KEY) -> Traffic:
    t = engine.callers.get(key)
    assert t is not None
    return t


# -- the core feeds the engine -------------------------------------------------


def test_invite_answer_and_bye_through_the_core_are_one_short_answered_call() -> None:
    core, engine = rep_core()
    events, fwd = invite(core, 10.0, "c1")
    assert isinstance(fwd, SipRequest) and fwd.header("record-route") is not None
    assert screened(events).action is Action.PASS
    assert engine.tracking("c1")
    switch_answers(core, fwd, 180, 10.2, "Ringing")  # provisional: no outcome
    assert traffic(engine).outcomes(10.2) == (0.0, 0.0, 0.0, 0.0)
    switch_answers(core, fwd, 200, 10.5, "OK")
    assert traffic(engine).outcomes(10.5) == (1.0, 1.0, 0.0, 0.0)
    switch_answers(core, fwd, 200, 10.9, "OK")  # a retransmitted 200: counted once
    bye_fwd = bye(core, "c1", 13.0)  # 2.5 s after the answer: a short call
    assert traffic(engine).outcomes(13.0) == (1.0, 1.0, 1.0, 1.0)
    assert not engine.tracking("c1")
    switch_answers(core, bye_fwd, 200, 13.1, "OK")  # the BYE's own 200 is no call outcome
    # the same figures for the peer and for the caller's thousands-block
    peer = engine.peers.get(PEER.host)
    block = engine.ranges.get(CALLER_KEY // 1000)
    assert peer is not None and block is not None
    assert peer.outcomes(13.1) == block.outcomes(13.1) == (1.0, 1.0, 1.0, 1.0)

    _, fwd2 = invite(core, 20.0, "c2")
    assert isinstance(fwd2, SipRequest)
    switch_answers(core, fwd2, 486, 21.0, "Busy Here")  # a final, not answered
    assert traffic(engine).outcomes(21.0) == (2.0, 1.0, 1.0, 1.0)
    assert not engine.tracking("c2")

    _, fwd3 = invite(core, 30.0, "c3")
    assert isinstance(fwd3, SipRequest)
    switch_answers(core, fwd3, 200, 31.0, "OK")
    bye(core, "c3", 31.0 + 120)  # two minutes: not short
    assert traffic(engine).outcomes(151.0) == (3.0, 2.0, 2.0, 1.0)
    assert traffic(engine).calls(151.0)[2] == 3.0


def test_a_retransmitted_invite_through_the_core_is_counted_once() -> None:
    core, engine = rep_core()
    invite(core, 10.0, "r1")
    invite(core, 10.5, "r1")  # no 100 Trying yet: the peer retransmits
    assert traffic(engine).calls(10.5) == (1.0, 1.0, 1.0)


def test_a_blocked_call_is_forgotten_but_counted_in_the_rate() -> None:
    blocked = "+12125550100"
    core, engine = rep_core(screening={"block": [blocked]})
    events, msg = invite(core, 10.0, "b1", caller=blocked)
    assert isinstance(msg, SipResponse) and msg.status == 603
    assert screened(events).screening.decided_by == "static_block"
    assert not engine.tracking("b1")
    engine.final("b1", 487, 11.0)  # whatever comes later is no outcome of this caller
    engine.ended("b1", 11.5)
    t = traffic(engine, 12125550100)
    assert t.calls(11.5) == (0.5, 1.0, 1.0) and t.outcomes(11.5) == (0.0, 0.0, 0.0, 0.0)
    peer = engine.peers.get(PEER.host)
    assert peer is not None and peer.calls(11.5)[2] == 1.0
    assert peer.outcomes(11.5) == (0.0, 0.0, 0.0, 0.0)


def test_a_retransmission_of_a_blocked_invite_is_not_counted_again() -> None:
    blocked = "+12125550100"
    core, engine = rep_core(screening={"block": [blocked]})
    invite(core, 10.0, "b1", caller=blocked)
    _, again = invite(core, 10.5, "b1", caller=blocked)  # the 603 was lost: T1 retransmit
    assert isinstance(again, SipResponse) and again.status == 603
    assert traffic(engine, 12125550100).calls(10.5)[2] == 1.0


def test_a_caller_placing_many_calls_quickly_is_labelled_by_reputation() -> None:
    core, engine = rep_core()
    out: list[tuple[Screened, SipRequest]] = []
    for i in range(12):  # 12 calls in 0.6 s, to 0100, 0101, ...
        events, fwd = invite(core, 50.0 + i * 0.05, f"burst-{i}", callee=f"+1312555{100 + i:04d}")
        assert isinstance(fwd, SipRequest)  # labelled, not blocked: carrier policy "label"
        out.append((screened(events), fwd))
    first, last = out[0], out[-1]
    assert first[0].action is Action.PASS and first[1].header("x-robocall-verdict") is None
    assert first[1].from_.display == "ALICE"
    ev, fwd = last
    assert ev.action is Action.LABEL and ev.screening.decided_by == "reputation"
    header = fwd.header("x-robocall-verdict")
    assert header is not None and header.startswith(f"label; score={ev.screening.verdict.score}; ")
    reasons = header.split("reasons=", 1)[1].split(",")
    assert "call-rate" in reasons and "sequential" in reasons
    assert tuple(reasons) == ev.screening.verdict.reasons
    assert ev.screening.verdict.score >= 60
    assert fwd.from_.display == "SCAM LIKELY"
    assert traffic(engine).calls(50.6)[0] == 12.0


def test_ftc_complaints_are_scored_by_reputation_not_labelled_at_once(tmp_path: Path) -> None:
    src = tmp_path / "ftc.csv"
    rows = [f"2125550142,2025-03-03 00:00:00,2025-03-0{d} 10:00:00,Austin,Texas,512,Other,N"
            for d in range(1, 6)]  # fmt: skip
    src.write_text("\n".join([",".join(FTC_COLUMNS), *rows]) + "\n")
    build([parse_source(f"ftc:{src}")], tmp_path / "out")
    art = Artefact.load(tmp_path / "out")
    try:
        slot = ArtefactSlot()
        slot.current = art
        core, engine = rep_core(slot)
        engine.wall_offset = 20152 * 86400.0  # 2025-03-05: the day of the last complaint
        events, fwd = invite(core, 0.0, "f1")
        ev = screened(events)
        assert ev.screening.decided_by == "reputation" and ev.action is Action.LABEL
        assert ev.screening.verdict.reasons == ("complaints", "unattested")
        assert ev.screening.verdict.score == 75
        assert isinstance(fwd, SipRequest) and fwd.header("x-robocall-verdict") == (
            "label; score=75; reasons=complaints,unattested"
        )
        # two years later the complaints have decayed below the label threshold
        engine.wall_offset += 730 * 86400.0
        events, fwd = invite(core, 1.0, "f2")
        assert screened(events).action is Action.PASS
        assert isinstance(fwd, SipRequest) and fwd.header("x-robocall-verdict") is None
        # without a reputation engine the complaint labels at once (the old behaviour)
        cfg = make_config()
        plain = StatelessProxy(
            cfg,
            build_pipeline(cfg.screening, slot, cfg.blocklists),
            SwitchPool(cfg.switches, cfg.routing),
            "t",
        )
        ev = screened(invite(plain, 0.0, "f3")[0])
        assert ev.screening.decided_by == "blocklist"
        assert ev.screening.verdict.reasons == ("ftc-complaints",)
    finally:
        art.close()


# -- the verdict log -------------------------------------------------------------


def test_verdict_log_line_lists_observed_signals(tmp_path: Path) -> None:
    core, _ = rep_core(reputation={"modes": {"unattested": "observe", "call-rate": "observe"}})
    quiet = screened(invite(core, 5.0, "v1")[0])
    line = json.loads(format_verdict(1_700_000_000.0, quiet))
    assert line["observed_signals"] == ["unattested"] and line["reasons"] == []
    assert (line["action"], line["score"], line["decided_by"]) == ("pass", 0, "reputation")
    for i in range(2, 10):  # a burst: call-rate is observed, not scored
        ev = screened(invite(core, 5.0 + i * 0.01, f"v{i}", callee=f"+1{300 + i}5550187")[0])
    line = json.loads(format_verdict(1_700_000_000.0, ev))
    assert "call-rate" in line["observed_signals"] and "call-rate" not in line["reasons"]
    log = VerdictLog(str(tmp_path / "verdicts.jsonl"))
    log.write(ev, 1_700_000_000.0)
    log.close()
    written = json.loads((tmp_path / "verdicts.jsonl").read_text())
    assert written["observed_signals"] == line["observed_signals"]

    enforcing, _ = rep_core()
    line = json.loads(format_verdict(0.0, screened(invite(enforcing, 5.0, "v1")[0])))
    assert "observed_signals" not in line and line["reasons"] == ["unattested"]
    assert line["score"] == 5 and line["action"] == "pass"


# -- admin API and the explain CLI on a live worker -------------------------------


def live_config(**extra: Any) -> Config:
    data: dict[str, Any] = {
        "sip": {"host": "127.0.0.1", "port": free_port()},
        "switches": [{"name": "sw", "host": "127.0.0.1", "port": free_port()}],
        "routing": {"health_checks": False},
        "admin": {"host": "127.0.0.1", "port": free_port(), "token": TOKEN},
        "log": {"verdict_log": ""},
        "subscribers": {"enabled": False},  # reputation alone: carrier policy for everyone
    }
    data.update(extra)
    return parse_config(data)


@pytest.fixture(autouse=True)
def _no_token_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker also takes its admin token from ROBOCALL_SHIELD_TOKEN."""
    monkeypatch.delenv("ROBOCALL_SHIELD_TOKEN", raising=False)


@pytest.fixture
async def live() -> AsyncIterator[Worker]:
    worker = Worker(live_config())
    await worker.start()
    yield worker
    await worker.stop()


async def http(
    port: int, path: str, token: str | None = None, method: str = "GET"
) -> tuple[int, dict[str, Any]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    auth = f"Authorization: Bearer {token}\r\n" if token is not None else ""
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}\r\n".encode())
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body) if body else {}


def burst_into(worker: Worker, n: int = 40) -> None:
    """n calls from CALLER now, through the worker's core (sans sockets)."""
    for i in range(n):
        data = request(
            ruri=f"sip:+1{300 + i}5550187@127.0.0.1;user=phone",
            call_id=f"live-{i}",
            branch=f"z9hG4bK-live-{i}",
        )
        worker.core.receive_datagram(data, PEER, time.monotonic())


async def test_admin_reputation_endpoint(live: Worker) -> None:
    port = live.cfg.admin.port
    burst_into(live)
    status, body = await http(port, f"/admin/reputation/{CALLER}")
    assert status == 401 and "bearer token" in body["error"]
    status, body = await http(port, f"/admin/reputation/{CALLER}", "wrong-token-0123456789")
    assert status == 401
    status, body = await http(port, f"/admin/reputation/{CALLER}", TOKEN)
    assert status == 200 and body["number"] == CALLER
    signals = {s["signal"]: s for s in body["signals"]}
    assert signals["call-rate"]["points"] == 30.0 and "call-rate" in body["reasons"]
    assert body["score"] >= 30 and body["traffic"]["calls_last_hour"] == 40.0
    status, quoted = await http(port, "/admin/reputation/%2B12125550142", TOKEN)
    assert status == 200 and quoted["number"] == CALLER
    status, body = await http(port, "/admin/reputation/not-a-number", TOKEN)
    assert status == 400 and "not a telephone number" in body["error"]
    status, _ = await http(port, f"/admin/reputation/{CALLER}", TOKEN, "POST")
    assert status == 405


async def test_admin_reputation_needs_a_configured_token() -> None:
    worker = Worker(live_config(admin={"host": "127.0.0.1", "port": free_port()}))
    await worker.start()
    try:
        status, body = await http(worker.cfg.admin.port, f"/admin/reputation/{CALLER}", "x")
        assert status == 403 and "token" in body["error"]
    finally:
        await worker.stop()


async def test_explain_cli_prints_the_breakdown(
    live: Worker, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    burst_into(live)
    base = f"http://127.0.0.1:{live.cfg.admin.port}"
    monkeypatch.setenv("ROBOCALL_SHIELD_TOKEN", TOKEN)
    # the CLI blocks on urllib: run it off the loop the worker serves on
    rc = await asyncio.to_thread(cli_main, ["explain", CALLER, "--url", base])
    out = capsys.readouterr().out
    assert rc == 0, out
    lines = out.splitlines()
    assert lines[0].startswith(f"{CALLER}: score ") and "(carrier policy label: " in lines[0]
    rate = next(line for line in lines if "call-rate" in line)
    assert "+30.0" in rate and "(weight 30, strength 1.0)" in rate
    assert any(line.strip().startswith("traffic: calls_last_second=") for line in lines)
    assert "per-call signals" in lines[-1]

    rc = await asyncio.to_thread(cli_main, ["explain", "2125550142", "--url", base, "--json"])
    answer = json.loads(capsys.readouterr().out)
    assert rc == 0 and answer["number"] == CALLER and answer["signals"]

    monkeypatch.setenv("ROBOCALL_SHIELD_TOKEN", "wrong-token-0123456789")
    rc = await asyncio.to_thread(cli_main, ["explain", CALLER, "--url", base])
    captured = capsys.readouterr()
    assert rc == 1 and captured.out == "" and f"401 from {base}" in captured.err


async def test_explain_cli_against_a_closed_port(capsys: pytest.CaptureFixture[str]) -> None:
    base = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    rc = await asyncio.to_thread(cli_main, ["explain", CALLER, "--url", base])
    captured = capsys.readouterr()
    assert rc == 1 and captured.out == ""
    assert captured.err.startswith(f"robocall-shield explain: cannot reach the proxy at {base}: ")
    assert len(captured.err.strip().splitlines()) == 1  # one line, no traceback


# -- reload ------------------------------------------------------------------------


def stage_names(core: StatelessProxy) -> list[str]:
    return [s.check.name for s in core.pipeline.stages]


def tracked(worker: Worker, table: str) -> float | None:
    return worker.metrics.registry.get_sample_value("rs_reputation_tracked", {"table": table})


async def test_reload_applies_weights_at_once_and_keeps_the_traffic() -> None:
    quiet = {"log": {"verdict_log": ""}, "subscribers": {"enabled": False}}
    worker = Worker(make_config(**quiet))
    try:
        engine = worker.reputation
        assert engine is not None and worker.core.reputation is engine
        for i in range(3):
            ev = screened(
                invite(worker.core, 100.0 + i * 600, f"a{i}", callee=f"+1{300 + i}5550187")[0]
            )
        assert (ev.action, ev.screening.verdict.score) == (Action.PASS, 5)
        caller_before = traffic(engine)
        assert tracked(worker, "callers") == 1.0

        skipped = worker.reload(make_config(**quiet, reputation={"weights": {"unattested": 70}}))
        assert skipped == []
        assert worker.reputation is engine and worker.core.reputation is engine
        assert traffic(engine) is caller_before and caller_before.calls(1300.0)[2] == 3.0
        ev = screened(invite(worker.core, 2000.0, "a3", callee="+13035550187")[0])
        assert ev.action is Action.LABEL and ev.screening.verdict.score == 70
        assert traffic(engine).calls(2000.0)[2] == 4.0  # the same rolling figures go on
        assert worker.cfg.reputation.weights["unattested"] == 70

        worker.reload(make_config(**quiet, reputation={"enabled": False}))
        assert worker.reputation is None and worker.core.reputation is None
        assert "reputation" not in stage_names(worker.core)
        assert not any(isinstance(s.check, ReputationCheck) for s in worker.core.pipeline.stages)
        listed = next(s.check for s in worker.core.pipeline.stages if s.check.name == "blocklist")
        assert isinstance(listed, BlocklistCheck) and listed.ftc_action is Action.LABEL
        ev = screened(invite(worker.core, 2100.0, "a4")[0])
        assert ev.screening.decided_by is None and ev.screening.verdict.score == 0
        assert tracked(worker, "callers") == 0.0
        assert worker._admin_explain(CALLER)[0] == 409

        worker.reload(make_config(**quiet))
        assert worker.reputation is not None and worker.reputation is not engine
        assert stage_names(worker.core)[-1] == "reputation"
        assert worker.core.reputation is worker.reputation
    finally:
        await worker.stop()


def test_a_bye_before_the_answer_does_not_hide_the_failed_final() -> None:
    core, engine = rep_core()
    _, fwd = invite(core, 10.0, "early")
    assert isinstance(fwd, SipRequest)
    bye(core, "early", 10.5)  # a caller hanging up with BYE instead of CANCEL
    switch_answers(core, fwd, 487, 11.0)
    assert traffic(engine, 12125550142).outcomes(11.0)[:2] == (1.0, 0.0)  # a final, unanswered


def test_a_final_response_from_a_peer_is_relayed_but_not_counted() -> None:
    core, engine = rep_core()
    _, fwd = invite(core, 10.0, "forge")
    assert isinstance(fwd, SipRequest)
    vias = tuple(v for k, _, v in fwd.headers if k == "via")
    forged = response(200, "OK", vias=vias, call_id="forge")
    core.receive_datagram(forged, PEER, 10.2)  # the caller answering its own call
    assert traffic(engine, 12125550142).outcomes(10.2)[0] == 0.0
    switch_answers(core, fwd, 486, 11.0)  # the switch's real answer still counts
    assert traffic(engine, 12125550142).outcomes(11.0)[:2] == (1.0, 0.0)


def test_new_invites_reusing_a_call_id_are_new_calls_but_retransmissions_are_not() -> None:
    core, engine = rep_core()
    for i in range(5):  # one Call-ID, five transactions (new branch and CSeq each time)
        data = request(call_id="reused", branch=f"z9hG4bK-r{i}", cseq=101 + i)
        core.receive_datagram(data, PEER, 10.0 + i * 0.1)
        core.receive_datagram(data, PEER, 10.05 + i * 0.1)  # and its retransmission
    assert traffic(engine, 12125550142).calls(10.5)[2] == 5.0
