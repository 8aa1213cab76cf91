"""End-to-end: SIPp UAC -> robocall-shield -> SIPp UAS (the switch).

Each test runs real processes on 127.0.0.1 and checks three witnesses: the
SIPp exit codes (scenario regexes with check_it fail the call), the SIPp
message traces, and the proxy's own metrics and verdict log.
"""

from __future__ import annotations

import time

import pytest

from .conftest import CALLEE, CLEAN_CALLER, Lab
from .harness import SippRun

pytestmark = pytest.mark.e2e

BLOCKED = "+12125550100"
LABELLED = "+12125550111"


def assert_ok(lab: Lab, *runs: SippRun) -> None:
    """Every SIPp run exited 0, i.e. its one call succeeded."""
    for run in runs:
        if run.returncode is None:
            run.wait()
        assert run.returncode == 0, f"{run.name} failed\n{lab.report()}"


def proxy_at(lab: Lab) -> str:
    return f"127.0.0.1:{lab.proxy_port}"


@pytest.mark.parametrize("transport", ["u1", "t1"], ids=["udp", "tcp"])
def test_clean_call_with_record_route(lab: Lab, transport: str) -> None:
    uas = lab.start_uas("uas_call.xml")
    proxy = lab.start_proxy(record_route=True)
    uac = lab.run_uac("uac_call_rr.xml", transport=transport)
    assert_ok(lab, uac, uas)

    # The switch saw the INVITE come from the proxy, with the proxy's Record-Route
    # (doubled, RFC 5658, when the caller came in over TCP).
    (invite,) = uas.received("INVITE")
    assert invite.vias[0].startswith(f"SIP/2.0/UDP {proxy_at(lab)};branch=z9hG4bK")
    rr = f"<sip:{proxy_at(lab)};lr>"
    expected_rr = [rr] if transport == "u1" else [rr, f"<sip:{proxy_at(lab)};transport=tcp;lr>"]
    rr_values = [v.strip() for line in invite.headers("Record-Route") for v in line.split(",")]
    assert rr_values == expected_rr, invite.text

    # The caller sent its BYE with a Route to the proxy and the callee's Contact as R-URI...
    (bye_out,) = uac.sent("BYE")
    assert bye_out.request_uri == f"sip:127.0.0.1:{lab.uas_port};transport=UDP"
    assert rr in ",".join(bye_out.headers("Route")), bye_out.text
    # ...and the proxy popped that Route and relayed it: the switch got it via the proxy.
    (bye_in,) = uas.received("BYE")
    assert bye_in.vias[0].startswith(f"SIP/2.0/UDP {proxy_at(lab)};"), bye_in.text
    assert bye_in.headers("Route") == [], bye_in.text
    (ack_in,) = uas.received("ACK")
    assert ack_in.headers("Route") == [], ack_in.text

    if transport == "t1":
        # The caller's side really was TCP; the proxy answered on that connection.
        assert {m.transport for m in uac.messages()} == {"TCP"}
        assert proxy.metric("rs_sip_received_total", transport="tcp") >= 3  # INVITE, ACK, BYE
    for method in ("INVITE", "ACK", "BYE"):
        assert proxy.metric("rs_sip_forwarded_total", kind="request", method=method) == 1
    assert proxy.metric("rs_screening_verdicts_total", action="pass", method="INVITE") == 1
    (verdict,) = proxy.verdicts(1)
    assert verdict["action"] == "pass"
    assert verdict["caller"] == CLEAN_CALLER


@pytest.mark.parametrize("transport", ["u1", "t1"], ids=["udp", "tcp"])
def test_clean_call_plain(lab: Lab, transport: str) -> None:
    """SIPp built-in style: no Record-Route, ACK and BYE addressed to the proxy."""
    uas = lab.start_uas("uas_call.xml")
    proxy = lab.start_proxy(record_route=False)
    uac = lab.run_uac("uac_call_plain.xml", transport=transport)
    assert_ok(lab, uac, uas)

    (invite,) = uas.received("INVITE")
    assert invite.headers("Record-Route") == [], invite.text
    assert invite.request_uri == f"sip:{CALLEE}@{proxy_at(lab)}"
    for method in ("ACK", "BYE"):
        (req,) = uas.received(method)
        assert req.vias[0].startswith(f"SIP/2.0/UDP {proxy_at(lab)};"), req.text
        assert proxy.metric("rs_sip_forwarded_total", kind="request", method=method) == 1
    assert [m.header("CSeq") for m in uac.received(200)] == ["1 INVITE", "2 BYE"]


