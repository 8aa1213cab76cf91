"""Telephone numbers to integer keys, without phonenumbers on the hot path.

The key of a number is its E.164 digits as an ``int`` (``+12125550142`` ->
12125550142): compact, hashable, and what the blocklist filters store.
"""

from __future__ import annotations

from .uri import Uri

# RFC 3966 visual separators plus the space some peers still send.
_STRIP = str.maketrans("", "", "-.() ")


def digits_of(user: str) -> str:
    """The dialled digits of a user part / tel: number, with a leading '+'
    kept; parameters (``;npdi``, ``;rn=``) and visual separators removed."""
    semi = user.find(";")
    if semi >= 0:
        user = user[:semi]
    if "%" in user:
        user = _unescape(user)
    return user.translate(_STRIP)


def e164_key(number: str) -> int | None:
    """E.164 integer for a number in any common NANP form, or any '+' form.

    ``+12125550142``, ``12125550142``, ``2125550142`` and
    ``+1-212-555-0142`` all give 12125550142. Short codes, national numbers
    of other lengths and anything with non-digits give ``None``.
    """
    text = digits_of(number)
    if text.startswith("+"):
        body = text[1:]
        if 8 <= len(body) <= 15 and body.isascii() and body.isdigit() and body[0] != "0":
            return int(body)
        return None
    if not (text.isascii() and text.isdigit()):
        return None
    if len(text) == 10:
        return 10_000_000_000 + int(text)
    if len(text) == 11 and text[0] == "1":
        return int(text)
    return None


def uri_number(uri: Uri) -> str | None:
    """The telephone-number part of a sip:/sips:/tel: URI, if it has one."""
    if uri.scheme == "tel":
        return uri.user
    if uri.scheme in ("sip", "sips") and uri.user:
        return uri.user
    return None


def _unescape(text: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "%" and _is_hex(text[i + 1 : i + 3]):
            out.append(chr(int(text[i + 1 : i + 3], 16)))
            i += 3
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _is_hex(pair: str) -> bool:
    return len(pair) == 2 and all(c in "0123456789abcdefABCDEF" for c in pair)
