"""Identity header parsing and PASSporT decoding (RFC 8224, 8225, 8588).

Sans-I/O: strings in, frozen values out. Nothing here checks a signature,
a clock or a certificate; ``verify.py`` does that with what this returns.

Malformed input raises ``PassportError`` with a short machine ``reason``
rather than being skipped, so a caller can always tell "no Identity header"
(nothing to parse: an empty list) from "a broken one" (an exception, which
is a verification failure, not "no validation").
"""

from __future__ import annotations

import binascii
import json
import re
from dataclasses import dataclass
from typing import Any

from proxy.sip.errors import SipParseError
from proxy.sip.grammar import WS, split_commas, unquote
from proxy.sip.numbers import digits_of, e164_key

# Bounds on what a peer can make us decode. A SHAKEN PASSporT is ~500 chars;
# these leave room for extensions (div, rcd) without letting a peer feed
# megabytes of JSON to the hot path.
MAX_TOKEN = 4096
MAX_HEADER_B64 = 1024
MAX_PAYLOAD_B64 = 3072
MAX_ENTRIES = 8
MAX_DEST_TNS = 32
_SIG_LEN = 64  # ES256: 32-byte r || 32-byte s


class PassportError(Exception):
    """A broken Identity header or PASSporT; ``reason`` is a short machine tag."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class IdentityHeader:
    """One Identity header value: the JWS and its parameters."""

    token: str  # header.payload.signature, or header..signature (compact form)
    info: str | None  # the info=<URL> parameter, angle brackets stripped
    alg: str | None
    ppt: str | None
    compact: bool


@dataclass(frozen=True, slots=True)
class Passport:
    """A decoded PASSporT, ready for ``verify.verify_passport``."""

    header: dict[str, Any]
    claims: dict[str, Any]
    signing_input: bytes  # ASCII "b64(header).b64(payload)", what was signed
    signature: bytes  # raw r || s, 64 bytes
    x5u: str
    ppt: str | None
    attest: str | None
    orig_tn: str | None
    dest_tns: tuple[str, ...]
    iat: int
    origid: str | None


def parse_identity(value: str) -> list[IdentityHeader]:
    """Parse one Identity header field value (possibly several, comma-joined).

    Returns ``[]`` for an empty value. Any malformed entry raises
    ``PassportError`` ("malformed", or "too-many" past ``MAX_ENTRIES``):
    the whole value is rejected rather than the broken entry skipped.
    """
    try:
        parts = split_commas(value)
    except SipParseError:
        raise PassportError("malformed", "unterminated quoted string") from None
    entries = [p for p in parts if p]
    if len(entries) > MAX_ENTRIES:
        raise PassportError("too-many", f"{len(entries)} Identity values")
    return [_parse_entry(p) for p in entries]


def _parse_entry(text: str) -> IdentityHeader:
    semi = text.find(";")
    token = (text if semi < 0 else text[:semi]).strip(WS)
    params = _params(text, semi) if semi >= 0 else {}
    if len(token) > MAX_TOKEN:
        raise PassportError("malformed", "token too long")
    if _JWS.fullmatch(token) is None:
        raise PassportError("malformed", "not a base64url JWS (header.payload.signature)")
    info = params.get("info")
    if info is not None:
        if not (info.startswith("<") and info.endswith(">")) or len(info) < 3:
            raise PassportError("malformed", "info is not <URL>")
        info = info[1:-1].strip(WS)
    return IdentityHeader(
        token=token,
        info=info,
        alg=params.get("alg"),
        ppt=params.get("ppt"),
        compact=".." in token,
    )


# header.payload.signature, the payload empty in the compact form
_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+")
# One ``SEMI name [EQUAL value]`` with LWS: the value a <URL> (which may hold
# ';'), a quoted string, or a token.
_PARAM = re.compile(
    r"""[ \t]*;[ \t]*([A-Za-z0-9\-.!%*_+`'~]+)[ \t]*"""
    r"""(?:=[ \t]*(<[^<>]*>|"(?:[^"\\]|\\.)*"|[^;"<> \t]+))?[ \t]*"""
)


def _params(text: str, pos: int) -> dict[str, str]:
    out: dict[str, str] = {}
    n = len(text)
    while pos < n:
        m = _PARAM.match(text, pos)
        if m is None:
            raise PassportError("malformed", f"bad parameter at {text[pos : pos + 20]!r}")
        name, value = m.group(1).lower(), m.group(2)
        if name in out:
            raise PassportError("malformed", f"duplicate parameter {name!r}")
        if value is None:
            value = ""
        elif value[0] == '"':
            value = unquote(value)
        out[name] = value
        pos = m.end()
    return out


def decode_passport(
    ih: IdentityHeader,
    *,
    orig_tn: str | None = None,
    dest_tns: tuple[str, ...] = (),
    iat: int | None = None,
) -> Passport:
    """Decode the PASSporT of one Identity header.

    The full form carries its own claims; ``orig_tn``/``dest_tns``/``iat``
    are then ignored. The compact form (RFC 8224 §4.1) carries none, so the
    payload is rebuilt from them in RFC 8225 §9 canonical form: the caller
    derives them from the SIP message (caller number, callee numbers, Date
    header). A compact ``ppt=shaken`` PASSporT cannot be rebuilt (attest and
    origid are not in the message) and raises "compact-shaken".
    """
    pieces = ih.token.split(".")
    if len(pieces) != 3:
        raise PassportError("malformed", "not a JWS (header.payload.signature)")
    head_b64, payload_b64, sig_b64 = pieces
    if len(head_b64) > MAX_HEADER_B64 or len(payload_b64) > MAX_PAYLOAD_B64:
        raise PassportError("malformed", "PASSporT too large")
    header = _json_object(_b64decode(head_b64), "header")
    signature = _b64decode(sig_b64)
    if len(signature) != _SIG_LEN:
        raise PassportError("bad-signature", f"{len(signature)}-byte signature")

    alg = _opt_str(header, "alg")
    if alg is None:
        raise PassportError("missing-claim", "header has no alg")
    if ih.alg is not None and ih.alg != alg:
        raise PassportError("alg", f"Identity alg={ih.alg} but PASSporT alg={alg}")
    ppt = _opt_str(header, "ppt")
    if ih.ppt is not None and ih.ppt != ppt:
        raise PassportError("ppt", f"Identity ppt={ih.ppt} but PASSporT ppt={ppt}")
    x5u = _opt_str(header, "x5u")
    if x5u is not None and ih.info is not None and x5u != ih.info:
        raise PassportError("x5u-mismatch", "PASSporT x5u differs from Identity info")
    x5u = x5u if x5u is not None else ih.info
    if not x5u:
        raise PassportError("missing-claim", "no x5u and no info URL")

    if ih.compact:
        if ppt == "shaken":
            raise PassportError("compact-shaken")
        if orig_tn is None or not dest_tns or iat is None:
            raise PassportError("missing-claim", "compact form needs orig, dest and Date")
        claims: dict[str, Any] = {
            "dest": {"tn": [canonical_tn(t) for t in dest_tns]},
            "iat": iat,
            "orig": {"tn": canonical_tn(orig_tn)},
        }
        payload_b64 = b64encode(canonical_json(claims))
    else:
        claims = _json_object(_b64decode(payload_b64), "payload")

    return Passport(
        header=header,
        claims=claims,
        signing_input=f"{head_b64}.{payload_b64}".encode("ascii"),
        signature=signature,
        x5u=x5u,
        ppt=ppt,
        attest=_opt_str(claims, "attest"),
        orig_tn=_orig_tn(claims),
        dest_tns=_dest_tns(claims),
        iat=_iat(claims),
        origid=_opt_str(claims, "origid"),
    )


def canonical_tn(number: str) -> str:
    """RFC 8224 §8.3 form of a number: digits only, with the country code
    and no '+' (``+12025550123`` and ``2025550123`` give ``12025550123``)."""
    plus = number[:1] == "+"
    body = number[1:] if plus else number
    if body.isascii() and body.isdigit():  # the hot case, as e164_key would give it
        return "1" + body if len(body) == 10 and not plus else body
    key = e164_key(number)
    return str(key) if key is not None else digits_of(number).removeprefix("+")


def canonical_json(obj: dict[str, Any]) -> bytes:
    """RFC 8225 §9: keys in lexicographic order, no whitespace, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def b64encode(raw: bytes) -> str:
    """base64url without padding (RFC 7515 §2)."""
    return binascii.b2a_base64(raw, newline=False).translate(_TO_URL).rstrip(b"=").decode("ascii")


_TO_URL = bytes.maketrans(b"+/", b"-_")


_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_TO_STD = bytes.maketrans(b"-_", b"+/")  # bytes.translate: far faster than str's
_PAD = ("", "", "==", "=")
_UNUSED_BITS = (0, 0, 0x0F, 0x03)  # by length % 4: low bits the last char must leave 0


def _b64decode(text: str) -> bytes:
    rem = len(text) % 4
    if rem == 1:
        raise PassportError("bad-base64", "impossible base64url length")
    if "+" in text or "/" in text:
        raise PassportError("bad-base64", "standard base64, not base64url")
    # Strict: stray low bits in the last character would let the same bytes
    # travel under several encodings; only the canonical one is accepted.
    if rem and _ALPHABET.find(text[-1]) & _UNUSED_BITS[rem]:
        raise PassportError("bad-base64", "non-canonical base64url")
    try:
        data = (text + _PAD[rem]).encode("ascii").translate(_TO_STD)
        return binascii.a2b_base64(data, strict_mode=True)
    except (binascii.Error, UnicodeEncodeError):
        raise PassportError("bad-base64") from None


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        # RFC 7515 §5.2: duplicate member names are rejected, not last-wins.
        raise PassportError("bad-json", "duplicate member name")
    return out


def _reject_constant(name: str) -> Any:
    raise PassportError("bad-json", f"non-JSON constant {name}")


# One decoder for all: json.loads(..., hooks) builds a new one per call.
_JSON = json.JSONDecoder(object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        obj = _JSON.decode(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise PassportError("bad-json", f"{what} is not JSON") from None
    if not isinstance(obj, dict):
        raise PassportError("bad-json", f"{what} is not a JSON object")
    return obj


def _opt_str(obj: dict[str, Any], key: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise PassportError("bad-claim", f"{key} is not a string")
    return value


def _orig_tn(claims: dict[str, Any]) -> str | None:
    orig = claims.get("orig")
    if not isinstance(orig, dict):
        raise PassportError("missing-claim", "no orig object")
    # RFC 8225 also allows orig.uri; SHAKEN uses tn. A uri-only orig decodes
    # with orig_tn None and fails the TN comparison in verify.
    return _opt_str(orig, "tn")


def _dest_tns(claims: dict[str, Any]) -> tuple[str, ...]:
    dest = claims.get("dest")
    if not isinstance(dest, dict):
        raise PassportError("missing-claim", "no dest object")
    tns = dest.get("tn", [])
    if not isinstance(tns, list) or len(tns) > MAX_DEST_TNS:
        raise PassportError("bad-claim", "dest.tn is not a (short) array")
    if not all(isinstance(t, str) for t in tns):
        raise PassportError("bad-claim", "dest.tn holds a non-string")
    return tuple(tns)


def _iat(claims: dict[str, Any]) -> int:
    iat = claims.get("iat")
    if iat is None:
        raise PassportError("missing-claim", "no iat")
    # bool is an int subclass; JSON true is not a timestamp.
    if not isinstance(iat, int) or isinstance(iat, bool):
        raise PassportError("bad-claim", "iat is not an integer")
    return iat
