"""Peer actions on the call path, through the proxy core: block (603 like
other network blocks), label (without hiding a later block), throttle (503
past N calls per second, the clock being each call's arrival time), never an
emergency call; a dry run; a change applied without rebuilding the chain."""

from __future__ import annotations

from typing import Any

from blocklists.slot import ArtefactSlot
from proxy.core import StatelessProxy
from proxy.events import Address, Event, Replied, Screened, Send
from proxy.gateway.actions import Override, PeerActions, Setting
from proxy.gateway.settings import PeerPolicyConfig
from proxy.reputation import ReputationEngine
from proxy.routing import SwitchPool
from proxy.screening import Action, Mode, build_pipeline
from proxy.screening.peer_check import PeerStages
from proxy.sip import SipRequest, parse_datagram
from tests.conftest import make_config
from tests.sipmsg import request

GATEWAY = Address("203.0.113.66", 5060, "udp")
CARRIER = Address("198.51.100.10", 5060, "udp")
SWITCH = Address("192.0.2.20", 5080, "udp")
PEERS = [
    {"name": "gateway-x", "addresses": ["203.0.113.64/28"], "frn": "0099900113"},
    {"name": "carrier-a", "addresses": ["198.51.100.0/28"], "frn": "0099900101"},
]


def peer_core(
    actions: dict[str, Any] | None = None, mode: Mode = Mode.ENFORCE, **sections: Any
) -> tuple[StatelessProxy, PeerActions]:
    """A core with reputation and the peer stages, as the worker builds it;
    ``actions`` gives gateway-x's [[peers]] action keys."""
    peers = [{**PEERS[0], **(actions or {})}, PEERS[1]]
    cfg = make_config(peers=peers, **sections)
    slot = ArtefactSlot()
    engine = ReputationEngine(cfg.reputation, slot)
    acts = PeerActions(cfg.peers, PeerPolicyConfig())
    pipeline = build_pipeline(
        cfg.screening, slot, cfg.blocklists, engine, peers=PeerStages(acts, mode)
    )
    core = StatelessProxy(cfg, pipeline, SwitchPool(cfg.switches, cfg.routing), "t", engine)
    return core, acts


def call(
    core: StatelessProxy, source: Address, t: float, n: int, callee: str = "+13125550187",
    **kw: Any,
) -> list[Event]:  # fmt: skip
    data = request(
        ruri=f"sip:{callee}@192.0.2.5;user=phone",
        call_id=f"c{n}@{source.host}",
        branch=f"z9hG4bK-{n}",
        via_host=f"{source.host}:5060",
        **kw,
    )
    return core.receive_datagram(data, source, t)


def screened(events: list[Event]) -> Screened:
    (found,) = [e for e in events if isinstance(e, Screened)]
    return found


def sent(events: list[Event]) -> Send:
    (send,) = [e for e in events if isinstance(e, Send)]
    return send


def forwarded(events: list[Event]) -> SipRequest:
    send = sent(events)
    assert send.dest == SWITCH, events
    msg = parse_datagram(send.data)
    assert isinstance(msg, SipRequest)
    return msg


def test_the_stages_sit_after_emergency_and_before_reputation() -> None:
    core, _ = peer_core()
    names = [s.check.name for s in core.pipeline.stages]
    assert names[:2] == ["emergency", "peer"]
    assert names[-2:] == ["peer", "reputation"]


def test_a_blocked_peer_gets_603_and_the_other_peer_is_untouched() -> None:
    core, _ = peer_core({"action": "block"})
    events = call(core, GATEWAY, 10.0, 1)
    assert Replied(603, "INVITE") in events
    answer = sent(events)
    assert answer.dest.host == GATEWAY.host
    assert answer.data.startswith(b"SIP/2.0 603 Network Blocked\r\n")
    assert b"\r\nReason: SIP;cause=603;" in answer.data  # the redress pointer, as for all 603s
    result = screened(events)
    assert result.action is Action.BLOCK and result.screening.decided_by == "peer"
    assert result.screening.verdict.reasons == ("peer-blocked",)
    assert screened(call(core, CARRIER, 10.0, 2)).action is Action.PASS


def test_a_labelled_peer_s_calls_carry_the_label() -> None:
    core, _ = peer_core({"action": "label"})
    events = call(core, GATEWAY, 10.0, 1)
    result = screened(events)
    assert result.action is Action.LABEL
    assert result.screening.verdict.reasons[0] == "peer-labelled"
    msg = forwarded(events)
    assert (msg.header("x-robocall-verdict") or "").startswith("label; score=70; ")
    assert msg.from_.display == "SCAM LIKELY"
    assert screened(call(core, CARRIER, 10.0, 2)).action is Action.PASS


