"""Invalid NANP callers, flagged without any list (FCC: providers may block
calls from numbers that cannot be valid)."""

from __future__ import annotations

_NANP_BASE = 10_000_000_000  # key of +1 000 000 0000
_NANP_END = 20_000_000_000
_VISUAL = frozenset("+-.() ")


def invalid_nanp_key(key: int) -> bool:
    """True when an E.164 key in +1 cannot be a North American number:
    NPA or NXX starting with 0 or 1, or an N11 area code."""
    if not _NANP_BASE <= key < _NANP_END:
        return False  # not NANP; other plans are not judged here
    national = key - _NANP_BASE
    npa = national // 10_000_000
    nxx = national // 10_000 % 1000
    return npa < 200 or nxx < 200 or npa % 100 == 11


def claims_a_number(user: str) -> bool:
    """Whether a caller user part is a telephone number claim at all: it has
    digits. ``alice`` on an enterprise trunk is not judged as a number."""
    return any(c.isdigit() for c in user)


def invalid_caller(user: str, key: int | None) -> bool:
    """A caller claiming a number that cannot be valid: non-digits mixed in,
    the wrong length (no E.164 key), or an impossible NANP number."""
    if not claims_a_number(user):
        return False
    if key is None:
        return True  # wrong length or non-digits among the digits
    if user.startswith("+") and not user.startswith("+1"):
        return False
    return invalid_nanp_key(key)


def visual_only(text: str) -> bool:
    return all(c in _VISUAL or c.isdigit() for c in text)
