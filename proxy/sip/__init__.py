"""Sans-I/O SIP core: bytes in, messages out, bytes back. No asyncio, no clock."""

from .builder import build_response, relabel_address, serialize, serialize_request
from .errors import SipParseError
from .framing import KeepAlivePing, StreamFramer, StreamMessage, parse_datagram
from .identity import CallFacts, call_facts
from .limits import DEFAULT_LIMITS, Limits
from .message import SipMessage, SipRequest, SipResponse
from .numbers import e164_key
from .parser import parse_message
from .uri import NameAddr, Uri, parse_name_addr, parse_uri
from .via import Via

__all__ = [
    "DEFAULT_LIMITS",
    "CallFacts",
    "KeepAlivePing",
    "Limits",
    "NameAddr",
    "SipMessage",
    "SipParseError",
    "SipRequest",
    "SipResponse",
    "StreamFramer",
    "StreamMessage",
    "Uri",
    "Via",
    "build_response",
    "call_facts",
    "e164_key",
    "parse_datagram",
    "parse_message",
    "parse_name_addr",
    "parse_uri",
    "relabel_address",
    "serialize",
    "serialize_request",
]
