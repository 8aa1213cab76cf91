"""RFC 4475 torture messages and the carrier corpus, against INDEX.tsv."""

from __future__ import annotations

import contextlib
import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.events import Address, Dropped, Replied, Send
from proxy.sip import SipParseError, SipRequest, StreamFramer, StreamMessage, parse_datagram
from tests.conftest import make_config, make_core, make_equipped_core, read_index, shared_dir

# What our parser does with each torture message. None: it parses. A number:
# it raises SipParseError with that status hint. Every outcome must be one the
# INDEX's `expected` column allows; the test checks that too.
TORTURE_OUTCOME: dict[str, int | None] = {
    "badinv01": 400,
    "clerr": 400,
    "ncl": 400,
    "scalar02": 400,
    "scalarlg": 400,
    "quotbal": 400,
    "ltgtruri": 400,
    "lwsruri": 400,
    "lwsstart": 400,
    "trws": 400,
    "escruri": 400,
    "badaspec": 400,
    "baddn": 400,
    "badvers": 505,
    "mismatch01": 400,
    "mismatch02": 400,
    "bigcode": 400,
    "insuf": 400,
    "multi01": 400,
    "mcl01": 400,
    "test": 400,
    # liberal accepts: Date and Contact are opaque to a stateless proxy and are
    # forwarded byte for byte, so accepting them passes no new bad syntax on
    "baddate": None,
    "regbadct": None,
}

# What the proxy (not just the parser) must do for the messages whose INDEX
# entry names an action above the parser.
PROXY_ACTION = {
    "unkscm": ("reply", 416),
    "novelsc": ("reply", 416),
    "bext01": ("reply", 420),
    "zeromf": ("reply", 483),
    "bcast": ("drop", "bad-next-hop"),
}


def _allowed(expected: str, outcome: int | None) -> bool:
    if expected.startswith("invalid (liberal"):
        return outcome in (None, 400)
    if expected.startswith("invalid"):
        return outcome is not None
    return outcome is None  # valid, valid-syntax, valid-but-*: the parser must accept


def _torture_rows() -> list[dict[str, str]]:
    try:
        return read_index("sip-torture")
    except pytest.skip.Exception:
        return []


@pytest.mark.parametrize("row", _torture_rows(), ids=lambda r: r["name"])
def test_torture_message(row: dict[str, str]) -> None:
    data = (shared_dir("sip-torture") / f"{row['name']}.sip").read_bytes()
    outcome = TORTURE_OUTCOME.get(row["name"])
    assert _allowed(row["expected"], outcome), f"table disagrees with INDEX for {row['name']}"
    if outcome is None:
        msg = parse_datagram(data)
        assert msg is not None
    else:
        with pytest.raises(SipParseError) as info:
            parse_datagram(data)
        assert info.value.status == outcome, info.value.reason


def test_torture_index_is_covered() -> None:
    rows = read_index("sip-torture")
    assert len(rows) == 50
    for row in rows:
        if not row["expected"].startswith("valid"):
            assert row["name"] in TORTURE_OUTCOME, f"no outcome decided for {row['name']}"


@pytest.mark.parametrize("name", sorted(PROXY_ACTION))
def test_torture_proxy_action(name: str) -> None:
    data = (shared_dir("sip-torture") / f"{name}.sip").read_bytes()
    # bcast's top Via is 192.0.2.198: be that proxy so the response is ours
    core = make_core(make_config(sip={"host": "192.0.2.198", "port": 5060}))
    events = core.receive_datagram(data, Address("192.0.2.99", 5060), 0.0)
    kind, expected = PROXY_ACTION[name]
    if kind == "reply":
        assert Replied(int(expected), parse_datagram(data).method) in events  # type: ignore[union-attr]
        sent = [e for e in events if isinstance(e, Send)]
        assert len(sent) == 1 and sent[0].data.startswith(f"SIP/2.0 {expected} ".encode())
    else:
        assert Dropped(str(expected), "255.255.255.255") in events
        assert not any(isinstance(e, Send) for e in events)


