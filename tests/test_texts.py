"""Texts count as robocalls (the proposed Do Not Disturb Act): a SIP MESSAGE
goes through the same screening as an INVITE and is blocked, labelled or
passed with the same reasons, verdict log line, decision record and metrics
(labelled by method)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from proxy.events import Screened
from proxy.metrics import Metrics
from proxy.peers import PeerDirectory
from proxy.records.recorder import DecisionRecorder
from proxy.records.settings import RecordsConfig
from proxy.screening import Action
from proxy.sip import SipRequest, SipResponse, parse_datagram
from proxy.verdict_log import verdict_record
from tests.conftest import make_config, make_core
from tests.sipmsg import request
from tests.test_proxy_core import PEER, SWITCH, one_send

BLOCKED, LABELLED, CLEAN = "+12125550142", "+12125550143", "+12125550144"


def core_and_metrics():  # type: ignore[no-untyped-def]
    cfg = make_config(
        screening={"block": [BLOCKED], "label": [LABELLED], "label_text": "SCAM LIKELY"},
        peers=[{"name": "sms-hub", "addresses": ["198.51.100.0/24"]}],
    )
    core = make_core(cfg)
    return core, Metrics(core.pool, peers=PeerDirectory(cfg.peers))


def screen(core, metrics, method: str, caller: str, n: int):  # type: ignore[no-untyped-def]
    events = core.receive_datagram(
        request(method, caller=caller, call_id=f"{method}-{n}@h", branch=f"z9hG4bK-{n}",
                body=b"Your package is waiting: http://x.example" if method == "MESSAGE" else b""),
        PEER, float(n),
    )  # fmt: skip
    metrics.record(events)
    screened = next(e for e in events if isinstance(e, Screened))
    return screened, parse_datagram(one_send(events).data), one_send(events)


@pytest.mark.parametrize(
    ("caller", "action", "reason"),
    [(BLOCKED, Action.BLOCK, "blocklist"), (LABELLED, Action.LABEL, "labellist"),
     (CLEAN, Action.PASS, None)],
)  # fmt: skip
def test_a_text_gets_what_a_call_gets(caller: str, action: Action, reason: str | None) -> None:
    core, metrics = core_and_metrics()
    text, text_out, text_send = screen(core, metrics, "MESSAGE", caller, 1)
    call, call_out, _ = screen(core, metrics, "INVITE", caller, 2)
    assert text.action is call.action is action
    assert text.screening.verdict.reasons == call.screening.verdict.reasons
    if reason is not None:
        assert reason in text.screening.verdict.reasons
    if action is Action.BLOCK:
        assert isinstance(text_out, SipResponse) and text_out.status == 603
        assert text_out.header("reason") == call_out.header("reason")  # the 603+ redress
    else:
        assert isinstance(text_out, SipRequest) and text_out.method == "MESSAGE"
        assert text_send.dest == SWITCH
        assert text_out.body.startswith(b"Your package")
        if action is Action.LABEL:
            assert text_out.header("x-robocall-verdict") == call_out.header("x-robocall-verdict")
            assert '"SCAM LIKELY"' in (text_out.header("from") or "")
    line = verdict_record(0.0, text)
    assert line["method"] == "MESSAGE" and line["action"] == action.value


def test_texts_are_counted_by_method_beside_calls() -> None:
    core, metrics = core_and_metrics()
    for n, caller in enumerate((BLOCKED, LABELLED, CLEAN, BLOCKED)):
        screen(core, metrics, "MESSAGE", caller, n)
    screen(core, metrics, "INVITE", BLOCKED, 10)
    text = generate_latest(metrics.registry).decode()
    assert 'rs_screening_verdicts_total{action="block",method="MESSAGE"} 2.0' in text
    assert 'rs_screening_verdicts_total{action="label",method="MESSAGE"} 1.0' in text
    assert 'rs_screening_verdicts_total{action="pass",method="MESSAGE"} 1.0' in text
    assert 'rs_screening_verdicts_total{action="block",method="INVITE"} 1.0' in text


def test_a_text_is_a_decision_record_for_traceback(tmp_path: Path) -> None:
    core, metrics = core_and_metrics()
    recorder = DecisionRecorder(RecordsConfig(dir=str(tmp_path / "records")))
    try:
        text, _, _ = screen(core, metrics, "MESSAGE", BLOCKED, 1)
        recorder.add(text, time.time(), "sms-hub")
    finally:
        recorder.close()
    import sqlite3

    (day,) = sorted((tmp_path / "records").glob("*.sqlite*"))[:1]
    db = sqlite3.connect(day)
    cols = [c[1] for c in db.execute("PRAGMA table_info(calls)")] if db else []
    rows = db.execute("SELECT * FROM calls").fetchall()
    db.close()
    assert len(rows) == 1
    record = dict(zip(cols, rows[0], strict=True))
    assert record["method"] == "MESSAGE" and record["peer"] == "sms-hub"
    assert record["action"] == "block"
