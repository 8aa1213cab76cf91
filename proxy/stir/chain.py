"""STI certificate chains validated against configured STI-CA roots.

``cryptography.x509.verification`` only builds TLS server/client policies
(it demands the serverAuth/clientAuth EKU and a DNS/IP subject), and an STI
certificate (RFC 8226, ATIS-1000080) is neither, so the chain is walked by
hand here: leaf first, each certificate signed by the next, the last one
issued by (or equal to) a trusted root, every issuer a CA, every validity
period covering the time given, and an EC P-256 leaf key for ES256.

Sans-I/O apart from ``TrustStore.from_directory``, which is read once at
start-up; the certificate fetcher calls ``TrustStore.key_from_response``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec

MAX_CERTS = 8  # leaf + intermediates a peer may hand us
MAX_BODY = 64 * 1024
_PEM_MARK = b"-----BEGIN CERTIFICATE-----"
_ROOT_SUFFIXES = frozenset({".pem", ".crt", ".cer", ".der"})


class ChainError(Exception):
    """A certificate or chain that cannot be trusted; ``reason`` is a short tag."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class TrustStoreError(ValueError):
    """A trust-anchor directory or file that cannot be loaded (start-up)."""


def parse_certificates(body: bytes) -> list[x509.Certificate]:
    """A PEM bundle (leaf first, then intermediates) or one DER certificate."""
    if not body.strip():
        raise ChainError("no-certificate", "empty body")
    if len(body) > MAX_BODY:
        raise ChainError("bad-certificate", f"{len(body)} bytes")
    if _PEM_MARK in body:
        if body.count(_PEM_MARK) > MAX_CERTS:
            raise ChainError("bad-chain", f"more than {MAX_CERTS} certificates")
        try:
            return x509.load_pem_x509_certificates(body)
        except ValueError as exc:
            raise ChainError("bad-certificate", str(exc)) from None
    try:
        return [x509.load_der_x509_certificate(body)]
    except ValueError as exc:
        raise ChainError("bad-certificate", str(exc)) from None


class TrustStore:
    """The STI-CA roots a chain must end at."""

    def __init__(self, roots: list[x509.Certificate]) -> None:
        self._roots = tuple(roots)
        # Several roots may share a subject (a re-keyed CA): keep them all.
        self._by_subject: dict[x509.Name, list[x509.Certificate]] = {}
        for root in roots:
            self._by_subject.setdefault(root.subject, []).append(root)

    @property
    def roots(self) -> tuple[x509.Certificate, ...]:
        return self._roots

    @classmethod
    def from_directory(cls, path: str | Path) -> TrustStore:
        """Every .pem/.crt/.cer/.der file in ``path`` (PEM may hold several
        roots). Other files are ignored; an unreadable or unparsable root
        file, or a directory without any root, raises ``TrustStoreError``."""
        directory = Path(path)
        try:
            names = sorted(p for p in directory.iterdir() if p.suffix.lower() in _ROOT_SUFFIXES)
        except OSError as exc:
            raise TrustStoreError(f"{directory}: cannot list: {exc.strerror}") from None
        roots: list[x509.Certificate] = []
        for file in names:
            try:
                data = file.read_bytes()
            except OSError as exc:
                raise TrustStoreError(f"{file}: cannot read: {exc.strerror}") from None
            try:
                if _PEM_MARK in data:
                    roots.extend(x509.load_pem_x509_certificates(data))
                else:
                    roots.append(x509.load_der_x509_certificate(data))
            except ValueError as exc:
                raise TrustStoreError(f"{file}: not a PEM or DER certificate: {exc}") from None
        if not roots:
            raise TrustStoreError(f"{directory}: no STI-CA root certificate (.pem/.crt/.der)")
        return cls(roots)

    def validate(self, chain: list[x509.Certificate], at: datetime) -> ec.EllipticCurvePublicKey:
        """The leaf's public key once ``chain`` (leaf first) checks out at ``at``."""
        return self._validate(chain, at)[0]

    def key_from_response(self, body: bytes, now: float) -> ec.EllipticCurvePublicKey:
        """Parse and validate an x5u response body; raises ``ChainError``."""
        return self.key_and_expiry(body, now)[0]

    def key_and_expiry(self, body: bytes, now: float) -> tuple[ec.EllipticCurvePublicKey, float]:
        """As ``key_from_response``, with the POSIX time the chain stops
        being valid (earliest notAfter, root included): a cache must not
        keep the key past it whatever Cache-Control says."""
        at = datetime.fromtimestamp(now, UTC)
        key, not_after = self._validate(parse_certificates(body), at)
        return key, not_after.timestamp()

    def _validate(
        self, chain: list[x509.Certificate], at: datetime
    ) -> tuple[ec.EllipticCurvePublicKey, datetime]:
        if not chain:
            raise ChainError("no-certificate")
        if len(chain) > MAX_CERTS:
            raise ChainError("bad-chain", f"more than {MAX_CERTS} certificates")
        if at.tzinfo is None:
            at = at.replace(tzinfo=UTC)
        for cert in chain:
            _check_period(cert, at)
        for depth, (child, issuer) in enumerate(pairwise(chain)):
            _check_issuer(issuer, depth)
            _check_signed(child, issuer)
        last = chain[-1]
        root = self._anchor(last)
        if root is not last:
            _check_period(root, at)
            _check_issuer(root, len(chain) - 1)
        if _is_ca(chain[0]):
            # STI end-entity certificates are CA:FALSE; a CA key signing
            # PASSporTs directly is a misissued or misused certificate.
            raise ChainError("bad-chain", "leaf certificate is a CA")
        leaf_key = chain[0].public_key()
        if not isinstance(leaf_key, ec.EllipticCurvePublicKey):
            raise ChainError("key-type", f"leaf key is {type(leaf_key).__name__}")
        if leaf_key.curve.name != "secp256r1":
            raise ChainError("key-type", f"leaf curve is {leaf_key.curve.name}, not P-256")
        not_after = min(c.not_valid_after_utc for c in (*chain, root))
        return leaf_key, not_after

    def _anchor(self, last: x509.Certificate) -> x509.Certificate:
        """The trusted root that ``last`` is, or that issued it."""
        for root in self._by_subject.get(last.subject, ()):
            if root == last:  # the peer included the root itself
                return last
        for root in self._by_subject.get(last.issuer, ()):
            try:
                last.verify_directly_issued_by(root)
            except (ValueError, TypeError, InvalidSignature):
                continue  # same name, other key: try the next root
            return root
        raise ChainError("untrusted", f"no trusted root issued {last.issuer.rfc4514_string()}")


def _check_period(cert: x509.Certificate, at: datetime) -> None:
    if at < cert.not_valid_before_utc:
        raise ChainError("not-yet-valid", cert.subject.rfc4514_string())
    if at > cert.not_valid_after_utc:
        raise ChainError("expired", cert.subject.rfc4514_string())


def _check_issuer(issuer: x509.Certificate, below: int) -> None:
    """``issuer`` is a CA allowed ``below`` intermediate CAs under it."""
    try:
        bc = issuer.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        raise ChainError("not-a-ca", issuer.subject.rfc4514_string()) from None
    if not bc.ca:
        raise ChainError("not-a-ca", issuer.subject.rfc4514_string())
    if bc.path_length is not None and below > bc.path_length:
        raise ChainError("bad-chain", f"path length exceeded at {issuer.subject.rfc4514_string()}")


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def _check_signed(child: x509.Certificate, issuer: x509.Certificate) -> None:
    try:
        child.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise ChainError(
            "bad-chain", f"{child.subject.rfc4514_string()} not issued by the next certificate"
        ) from exc