def test_malformed_request_with_usable_via_gets_its_status() -> None:
    core = make_core()
    data = (shared_dir("sip-torture") / "badvers.sip").read_bytes()
    sent = [
        e
        for e in core.receive_datagram(data, Address("192.0.2.99", 5060), 0.0)
        if isinstance(e, Send)
    ]
    assert len(sent) == 1 and sent[0].data.startswith(b"SIP/2.0 505 ")
    insuf = (shared_dir("sip-torture") / "insuf.sip").read_bytes()
    sent = [
        e
        for e in core.receive_datagram(insuf, Address("192.0.2.99", 5060), 0.0)
        if isinstance(e, Send)
    ]
    assert len(sent) == 1 and sent[0].data.startswith(b"SIP/2.0 400 ")


def test_dblreq_discards_trailing_octets() -> None:
    data = (shared_dir("sip-torture") / "dblreq.sip").read_bytes()
    msg = parse_datagram(data)
    assert isinstance(msg, SipRequest) and msg.method == "REGISTER" and msg.body == b""


def _corpus_rows() -> list[dict[str, str]]:
    try:
        return [r for r in read_index("sip-corpus") if r["name"].endswith(".sip")]
    except pytest.skip.Exception:
        return []


@pytest.mark.parametrize("row", _corpus_rows(), ids=lambda r: r["name"])
def test_corpus_message_parses(row: dict[str, str]) -> None:
    data = (shared_dir("sip-corpus") / row["name"]).read_bytes()
    if row["name"].startswith("tcp_stream_"):
        framer = StreamFramer()
        events = [e for e in framer.feed(data) if isinstance(e, StreamMessage)]
        assert events, "no message framed"
        for ev in events:
            framer.parse(ev)
        assert framer.buffered == 0
    else:
        msg = parse_datagram(data)
        assert msg is not None
        if isinstance(msg, SipRequest):
            declared = msg.header("content-length")
            assert declared is not None and int(declared) == len(msg.body)


def all_messages() -> list[bytes]:
    """Every torture and corpus message, or none when ../shared is absent."""
    out: list[bytes] = []
    for name in ("sip-torture", "sip-corpus"):
        with contextlib.suppress(pytest.skip.Exception):
            out.extend(p.read_bytes() for p in sorted(shared_dir(name).glob("*.sip")))
    return out


MESSAGES = all_messages()


def mutate(data: st.DataObject, original: bytes, rounds: int, truncate: bool) -> bytes:
    """Up to ``rounds`` random edits of a message: flipped, inserted, deleted
    and duplicated bytes, and cut tails when ``truncate``."""
    raw = bytearray(original)
    ops = ["flip", "insert", "delete", "dup", *(["truncate"] if truncate else [])]
    for _ in range(data.draw(st.integers(1, rounds))):
        op = data.draw(st.sampled_from(ops))
        pos = data.draw(st.integers(0, max(0, len(raw) - 1)))
        if op == "flip" and raw:
            raw[pos] = data.draw(st.sampled_from(b'\x00\r\n \t:;,<>"@=%\\/\xff0'))
        elif op == "insert":
            raw[pos:pos] = data.draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del raw[pos : pos + data.draw(st.integers(1, 32))]
        elif op == "truncate":
            del raw[pos:]
        elif op == "dup":
            raw[pos:pos] = raw[pos : pos + data.draw(st.integers(1, 64))]
    return bytes(raw)


@pytest.mark.skipif(not MESSAGES, reason="shared material ../shared is absent")
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_messages_only_parse_or_raise(data: st.DataObject) -> None:
    original = data.draw(st.sampled_from(MESSAGES))
    blob = mutate(data, original, rounds=8, truncate=True)
    try:
        parse_datagram(blob)
    except SipParseError as exc:
        assert 400 <= exc.status <= 599
    framer = StreamFramer()
    try:
        for ev in framer.feed(blob):
            if isinstance(ev, StreamMessage):
                with contextlib.suppress(SipParseError):
                    framer.parse(ev)
    except SipParseError:
        pass
    # the proxy as a whole must not raise either: the bare core, and the
    # fully equipped one (reputation, subscribers, metrics), from a peer and
    # from the switch; it keeps its state across examples, as in production
    make_core().receive_datagram(blob, Address("192.0.2.99", 5060), 0.0)
    core, metrics = EQUIPPED
    for source in (Address("192.0.2.99", 5060), Address("192.0.2.20", 5080)):
        metrics.record(core.receive_datagram(blob, source, next(CLOCK)))


EQUIPPED = make_equipped_core()
CLOCK = itertools.count(1_790_000_000.0, 0.37)
