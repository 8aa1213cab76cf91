"""Hard limits on what the parser and the TCP edge accept; every one is
configurable under [sip.limits]."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Limits:
    max_message_bytes: int = 65536
    max_headers: int = 256
    max_line_bytes: int = 8192
    # TCP: without these a few sources could hold every socket and
    # gigabytes of half-sent messages (like Kamailio's tcp_max_connections,
    # tcp_conn_wq_max and tcp_msg_read_timeout)
    max_connections: int = 4096
    max_connections_per_source: int = 64
    max_buffered_bytes: int = 33554432
    max_buffered_bytes_per_source: int = 1048576
    message_timeout: float = 10.0  # seconds to finish a started message; 0: no deadline


DEFAULT_LIMITS = Limits()