def test_a_label_does_not_hide_a_list_block() -> None:
    core, _ = peer_core({"action": "label"}, screening={"block": ["+12125550142"]})
    result = screened(call(core, GATEWAY, 10.0, 1))
    assert result.action is Action.BLOCK and result.screening.verdict.reasons == ("blocklist",)


def test_a_label_does_not_hide_a_reputation_block() -> None:
    """A withheld caller scores 30; this carrier blocks all it suspects above 20."""
    core, _ = peer_core(
        {"action": "label"},
        reputation={"label_at": 20, "block_at": 25, "carrier_policy": "block-all-suspected"},
    )
    anonymous = {"caller": "anonymous", "from_display": "Anonymous"}
    result = screened(call(core, GATEWAY, 10.0, 1, **anonymous))
    assert result.action is Action.BLOCK
    assert result.screening.verdict.reasons == ("anonymous", "unattested", "peer-labelled")
    # from the unlabelled peer the same call is blocked by reputation itself
    other = screened(call(core, CARRIER, 10.0, 2, **anonymous))
    assert other.action is Action.BLOCK and other.screening.decided_by == "reputation"


def test_throttle_admits_n_per_second_and_answers_the_rest_503() -> None:
    core, actions = peer_core({"action": "throttle", "throttle_cps": 3})
    statuses = []
    for n in range(5):  # five calls in the same instant: three tokens
        events = call(core, GATEWAY, 100.0, n)
        statuses.append(next((e.status for e in events if isinstance(e, Replied)), None))
    assert statuses == [None, None, None, 503, 503]
    throttled = call(core, GATEWAY, 100.0, 5)
    assert sent(throttled).data.startswith(b"SIP/2.0 503 Service Unavailable\r\n")
    assert screened(throttled).screening.verdict.reasons == ("peer-throttled",)
    assert actions.throttled == {"gateway-x": 3, "carrier-a": 0, "unknown": 0}
    # half a second later, one and a half tokens: one more call
    assert not any(isinstance(e, Replied) for e in call(core, GATEWAY, 100.5, 6))
    assert Replied(503, "INVITE") in call(core, GATEWAY, 100.5, 7)
    # a second later the bucket is full again, and admitted calls carry the label
    later = [call(core, GATEWAY, 102.0, 8 + n) for n in range(3)]
    assert all(screened(e).action is Action.LABEL for e in later)
    assert Replied(503, "INVITE") in call(core, GATEWAY, 102.0, 11)
    # the other peer is never throttled
    assert not any(
        isinstance(e, Replied) for n in range(10) for e in call(core, CARRIER, 100.0, 20 + n)
    )


def test_emergency_calls_are_never_blocked_or_throttled() -> None:
    core, actions = peer_core({"action": "block"})
    for n, callee in enumerate(("911", "933")):
        events = call(core, GATEWAY, 10.0, n, callee=callee)
        assert forwarded(events).method == "INVITE"
        assert screened(events).screening.decided_by == "emergency"
    actions.set_override("gateway-x", Override(Setting("throttle", 1), "test", "t", 0.0))
    assert not any(isinstance(e, Replied) for e in call(core, GATEWAY, 20.0, 10))  # the one token
    assert Replied(503, "INVITE") in call(core, GATEWAY, 20.0, 11)
    for n in range(5):  # the bucket is empty, and 911 still goes through
        events = call(core, GATEWAY, 20.0, 20 + n, callee="911")
        assert forwarded(events).method == "INVITE"
    sos = request(ruri="urn:service:sos", call_id="sos@x", branch="z9hG4bK-sos",
                  via_host="203.0.113.66:5060")  # fmt: skip
    assert forwarded(core.receive_datagram(sos, GATEWAY, 20.0)).method == "INVITE"


def test_an_operator_change_applies_to_the_next_call() -> None:
    core, actions = peer_core()
    pipeline = core.pipeline
    assert screened(call(core, GATEWAY, 10.0, 1)).action is Action.PASS
    actions.set_override("gateway-x", Override(Setting("block"), "FTC letter", "ops", 0.0))
    assert core.pipeline is pipeline, "no rebuild: the stages read the actions"
    assert Replied(603, "INVITE") in call(core, GATEWAY, 11.0, 2)
    actions.set_override("gateway-x", None)
    assert screened(call(core, GATEWAY, 12.0, 3)).action is Action.PASS


def test_observe_mode_records_what_would_have_happened() -> None:
    core, _ = peer_core({"action": "block"}, mode=Mode.OBSERVE)
    events = call(core, GATEWAY, 10.0, 1)
    assert forwarded(events).method == "INVITE"
    result = screened(events)
    assert result.action is Action.PASS
    (observed,) = [v for name, v in result.screening.observed if name == "peer"][:1]
    assert observed.reasons == ("peer-blocked",)
