"""Parser details: lines, folding, compact forms, lists, addresses, limits."""

from __future__ import annotations

import pytest

from proxy.sip import (
    Limits,
    SipParseError,
    SipRequest,
    SipResponse,
    call_facts,
    parse_datagram,
    parse_name_addr,
    parse_uri,
)
from tests.conftest import shared_dir
from tests.sipmsg import request


def req(data: bytes) -> SipRequest:
    msg = parse_datagram(data)
    assert isinstance(msg, SipRequest)
    return msg


def test_request_line_and_core_headers() -> None:
    msg = req(request(body=b"abc"))
    assert (
        msg.method == "INVITE"
        and msg.uri.user == "+13125550187"
        and msg.uri.params == {"user": "phone"}
    )
    assert msg.cseq == 101 and msg.cseq_method == "INVITE" and msg.max_forwards == 70
    assert msg.call_id == "call-1@198.51.100.10" and msg.body == b"abc"
    assert msg.from_.tag == "ft1" and msg.to.tag is None


def test_status_line_with_empty_and_utf8_reason() -> None:
    base = b"\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    for line, reason in ((b"SIP/2.0 100 ", ""), ("SIP/2.0 200 \u00c7a va".encode(), "\u00c7a va")):
        msg = parse_datagram(line + base)
        assert isinstance(msg, SipResponse) and msg.reason == reason


def test_folding_compact_forms_and_case() -> None:
    data = (
        b"INVITE sip:bob@example.com SIP/2.0\r\n"
        b"v: SIP/2.0/UDP a.example.com;branch=z9hG4bK1,\r\n SIP/2.0/TCP b.example.com:5070;branch=z9hG4bK2\r\n"
        b"f: <sip:alice@example.com>\r\n ;tag=99\r\n"
        b"t: sip:bob@example.com\r\n"
        b"i: abc@host\r\n"
        b"cSeQ: 1\r\n\tINVITE\r\n"
        b"m: <sip:alice@192.0.2.1>\r\n"
        b"k: timer, 100rel\r\n"
        b"l: 0\r\n\r\n"
    )
    msg = req(data)
    assert [v.host for v in msg.vias] == ["a.example.com", "b.example.com"]
    assert msg.vias[1].port == 5070 and msg.vias[1].transport == "TCP"
    assert msg.from_.tag == "99" and msg.call_id == "abc@host"
    assert msg.header_values("supported") == ["timer", "100rel"]
    assert msg.header("contact") == "<sip:alice@192.0.2.1>"


def test_multi_value_headers_split_outside_quotes_and_brackets() -> None:
    msg = req(
        request(
            extra=(
                'Route: <sip:p1.example.net;lr>, "A, B" <sip:p2.example.net;lr>',
                "Route: <sip:p3.example.net;lr>",
                "Record-Route: <sip:rr1;lr>,<sip:rr2;lr>",
            )
        )
    )
    routes = msg.header_values("route")
    assert routes == [
        "<sip:p1.example.net;lr>",
        '"A, B" <sip:p2.example.net;lr>',
        "<sip:p3.example.net;lr>",
    ]
    assert msg.header_values("record-route") == ["<sip:rr1;lr>", "<sip:rr2;lr>"]


@pytest.mark.parametrize(
    ("value", "display", "uri", "params"),
    [
        (
            '"Bob \\"B\\"" <sips:bob@example.com:5061;transport=tcp>;tag=1',
            'Bob "B"',
            "sips:bob@example.com:5061;transport=tcp",
            {"tag": "1"},
        ),
        ("Bob Smith <sip:bob@example.com>", "Bob Smith", "sip:bob@example.com", {}),
        ("sip:bob@example.com;tag=7", None, "sip:bob@example.com", {"tag": "7"}),
        (
            "<tel:+1-212-555-0142;phone-context=+1>",
            None,
            "tel:+1-212-555-0142;phone-context=+1",
            {},
        ),
        (
            "caller<sip:caller@example.com>;tag=323",
            "caller",
            "sip:caller@example.com",
            {"tag": "323"},
        ),
    ],
)
def test_name_addr_and_addr_spec(
    value: str, display: str | None, uri: str, params: dict[str, str]
) -> None:
    na = parse_name_addr(value)
    assert na.display == display and na.uri.raw == uri and na.params == params