@pytest.mark.parametrize("caller", [BLOCKED, "2125550100"], ids=["e164", "national"])
def test_blocked_caller_gets_603_and_ack_is_absorbed(lab: Lab, caller: str) -> None:
    uas = lab.start_uas("uas_call.xml")
    proxy = lab.start_proxy(block=[BLOCKED])
    # uac_blocked.xml fails the call unless the 603 says "Network Blocked" and
    # carries the ATIS-1000099 Reason with our redress URL.
    uac = lab.run_uac("uac_blocked.xml", caller=caller)
    assert_ok(lab, uac)

    (ack,) = uac.sent("ACK")
    (invite,) = uac.sent("INVITE")
    (final,) = uac.received(603)
    assert ack.top_branch == invite.top_branch
    assert ack.header("To") == final.header("To")
    # The ACK matched the proxy's own 603 and went no further.
    proxy.wait_metric("rs_sip_dropped_total", 1, reason="ack-absorbed")
    assert proxy.metric("rs_sip_local_replies_total", status="603") == 1
    assert proxy.metric("rs_screening_verdicts_total", action="block", method="INVITE") == 1
    assert proxy.metric("rs_sip_forwarded_total", kind="request") == 0
    # The switch saw nothing at all: no INVITE, no ACK.
    assert uas.process is not None and uas.process.poll() is None, lab.report()
    assert uas.messages() == [], lab.report()
    (verdict,) = proxy.verdicts(1)
    assert verdict["action"] == "block"
    assert verdict["callee"] == CALLEE


def test_labelled_call_reaches_switch_with_label(lab: Lab) -> None:
    # uas_label.xml fails the call unless From and X-Robocall-Verdict carry the label.
    uas = lab.start_uas("uas_label.xml")
    proxy = lab.start_proxy(label=[LABELLED])
    uac = lab.run_uac("uac_call_plain.xml", caller=LABELLED, caller_name="Honest Bob")
    assert_ok(lab, uac, uas)

    (invite,) = uas.received("INVITE")
    assert (invite.header("From") or "").startswith(f'"SCAM LIKELY" <sip:{LABELLED}@')
    assert "Honest Bob" not in invite.text
    assert invite.headers("X-Robocall-Verdict") == ["label; score=70; reasons=labellist"]
    assert proxy.metric("rs_screening_verdicts_total", action="label", method="INVITE") == 1
    (verdict,) = proxy.verdicts(1)
    assert (verdict["action"], verdict["score"], verdict["reasons"]) == (
        "label",
        70,
        ["labellist"],
    )


def test_emergency_call_from_blocked_caller_passes(lab: Lab) -> None:
    uas = lab.start_uas("uas_call.xml")
    proxy = lab.start_proxy(block=[BLOCKED])
    uac = lab.run_uac("uac_call_plain.xml", caller=BLOCKED, callee="911", caller_name="Caller")
    assert_ok(lab, uac, uas)

    (invite,) = uas.received("INVITE")
    (sent,) = uac.sent("INVITE")
    assert invite.request_uri == f"sip:911@{proxy_at(lab)}"
    # Untouched: same From, no verdict header.
    assert invite.header("From") == sent.header("From")
    assert invite.headers("X-Robocall-Verdict") == []
    assert proxy.metric("rs_screening_verdicts_total", action="block") == 0
    assert proxy.metric("rs_sip_local_replies_total") == 0
    (verdict,) = proxy.verdicts(1)
    assert (verdict["action"], verdict["reasons"]) == ("pass", ["emergency"])


def test_retransmitted_invite_is_forwarded_again(lab: Lab) -> None:
    # The UAS answers only after 900 ms; SIPp's UAC retransmits after T1 (500 ms).
    uas = lab.start_uas("uas_retrans.xml")
    proxy = lab.start_proxy()
    uac = lab.run_uac("uac_call_plain.xml")
    assert_ok(lab, uac, uas)

    sent = uac.sent("INVITE")
    assert len(sent) == 2 and sent[0].text == sent[1].text  # a true retransmission
    first, second = uas.received("INVITE")
    # Stateless, yet deterministic: the same branch both times, so the switch
    # sees one transaction retransmitted rather than two calls.
    assert first.top_branch == second.top_branch
    assert first.vias[0].startswith(f"SIP/2.0/UDP {proxy_at(lab)};")
    assert first.text == second.text
    assert proxy.metric("rs_sip_forwarded_total", kind="request", method="INVITE") == 2
    # screened twice, as a stateless proxy must, but one call: counted, logged
    # (and recorded) once, the copy counted as a retransmission
    assert proxy.metric("rs_screening_verdicts_total", action="pass", method="INVITE") == 1
    assert proxy.metric("rs_sip_retransmissions_total", method="INVITE") == 1
    time.sleep(0.3)  # the verdict log's writer batches every 0.1 s
    assert len(proxy.verdicts(2, timeout=0.5)) == 1


def test_cancel_while_ringing(lab: Lab) -> None:
    uas = lab.start_uas("uas_cancel.xml")
    proxy = lab.start_proxy()
    uac = lab.run_uac("uac_cancel.xml")
    assert_ok(lab, uac, uas)

    (invite,) = uas.received("INVITE")
    (cancel,) = uas.received("CANCEL")
    (ack,) = uas.received("ACK")
    # The switch can match CANCEL and ACK to the INVITE: same top branch.
    assert cancel.top_branch == invite.top_branch
    assert ack.top_branch == invite.top_branch
    assert [m.header("CSeq") for m in uac.received(200)] == ["1 CANCEL"]
    assert [m.header("CSeq") for m in uac.received(487)] == ["1 INVITE"]
    for method in ("INVITE", "CANCEL", "ACK"):
        assert proxy.metric("rs_sip_forwarded_total", kind="request", method=method) == 1
    assert proxy.metric("rs_sip_dropped_total") == 0
