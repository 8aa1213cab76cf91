"""The core's side of STIR/SHAKEN: what it does with a verification.

The verifier here is a stand-in with the checker's interface, so these tests
pin the core's behaviour alone: verstat to the switch, a forged verstat
replaced, 438 on request, waiting for a certificate, the reputation input.
The checker itself is tested in test_stir_verify and end to end in
test_stir_e2e.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from proxy.events import AwaitCertificate, Replied, Screened, Send
from proxy.sip import CallFacts, SipRequest, parse_datagram
from proxy.stir.settings import StirConfig
from proxy.stir.verstat import with_verstat
from tests.conftest import make_config, make_core, make_reputation_core
from tests.sipmsg import request
from tests.test_proxy_core import PEER, SWITCH, one_send

PAI = ('P-Asserted-Identity: "Alice" <sip:+12125550142@198.51.100.10;user=phone>',)


class Outcome(Enum):
    PASSED = "TN-Validation-Passed"
    FAILED = "TN-Validation-Failed"
    NO_VALIDATION = "No-TN-Validation"


@dataclass(frozen=True)
class Result:
    outcome: Outcome
    attest: str | None
    reason: str


@dataclass
class FakeVerifier:
    answer: Result | str
    cfg: StirConfig = field(default_factory=StirConfig)
    calls: list[bool] = field(default_factory=list)

    def verify(self, req: SipRequest, call: CallFacts, now: float, may_wait: bool) -> Result | str:
        self.calls.append(may_wait)
        if isinstance(self.answer, str) and not may_wait:
            return Result(Outcome.NO_VALIDATION, None, "cert-unavailable")
        return self.answer


def forwarded(answer: Result | str, *extra: str, **cfg: bool) -> tuple[bytes, list[object]]:
    core = make_core(make_config())
    core.stir = FakeVerifier(answer, StirConfig(**cfg))  # type: ignore[assignment]
    events = core.receive_datagram(request(extra=extra), PEER, 1.0)
    send = one_send(events)  # type: ignore[arg-type]
    assert send.dest == SWITCH
    return send.data, events


def header(data: bytes, name: str) -> str:
    msg = parse_datagram(data)
    assert msg is not None
    value = msg.header(name)
    assert value is not None
    return value


def test_a_passed_verification_goes_to_the_switch_on_the_pai() -> None:
    data, events = forwarded(Result(Outcome.PASSED, "A", "ok"), *PAI)
    pai = header(data, "p-asserted-identity")
    assert "sip:+12125550142;verstat=TN-Validation-Passed@198.51.100.10" in pai
    assert "verstat" not in header(data, "from"), "From carries it only without a PAI"
    screened = next(e for e in events if isinstance(e, Screened))
    assert screened.call.verified == "TN-Validation-Passed"
    assert screened.call.attest == "A" and screened.call.verify_reason == "ok"


def test_without_pai_the_from_carries_it() -> None:
    data, _ = forwarded(Result(Outcome.NO_VALIDATION, None, "no-identity"))
    assert ";verstat=No-TN-Validation@" in header(data, "from")


def test_a_verstat_a_peer_put_there_is_replaced() -> None:
    forged = ("P-Asserted-Identity: <sip:+12125550142;verstat=TN-Validation-Passed@h>",)
    data, _ = forwarded(Result(Outcome.FAILED, None, "bad-signature"), *forged)
    pai = header(data, "p-asserted-identity")
    assert pai.count("verstat") == 1 and "verstat=TN-Validation-Failed" in pai


def test_verstat_off_leaves_the_headers_alone() -> None:
    data, events = forwarded(Result(Outcome.PASSED, "A", "ok"), *PAI, verstat=False)
    assert "verstat" not in data.decode()
    screened = next(e for e in events if isinstance(e, Screened))
    assert screened.call.verified == "TN-Validation-Passed", "reputation still learns it"


def test_reject_failed_answers_438() -> None:
    core = make_core(make_config())
    core.stir = FakeVerifier(  # type: ignore[assignment]
        Result(Outcome.FAILED, None, "bad-signature"), StirConfig(reject_failed=True)
    )
    events = core.receive_datagram(request(), PEER, 1.0)
    assert Replied(438, "INVITE") in events
    assert one_send(events).data.startswith(b"SIP/2.0 438 Invalid Identity Header")  # type: ignore[arg-type]
    core.stir = FakeVerifier(  # type: ignore[assignment]
        Result(Outcome.NO_VALIDATION, None, "cert-unavailable"), StirConfig(reject_failed=True)
    )
    assert one_send(core.receive_datagram(request(call_id="n"), PEER, 1.0)).dest == SWITCH  # type: ignore[arg-type]


def test_an_uncached_certificate_holds_the_invite_until_it_is_offered_again() -> None:
    core = make_core(make_config())
    verifier = FakeVerifier("https://cert.example.net/sp.pem")
    core.stir = verifier  # type: ignore[assignment]
    held = core.receive_datagram(request(), PEER, 1.0)
    wait = [e for e in held if isinstance(e, AwaitCertificate)]
    assert len(wait) == 1 and wait[0].url == "https://cert.example.net/sp.pem"
    assert not any(isinstance(e, Send) for e in held), "nothing is sent while it waits"
    again = core.receive_message(wait[0].request, wait[0].source, 1.2, waited=True)
    assert verifier.calls == [True, False]
    assert one_send(again).dest == SWITCH  # type: ignore[arg-type]
    assert ";verstat=No-TN-Validation@" in header(one_send(again).data, "from")  # type: ignore[arg-type]


def test_with_verstat_forms() -> None:
    assert with_verstat('"A" <sip:+1212@h;user=phone>;tag=1', "X") == (
        '"A" <sip:+1212;verstat=X@h;user=phone>;tag=1'
    )
    assert with_verstat("<tel:+1212;verstat=Y>", "X") == "<tel:+1212;verstat=X>"
    assert with_verstat("sip:+1212@h;tag=9", "X") == "<sip:+1212;verstat=X@h>;tag=9"
    assert with_verstat("tel:+1212;tag=2", "X") == "<tel:+1212;verstat=X>;tag=2"
    assert with_verstat("<sip:h>", "X") == "<sip:h>", "no user part, no number"
    assert with_verstat("<sip:+1212@h;verstat=Y>", "X") == "<sip:+1212;verstat=X@h>"


def test_our_own_verification_feeds_the_reputation_score() -> None:
    """No [reputation] verstat_from is needed for what the proxy verified itself."""
    fired: dict[str, set[str]] = {}
    for outcome, attest in ((Outcome.PASSED, "A"), (Outcome.FAILED, None)):
        core, engine = make_reputation_core()
        core.stir = FakeVerifier(Result(outcome, attest, "x"))  # type: ignore[assignment]
        events = core.receive_datagram(request(call_id=outcome.name), PEER, 1.0)
        call = next(e for e in events if isinstance(e, Screened)).call
        fired[outcome.name] = {name for name, _ in engine.assess(call).points}
    assert "attestation-a" in fired["PASSED"] and "stir-failed" not in fired["PASSED"]
    assert "stir-failed" in fired["FAILED"] and "attestation-a" not in fired["FAILED"]
