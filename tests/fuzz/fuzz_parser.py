"""atheris harness: the parser, the fast path against the reference parser,
and the TCP stream framer under a chunking chosen by the input.

    python -m tests.fuzz.fuzz_parser CORPUS_DIR -max_total_time=60

Fails (and libFuzzer saves the input) when anything but SipParseError
escapes, when the fast and reference parsers disagree, or when the framer
holds more than one message's worth of bytes."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from proxy.sip import Limits, SipParseError, StreamFramer, StreamMessage
    from proxy.sip.parser import parse_message, parse_strict

from tests.fuzz.seeds import seed

SMALL = Limits(max_message_bytes=4096)


def _outcome(data: bytes, fast: bool, datagram: bool) -> object:
    parse = parse_message if fast else parse_strict
    try:
        return ("ok", parse(data, datagram=datagram))
    except SipParseError as exc:
        assert 400 <= exc.status <= 599, exc.status
        return ("error", exc.status, exc.reason, exc.headers, exc.is_request)


def one_input(data: bytes) -> None:
    for datagram in (True, False):
        fast = _outcome(data, True, datagram)
        assert fast == _outcome(data, False, datagram), data  # the fast path is invisible
    # the first byte picks the chunk size the stream arrives in
    step = (data[0] % 64 + 1) if data else 1
    framer = StreamFramer(SMALL)
    try:
        for i in range(0, len(data), step):
            for event in framer.feed(data[i : i + step]):
                if isinstance(event, StreamMessage):
                    with contextlib.suppress(SipParseError):
                        framer.parse(event)
            assert framer.buffered <= SMALL.max_message_bytes, framer.buffered
    except SipParseError as exc:
        assert exc.status in (400, 413), exc.status


def main(argv: list[str]) -> None:
    dirs = [a for a in argv[1:] if not a.startswith("-")]
    for d in dirs[:1]:
        seed(Path(d))
    atheris.Setup(argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
