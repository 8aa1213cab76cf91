"""Framing: one message per UDP datagram, many per TCP stream.

``parse_datagram`` frames a datagram by Content-Length and discards extra
octets. ``StreamFramer`` is a sans-I/O byte buffer for TCP: feed it whatever
``recv`` returned and it yields whole messages and keep-alive pings, covering
partial reads, several messages per read and RFC 5626 CRLF keep-alives.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import SipParseError
from .grammar import is_digits
from .limits import DEFAULT_LIMITS, Limits
from .message import SipMessage
from .parser import parse_message

_CONTENT_LENGTH = re.compile(rb"\r\n(?:content-length|l)[ \t]*:[ \t]*([^\r\n]*)", re.I)


def parse_datagram(data: bytes, limits: Limits = DEFAULT_LIMITS) -> SipMessage | None:
    """Parse a UDP datagram; ``None`` for a keep-alive made only of CR/LF/SP."""
    if not data.strip(b"\r\n \t\x00"):
        return None
    return parse_message(data, limits, datagram=True)


@dataclass(frozen=True, slots=True)
class StreamMessage:
    data: bytes


@dataclass(frozen=True, slots=True)
class KeepAlivePing:
    """A CRLFCRLF ping; RFC 5626 §3.5.1 asks for a CRLF pong."""


StreamEvent = StreamMessage | KeepAlivePing


class StreamFramer:
    """Splits a byte stream into messages. Raises ``SipParseError`` when the
    stream cannot be framed; the connection must then be closed."""

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self._buf = bytearray()
        self._limits = limits
        # Where the header end search resumes, and the current message's
        # length once its header is read: a peer trickling one byte at a time
        # (slowloris) must cost linear time, not a rescan per byte.
        self._scanned = 0
        self._total = 0

    @property
    def buffered(self) -> int:
        return len(self._buf)

    @property
    def partial(self) -> bool:
        """Part of a message is buffered (CR/LF keep-alive bytes do not count)."""
        return bool(self._buf.strip(b"\r\n"))

    def feed(self, data: bytes) -> list[StreamEvent]:
        self._buf += data
        events: list[StreamEvent] = []
        buf = self._buf
        while buf:
            if not self._total:
                if buf[:1] == b"\r" or buf[:1] == b"\n":
                    if buf.startswith(b"\r\n\r\n"):
                        events.append(KeepAlivePing())
                        del buf[:4]
                        continue
                    if buf.startswith(b"\r\n") and len(buf) > 2 and buf[2:3] != b"\r":
                        del buf[:2]  # a lone CRLF is a pong, or stray padding
                        continue
                    if len(buf) < 4:
                        break  # wait to tell a ping from a pong
                    del buf[:1]
                    continue
                end = buf.find(b"\r\n\r\n", self._scanned)
                if end < 0:
                    if len(buf) > self._limits.max_message_bytes:
                        raise SipParseError(413, "Message Too Large")
                    self._scanned = max(0, len(buf) - 3)
                    break
                total = end + 4 + self._content_length(bytes(buf[: end + 2]))
                if total > self._limits.max_message_bytes:
                    raise SipParseError(413, "Message Too Large")
                self._total = total
            if len(buf) < self._total:
                break
            events.append(StreamMessage(bytes(buf[: self._total])))
            del buf[: self._total]
            self._scanned = self._total = 0
        return events

    def parse(self, event: StreamMessage) -> SipMessage:
        return parse_message(event.data, self._limits, datagram=False)

    @staticmethod
    def _content_length(head: bytes) -> int:
        values = {m.group(1).strip() for m in _CONTENT_LENGTH.finditer(head)}
        if not values:
            raise SipParseError(400, "stream message without Content-Length")
        if len(values) > 1:
            raise SipParseError(400, "conflicting Content-Length headers")
        text = values.pop().decode("latin-1")
        if not is_digits(text) or len(text) > 9:
            raise SipParseError(400, f"bad Content-Length {text[:20]!r}")
        return int(text)
