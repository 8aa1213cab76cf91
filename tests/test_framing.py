"""TCP stream framing: partial reads, several messages per read, keep-alives."""

from __future__ import annotations

import pytest

from proxy.sip import KeepAlivePing, Limits, SipParseError, SipRequest, StreamFramer, StreamMessage
from tests.conftest import shared_dir
from tests.sipmsg import request


def test_partial_reads_byte_by_byte() -> None:
    data = request(body=b"v=0\r\n")
    framer = StreamFramer()
    events = []
    for i in range(len(data)):
        events += framer.feed(data[i : i + 1])
    assert events == [StreamMessage(data)]
    msg = framer.parse(events[0])
    assert isinstance(msg, SipRequest) and msg.body == b"v=0\r\n"


def test_several_messages_in_one_read_and_a_split_tail() -> None:
    a, b, c = (
        request(call_id="a", body=b"xy"),
        request(call_id="b"),
        request(call_id="c", body=b"zz"),
    )
    framer = StreamFramer()
    blob = a + b + c
    events = framer.feed(blob[:-3])
    assert events == [StreamMessage(a), StreamMessage(b)]
    assert framer.feed(blob[-3:]) == [StreamMessage(c)]
    assert framer.buffered == 0


def test_crlf_keepalive_ping_then_message() -> None:
    data = (shared_dir("sip-corpus") / "tcp_stream_crlf_ping_then_options.sip").read_bytes()
    framer = StreamFramer()
    events = framer.feed(data)
    assert isinstance(events[0], KeepAlivePing) and isinstance(events[1], StreamMessage)
    assert len(events) == 2


def test_corpus_two_messages_framed_by_content_length() -> None:
    data = (shared_dir("sip-corpus") / "tcp_stream_two_messages.sip").read_bytes()
    framer = StreamFramer()
    msgs = [framer.parse(e) for e in framer.feed(data) if isinstance(e, StreamMessage)]
    assert [m.method for m in msgs if isinstance(m, SipRequest)] == ["INVITE", "OPTIONS"]
    assert len(msgs[0].body) == 240


def test_stream_errors() -> None:
    no_cl = request().replace(b"Content-Length: 0\r\n", b"")
    with pytest.raises(SipParseError, match="without Content-Length"):
        StreamFramer().feed(no_cl)
    with pytest.raises(SipParseError, match="Content-Length"):
        StreamFramer().feed(request().replace(b"Content-Length: 0", b"Content-Length: -5"))
    with pytest.raises(SipParseError) as big:
        StreamFramer(Limits(max_message_bytes=4096)).feed(b"INVITE " + b"a" * 5000)
    assert big.value.status == 413
    with pytest.raises(SipParseError) as declared:
        StreamFramer(Limits(max_message_bytes=4096)).feed(
            request().replace(b"Content-Length: 0", b"Content-Length: 9999")
        )
    assert declared.value.status == 413
