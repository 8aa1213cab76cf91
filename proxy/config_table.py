"""Typed reading of one TOML table: every problem is one ``ConfigError``
naming the key. Shared by the config sections in several modules."""

from __future__ import annotations

import ipaddress
from typing import Any

from .sip.numbers import e164_key

MODES = ("enforce", "observe")


class ConfigError(Exception):
    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


class Table:
    """Reads one TOML table, type-checking each key and rejecting unknown ones."""

    def __init__(self, data: Any, path: str) -> None:
        if not isinstance(data, dict):
            raise ConfigError(path or "config", "expected a table")
        self.data = dict(data)
        self.path = path

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def sub(self, name: str) -> Table:
        return Table(self.data.pop(name, {}), self.key(name))

    def string(self, name: str, default: str, choices: tuple[str, ...] = ()) -> str:
        value = self.data.pop(name, default)
        if not isinstance(value, str):
            raise ConfigError(self.key(name), f"expected a string, got {value!r}")
        if choices and value not in choices:
            raise ConfigError(
                self.key(name), f"expected one of {', '.join(choices)}, got {value!r}"
            )
        return value

    def boolean(self, name: str, default: bool) -> bool:
        value = self.data.pop(name, default)
        if not isinstance(value, bool):
            raise ConfigError(self.key(name), f"expected true or false, got {value!r}")
        return value

    def integer(self, name: str, default: int, lo: int, hi: int) -> int:
        value = self.data.pop(name, default)
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise ConfigError(
                self.key(name), f"expected an integer from {lo} to {hi}, got {value!r}"
            )
        return value

    def number(self, name: str, default: float, lo: float, hi: float) -> float:
        value = self.data.pop(name, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
            raise ConfigError(self.key(name), f"expected a number from {lo} to {hi}, got {value!r}")
        return float(value)

    def strings(self, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = self.data.pop(name, list(default))
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(self.key(name), f"expected a list of strings, got {value!r}")
        return tuple(value)

    def numbers(self, name: str) -> frozenset[int]:
        keys = set()
        for i, text in enumerate(self.strings(name, ())):
            key = e164_key(text)
            if key is None:
                raise ConfigError(f"{self.key(name)}[{i}]", f"{text!r} is not a telephone number")
            keys.add(key)
        return frozenset(keys)

    def networks(self, name: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        """A list of addresses or CIDRs, each checked."""
        values = self.strings(name, default)
        for i, text in enumerate(values):
            try:
                ipaddress.ip_network(text, strict=False)
            except ValueError:
                raise ConfigError(
                    f"{self.key(name)}[{i}]", f"{text!r} is not an address or CIDR"
                ) from None
        return values

    def ip(self, name: str, default: str) -> str:
        value = self.string(name, default)
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ConfigError(self.key(name), f"expected an IP address, got {value!r}") from None
        return value

    def done(self) -> None:
        for name in self.data:
            raise ConfigError(self.key(name), "unknown key")
