"""Hard limits on what the parser accepts; every one is configurable."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Limits:
    max_message_bytes: int = 65536
    max_headers: int = 256
    max_line_bytes: int = 8192


DEFAULT_LIMITS = Limits()