def test_uri_forms() -> None:
    u = parse_uri("sip:+12125550142;npdi@[2001:db8::1]:5062;user=phone;lr")
    assert u.user == "+12125550142;npdi" and u.host == "[2001:db8::1]" and u.port == 5062
    assert u.params == {"user": "phone", "lr": None}
    t = parse_uri("tel:+12125550142;cpc=ordinary")
    assert t.scheme == "tel" and t.user == "+12125550142" and t.params == {"cpc": "ordinary"}
    assert parse_uri("urn:service:sos").scheme == "urn"
    for bad in ("sip:a@b:99999", "sip:a@", "no-scheme", "sip:a@b c", "sip:a@ho$t"):
        with pytest.raises(SipParseError):
            parse_uri(bad)
    with pytest.raises(SipParseError):
        parse_uri("sip:a@b?Route=x", allow_headers=False)


def test_limits_are_enforced() -> None:
    limits = Limits(max_message_bytes=2048, max_headers=16, max_line_bytes=300)
    with pytest.raises(SipParseError) as big:
        parse_datagram(request(body=b"x" * 3000), limits)
    assert big.value.status == 413
    with pytest.raises(SipParseError, match="more than 16 headers"):
        parse_datagram(request(extra=tuple(f"X-H{i}: v" for i in range(20))), limits)
    with pytest.raises(SipParseError, match="longer than 300"):
        parse_datagram(request(extra=("X-Long: " + "a" * 400,)), limits)
    assert parse_datagram(request(extra=tuple(f"X-H{i}: v" for i in range(5))), limits) is not None


def test_udp_content_length_discards_extra_octets_and_missing_means_rest() -> None:
    msg = req(request(body=b"12345") + b"JUNKJUNK")
    assert msg.body == b"12345"
    no_cl = request(body=b"").replace(b"Content-Length: 0\r\n", b"") + b"body"
    assert req(no_cl).body == b"body"


def test_keepalive_datagram_is_not_a_message() -> None:
    assert parse_datagram(b"\r\n\r\n") is None


def test_caller_is_first_pai_then_from() -> None:
    msg = req((shared_dir("sip-corpus") / "invite_pai.sip").read_bytes())
    facts = call_facts(msg, "198.51.100.10")
    assert facts.caller_key == 12125550142 and facts.asserted and not facts.anonymous
    assert facts.callee_key == 13125550187 and facts.caller_display == "WIRELESS CALLER"


@pytest.mark.parametrize(
    "name",
    [
        "invite_from_e164.sip",
        "invite_from_10digit.sip",
        "invite_from_11digit.sip",
        "invite_from_tel_visual_separators.sip",
        "invite_anonymous_privacy_id.sip",
    ],
)
def test_number_forms_give_one_key(name: str) -> None:
    facts = call_facts(req((shared_dir("sip-corpus") / name).read_bytes()), "x")
    assert facts.caller_key == 12125550142


def test_anonymous_without_network_identity() -> None:
    facts = call_facts(
        req((shared_dir("sip-corpus") / "invite_anonymous_no_pai.sip").read_bytes()), "x"
    )
    assert (
        facts.anonymous and facts.caller is None and facts.caller_key is None and facts.privacy_id
    )
    withheld = call_facts(
        req((shared_dir("sip-corpus") / "invite_anonymous_privacy_id.sip").read_bytes()), "x"
    )
    assert withheld.privacy_id and not withheld.anonymous


def test_tel_caller_and_identity_header() -> None:
    tel = call_facts(
        req((shared_dir("sip-corpus") / "invite_tel_uri_caller.sip").read_bytes()), "x"
    )
    assert tel.caller_key == 12125551234 and tel.callee_key is not None
    shaken = call_facts(
        req((shared_dir("sip-corpus") / "invite_identity_shaken.sip").read_bytes()), "x"
    )
    assert shaken.identity is not None and shaken.identity.startswith("eyJ")


def test_header_without_colon_is_rejected_even_for_a_known_name() -> None:
    parse_datagram(request(extra=("Subject: x",)))
    with pytest.raises(SipParseError, match="bad header line"):
        parse_datagram(request(extra=("Subject",)))


def test_folded_line_length_and_via_count_are_bounded() -> None:
    folded = "X-Long: a" + "".join("\r\n " + "b" * 100 for _ in range(90))
    with pytest.raises(SipParseError, match="longer than"):
        parse_datagram(request(extra=(folded,)))
    many = tuple(
        "Via: " + ", ".join(f"SIP/2.0/UDP h{j}{i};branch=z9hG4bK{i}" for i in range(60))
        for j in range(5)
    )
    with pytest.raises(SipParseError, match="Via values"):
        parse_datagram(request(extra=many))
    with pytest.raises(SipParseError, match="bad port"):
        parse_uri("sip:a@b:0")
