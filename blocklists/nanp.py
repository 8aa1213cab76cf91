"""Invalid NANP callers, flagged without any list (FCC: providers may block
calls from numbers that cannot be valid)."""

from __future__ import annotations

import re

_NANP_BASE = 10_000_000_000  # key of +1 000 000 0000
_NANP_END = 20_000_000_000
_DIGIT = re.compile(r"\d")
SHORTEST_CLAIM = 7  # fewer digits: an extension or short code, not a PSTN number


def invalid_nanp_key(key: int) -> bool:
    """True when an E.164 key in +1 cannot be a North American number:
    NPA or NXX starting with 0 or 1, or an N11 area code."""
    if not _NANP_BASE <= key < _NANP_END:
        return False  # not NANP; other plans are not judged here
    national = key - _NANP_BASE
    npa = national // 10_000_000
    nxx = national // 10_000 % 1000
    return npa < 200 or nxx < 200 or npa % 100 == 11


def invalid_caller(user: str, key: int | None) -> bool:
    """A caller (digits and '+' as extracted, visual separators removed) that
    claims a North American number which cannot exist.

    Judged as NANP claims: ``+1`` numbers, and digit strings of 7 or more
    digits without ``+`` that are not international dialling (``011``).
    Such a claim is invalid with non-digits among the digits, with anything
    but 10 national digits, or with an impossible NPA/NXX. Other countries'
    ``+`` numbers, ``011`` strings and short extensions are not judged.
    """
    if user.startswith("+1") and len(user) == 12 and key is not None:
        return invalid_nanp_key(key)  # the common case: already a clean E.164 key
    if _DIGIT.search(user) is None:
        return False  # `alice` on an enterprise trunk is not a number claim
    if user.startswith("+"):
        if not user.startswith("+1"):
            return False
        national = user[2:]
    else:
        if user.startswith("011"):
            return False
        national = user[1:] if len(user) == 11 and user[0] == "1" else user
        if len(user) < SHORTEST_CLAIM:
            return False
    if not (national.isascii() and national.isdigit()) or len(national) != 10:
        return True
    return key is None or invalid_nanp_key(key)
