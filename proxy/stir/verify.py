"""PASSporT verification against a public key (RFC 8224 §6.2, RFC 8588).

Sans-I/O and clock-free: the key comes from the certificate cache (already
validated by ``chain.TrustStore``) and the time is passed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from .chain import ChainError
from .passport import Passport, PassportError, canonical_tn

ATTESTATIONS = frozenset({"A", "B", "C"})
_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())


class Outcome(StrEnum):
    """The verstat values of 3GPP TS 24.229 §7.2A.20 (str(outcome) is the value)."""

    PASSED = "TN-Validation-Passed"
    FAILED = "TN-Validation-Failed"
    NO_VALIDATION = "No-TN-Validation"


@dataclass(frozen=True, slots=True)
class Verification:
    outcome: Outcome
    attest: str | None  # only meaningful when passed
    reason: str  # "ok", or why it failed / was not validated

    @property
    def passed(self) -> bool:
        return self.outcome is Outcome.PASSED


def verification_for_error(err: PassportError | ChainError) -> Verification:
    """The result for a PASSporT that could not be decoded, or whose
    certificate failed validation. A compact SHAKEN PASSporT is not a
    failure: it simply cannot be checked (No-TN-Validation). Whether a
    certificate that could not be *fetched* counts as failed or unverified
    is the caller's policy, not an error here."""
    if err.reason == "compact-shaken":
        return Verification(Outcome.NO_VALIDATION, None, err.reason)
    return Verification(Outcome.FAILED, None, err.reason)


def verify_passport(
    p: Passport,
    key: ec.EllipticCurvePublicKey,
    *,
    caller: str | None,
    callee: str | None,
    now: float,
    date: float | None,
    max_skew: float = 60.0,
) -> Verification:
    """Check one decoded PASSporT for one INVITE.

    ``caller``/``callee`` are the numbers in the proxy's form (``+1...``,
    ``1...`` or 10 NANP digits); ``date`` is the SIP Date header as a POSIX
    time, when the request has one. The cheap checks run before the
    signature, so junk costs no ECDSA operation.
    """
    header = p.header
    if header.get("alg") != "ES256":
        return _failed("alg")
    typ = header.get("typ")
    if typ is not None and typ != "passport":
        return _failed("typ")
    if p.ppt is not None and p.ppt != "shaken":
        return _failed("ppt")
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        return _failed("key-type")

    # iat within max_skew of now and of Date, in either direction: a future
    # iat is as suspect as a stale one (RFC 8224 §6.2.4 freshness).
    if abs(p.iat - now) > max_skew:
        return _failed("iat-stale")
    if date is not None and abs(p.iat - date) > max_skew:
        return _failed("iat-date-skew")

    if not caller or p.orig_tn is None or _tn(p.orig_tn) != _tn(caller):
        return _failed("orig-mismatch")
    if not callee:
        return _failed("dest-mismatch")
    want = _tn(callee)
    if not any(_tn(t) == want for t in p.dest_tns):
        return _failed("dest-mismatch")

    # SHAKEN requires attest A/B/C; a plain RFC 8225 PASSporT has none, but
    # a present attest must still be one of the three.
    if (p.attest is not None or p.ppt == "shaken") and p.attest not in ATTESTATIONS:
        return _failed("bad-attest")

    sig = p.signature
    if len(sig) != 64:
        return _failed("bad-signature")
    der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    try:
        key.verify(der, p.signing_input, _ECDSA_SHA256)
    except InvalidSignature:
        return _failed("bad-signature")
    return _PASSED[p.attest]


def _tn(number: str) -> str:
    # Empty digits never equal anything real ("" would equal "").
    return canonical_tn(number) or "\0"


# Results are immutable: share them rather than build one per INVITE.
_PASSED = {a: Verification(Outcome.PASSED, a, "ok") for a in (*sorted(ATTESTATIONS), None)}
_FAILED: dict[str, Verification] = {}


def _failed(reason: str) -> Verification:
    v = _FAILED.get(reason)
    if v is None:
        v = _FAILED[reason] = Verification(Outcome.FAILED, None, reason)
    return v
