"""A test STI-CA and PASSporT signer, made with ``cryptography`` (for tests).

``make_sti_ca()`` gives a root, an intermediate and an EC P-256 STI leaf
(with a TNAuthList SPC, RFC 8226), plus ``tls_server()`` for a loopback
HTTPS server that serves the chain. ``sign_identity()`` returns an Identity
header value; it encodes the PASSporT on its own (not through proxy.stir),
so a bug in the decoder cannot hide behind the same bug here.
"""

from __future__ import annotations

import base64
import ipaddress
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

TN_AUTH_LIST_OID = x509.ObjectIdentifier("1.3.6.1.5.5.7.1.26")
DEFAULT_ORIGID = "123e4567-e89b-12d3-a456-426614174000"


@dataclass(frozen=True, slots=True)
class Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


@dataclass(frozen=True, slots=True)
class StiCa:
    root: Issued
    intermediate: Issued
    leaf: Issued

    @property
    def chain_pem(self) -> bytes:
        """What an x5u URL serves: the leaf, then the intermediate."""
        return self.leaf.pem + self.intermediate.pem

    def sign(self, **kwargs: Any) -> str:
        """``sign_identity`` with this CA's leaf key."""
        return sign_identity(self.leaf.key, **kwargs)

    def tls_server(self, host: str = "127.0.0.1", *, now: datetime | None = None) -> Issued:
        """A TLS server certificate for ``host`` under this root (serverAuth,
        SAN IP or DNS), for a local HTTPS server trusting ``root.pem``."""
        now = now or datetime.now(UTC)
        try:
            san: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
        except ValueError:
            san = x509.DNSName(host)
        return issue(
            host,
            self.intermediate,
            ca=False,
            not_before=now - timedelta(days=1),
            not_after=now + timedelta(days=30),
            extra=[
                (x509.SubjectAlternativeName([san]), False),
                (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),
            ],
        )


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def issue(
    cn: str,
    issuer: Issued | None,
    *,
    ca: bool,
    not_before: datetime,
    not_after: datetime,
    key: ec.EllipticCurvePrivateKey | None = None,
    path_length: int | None = None,
    basic_constraints: bool = True,
    extra: list[tuple[x509.ExtensionType, bool]] | None = None,
) -> Issued:
    """A certificate for ``cn`` signed by ``issuer`` (self-signed when None)."""
    key = key or new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.cert.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
    )
    if basic_constraints:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=ca, path_length=path_length if ca else None), critical=True
        )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    for ext, critical in extra or []:
        builder = builder.add_extension(ext, critical)
    signer = issuer.key if issuer else key
    return Issued(builder.sign(signer, hashes.SHA256()), key)


def tn_auth_list(spc: str) -> x509.UnrecognizedExtension:
    """RFC 8226 TNAuthList holding one SPC: SEQUENCE { [0] EXPLICIT IA5String }."""
    ia5 = b"\x16" + bytes([len(spc)]) + spc.encode("ascii")
    entry = b"\xa0" + bytes([len(ia5)]) + ia5
    return x509.UnrecognizedExtension(TN_AUTH_LIST_OID, b"\x30" + bytes([len(entry)]) + entry)


def make_sti_ca(
    *,
    name: str = "Test STI-CA",
    now: datetime | None = None,
    leaf_not_before: datetime | None = None,
    leaf_not_after: datetime | None = None,
    intermediate_is_ca: bool = True,
    leaf_key: ec.EllipticCurvePrivateKey | None = None,
    spc: str = "1234",
) -> StiCa:
    """Root -> intermediate -> STI leaf, valid a day before ``now`` to a
    year after unless the leaf period is given (for an expired leaf)."""
    now = now or datetime.now(UTC)
    start, end = now - timedelta(days=1), now + timedelta(days=365)
    root = issue(f"{name} Root", None, ca=True, not_before=start, not_after=end)
    inter = issue(
        f"{name} Intermediate",
        root,
        ca=intermediate_is_ca,
        not_before=start,
        not_after=end,
        path_length=0,
    )
    leaf = issue(
        f"{name} SHAKEN {spc}",
        inter,
        ca=False,
        not_before=leaf_not_before or start,
        not_after=leaf_not_after or end,
        key=leaf_key,
        extra=[(tn_auth_list(spc), False)],
    )
    return StiCa(root, inter, leaf)


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def canonical(obj: dict[str, Any]) -> bytes:
    # RFC 8225 §9: sorted keys, no whitespace.
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def passport_token(
    key: ec.EllipticCurvePrivateKey, header: dict[str, Any], claims: dict[str, Any]
) -> str:
    """The full-form JWS ``header.payload.signature`` with an ES256 signature."""
    signing_input = f"{b64url(canonical(header))}.{b64url(canonical(claims))}"
    der = key.sign(signing_input.encode("ascii"), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    return f"{signing_input}.{b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def sign_identity(
    key: ec.EllipticCurvePrivateKey,
    *,
    orig: str,
    dest: str | list[str],
    iat: int,
    x5u: str,
    attest: str | None = "A",
    origid: str | None = DEFAULT_ORIGID,
    ppt: str | None = "shaken",
    compact: bool = False,
    info: str | None = None,
    header_extra: dict[str, Any] | None = None,
    claims_extra: dict[str, Any] | None = None,
) -> str:
    """An Identity header value: ``token;info=<URL>;alg=ES256[;ppt=...]``.

    ``orig``/``dest`` go into the claims as given (SHAKEN form: digits with
    the country code, no '+'). ``compact`` drops the payload from the token
    (RFC 8224 §4.1); ``info`` overrides the info URL (default: ``x5u``).
    """
    header: dict[str, Any] = {"alg": "ES256", "typ": "passport", "x5u": x5u}
    if ppt is not None:
        header["ppt"] = ppt
    header.update(header_extra or {})
    claims: dict[str, Any] = {
        "dest": {"tn": [dest] if isinstance(dest, str) else list(dest)},
        "iat": iat,
        "orig": {"tn": orig},
    }
    if attest is not None:
        claims["attest"] = attest
    if origid is not None:
        claims["origid"] = origid
    claims.update(claims_extra or {})
    token = passport_token(key, header, claims)
    if compact:
        head, _, sig = token.split(".")
        token = f"{head}..{sig}"
    value = f"{token};info=<{info or x5u}>;alg=ES256"
    return value + (f";ppt={ppt}" if ppt is not None else "")
