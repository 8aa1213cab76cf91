"""The sans-I/O STIR core: Identity parsing, PASSporT decoding and
verification, and STI certificate chains (proxy/stir)."""

from __future__ import annotations

import json
import ssl
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given
from hypothesis import strategies as st

from proxy.sip.identity import call_facts
from proxy.sip.message import SipRequest
from proxy.sip.numbers import digits_of, e164_key
from proxy.sip.parser import parse_message
from proxy.stir.chain import ChainError, TrustStore, TrustStoreError, parse_certificates
from proxy.stir.passport import (
    IdentityHeader,
    Passport,
    PassportError,
    canonical_tn,
    decode_passport,
    parse_identity,
)
from proxy.stir.verify import Outcome, Verification, verification_for_error, verify_passport
from tests.conftest import shared_dir
from tests.stir_ca import Issued, StiCa, b64url, issue, make_sti_ca, passport_token

NOW_DT = datetime(2025, 6, 2, 12, 0, 0, tzinfo=UTC)
NOW = int(NOW_DT.timestamp())
X5U = "https://cert.example.org/sti/shaken.pem"
ORIG = "12025550123"
DEST = "13125550187"
CALLER = "+12025550123"
CALLEE = "+13125550187"


@pytest.fixture(scope="module")
def ca() -> StiCa:
    return make_sti_ca(now=NOW_DT)


@pytest.fixture(scope="module")
def store(ca: StiCa) -> TrustStore:
    return TrustStore([ca.root.cert])


@pytest.fixture(scope="module")
def key(ca: StiCa, store: TrustStore) -> ec.EllipticCurvePublicKey:
    return store.key_from_response(ca.chain_pem, NOW)


def one(value: str, **kwargs: Any) -> Passport:
    [ih] = parse_identity(value)
    return decode_passport(ih, **kwargs)


def check(
    value: str,
    key: ec.EllipticCurvePublicKey,
    *,
    caller: str | None = CALLER,
    callee: str | None = CALLEE,
    now: float = NOW,
    date: float | None = NOW,
) -> Verification:
    return verify_passport(one(value), key, caller=caller, callee=callee, now=now, date=date)


def signed(ca: StiCa, **kwargs: Any) -> str:
    args: dict[str, Any] = {"orig": ORIG, "dest": DEST, "iat": NOW, "x5u": X5U}
    args.update(kwargs)
    return ca.sign(**args)


# -- verification ----------------------------------------------------------


@pytest.mark.parametrize("attest", ["A", "B", "C"])
def test_valid_passport_passes_with_its_attestation(
    ca: StiCa, key: ec.EllipticCurvePublicKey, attest: str
) -> None:
    v = check(signed(ca, attest=attest), key)
    assert v == Verification(Outcome.PASSED, attest, "ok")
    assert v.outcome.value == "TN-Validation-Passed"


@pytest.mark.parametrize("caller", ["+12025550123", "12025550123", "2025550123", "+1-202-555-0123"])
@pytest.mark.parametrize("callee", ["+13125550187", "3125550187"])
def test_numbers_compare_in_any_nanp_form(
    ca: StiCa, key: ec.EllipticCurvePublicKey, caller: str, callee: str
) -> None:
    assert check(signed(ca), key, caller=caller, callee=callee).passed


def test_passport_tns_in_ten_digit_form_match_too(
    ca: StiCa, key: ec.EllipticCurvePublicKey
) -> None:
    assert check(signed(ca, orig="2025550123", dest="3125550187"), key).passed


@pytest.mark.parametrize(
    ("iat", "now", "date", "reason"),
    [
        (NOW - 61, NOW, None, "iat-stale"),
        (NOW + 61, NOW, None, "iat-stale"),  # from the future
        (NOW - 30, NOW, NOW - 100, "iat-date-skew"),
        (NOW, NOW, NOW + 61, "iat-date-skew"),
    ],
)
def test_iat_outside_the_window_fails(
    ca: StiCa, key: ec.EllipticCurvePublicKey, iat: int, now: int, date: int | None, reason: str
) -> None:
    v = check(signed(ca, iat=iat), key, now=now, date=date)
    assert (v.outcome, v.attest, v.reason) == (Outcome.FAILED, None, reason)


def test_iat_at_the_edge_of_the_window_passes(ca: StiCa, key: ec.EllipticCurvePublicKey) -> None:
    assert check(signed(ca, iat=NOW - 60), key, date=NOW - 120).passed


def _tamper_claims(value: str, **changes: Any) -> str:
    token, _, params = value.partition(";")
    head, payload, sig = token.split(".")
    claims = json.loads(_unb64(payload))
    claims.update(changes)
    new = b64url(json.dumps(claims, sort_keys=True, separators=(",", ":")).encode())
    return f"{head}.{new}.{sig};{params}"


def _unb64(text: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_tampered_payload_fails_the_signature(ca: StiCa, key: ec.EllipticCurvePublicKey) -> None:
    # The attack that matters: a C attestation upgraded to A in transit.
    value = _tamper_claims(signed(ca, attest="C"), attest="A")
    assert one(value).attest == "A"
    assert check(value, key).reason == "bad-signature"


def test_tampered_signature_fails(ca: StiCa, key: ec.EllipticCurvePublicKey) -> None:
    value = signed(ca)
    token, _, params = value.partition(";")
    head, payload, sig = token.split(".")
    raw = bytearray(_unb64(sig))
    raw[10] ^= 0x01
    v = check(f"{head}.{payload}.{b64url(bytes(raw))};{params}", key)
    assert (v.outcome, v.reason) == (Outcome.FAILED, "bad-signature")


def test_signature_by_another_key_fails(ca: StiCa) -> None:
    other = make_sti_ca(now=NOW_DT).leaf.key.public_key()
    assert check(signed(ca), other).reason == "bad-signature"


def test_key_on_another_curve_is_refused(ca: StiCa) -> None:
    p384 = ec.generate_private_key(ec.SECP384R1()).public_key()
    assert check(signed(ca), p384).reason == "key-type"


def test_wrong_orig_fails(ca: StiCa, key: ec.EllipticCurvePublicKey) -> None:
    assert check(signed(ca), key, caller="+12025550999").reason == "orig-mismatch"
    assert check(signed(ca), key, caller=None).reason == "orig-mismatch"


def test_callee_must_be_among_dest(ca: StiCa, key: ec.EllipticCurvePublicKey) -> None:
    assert check(signed(ca), key, callee="+13125550999").reason == "dest-mismatch"
    assert check(signed(ca), key, callee=None).reason == "dest-mismatch"
    several = signed(ca, dest=["13125550100", DEST])
    assert check(several, key).passed


@pytest.mark.parametrize("attest", ["D", "a", None])
def test_shaken_attestation_must_be_a_b_or_c(
    ca: StiCa, key: ec.EllipticCurvePublicKey, attest: str | None
) -> None:
    assert check(signed(ca, attest=attest), key).reason == "bad-attest"


def test_only_es256_is_accepted(ca: StiCa, key: ec.EllipticCurvePublicKey) -> None:
    # Identity alg param agrees with a (lying) ES384 header: decodes, then
    # verification refuses the algorithm before any signature check.
    value = signed(ca, header_extra={"alg": "ES384"}).replace(";alg=ES256", ";alg=ES384")
    assert check(value, key).reason == "alg"


def test_typ_and_ppt_are_checked(ca: StiCa, key: ec.EllipticCurvePublicKey) -> None:
    assert check(signed(ca, header_extra={"typ": "JWT"}), key).reason == "typ"
    assert check(signed(ca, ppt="div"), key).reason == "ppt"


# -- compact form ------------------------------------------------------------


def test_compact_form_verifies_with_claims_rebuilt_from_the_message(
    ca: StiCa, key: ec.EllipticCurvePublicKey
) -> None:
    value = signed(ca, compact=True, ppt=None, attest=None, origid=None)
    [ih] = parse_identity(value)
    assert ih.compact and ih.ppt is None
    p = decode_passport(ih, orig_tn=CALLER, dest_tns=("3125550187",), iat=NOW)
    assert p.claims == {"dest": {"tn": [DEST]}, "iat": NOW, "orig": {"tn": ORIG}}
    v = verify_passport(p, key, caller=CALLER, callee=CALLEE, now=NOW, date=NOW)
    assert v == Verification(Outcome.PASSED, None, "ok")


def test_compact_form_with_other_claims_fails(ca: StiCa, key: ec.EllipticCurvePublicKey) -> None:
    [ih] = parse_identity(signed(ca, compact=True, ppt=None, attest=None, origid=None))
    p = decode_passport(ih, orig_tn=CALLER, dest_tns=(CALLEE,), iat=NOW - 1)
    v = verify_passport(p, key, caller=CALLER, callee=CALLEE, now=NOW, date=NOW - 1)
    assert v.reason == "bad-signature"


def test_compact_form_needs_the_message_claims(ca: StiCa) -> None:
    [ih] = parse_identity(signed(ca, compact=True, ppt=None, attest=None, origid=None))
    with pytest.raises(PassportError) as err:
        decode_passport(ih, orig_tn=CALLER, dest_tns=(CALLEE,))
    assert err.value.reason == "missing-claim"


def test_compact_shaken_cannot_be_validated(ca: StiCa) -> None:
    [ih] = parse_identity(signed(ca, compact=True))
    with pytest.raises(PassportError) as err:
        decode_passport(ih, orig_tn=CALLER, dest_tns=(CALLEE,), iat=NOW)
    assert err.value.reason == "compact-shaken"
    v = verification_for_error(err.value)
    assert (v.outcome, v.reason) == (Outcome.NO_VALIDATION, "compact-shaken")


def test_errors_are_failures_except_compact_shaken() -> None:
    assert verification_for_error(PassportError("bad-json")).outcome is Outcome.FAILED
    v = verification_for_error(ChainError("untrusted"))
    assert (v.outcome, v.reason) == (Outcome.FAILED, "untrusted")


# -- Identity header parsing -----------------------------------------------


def test_full_form_parses_its_parameters(ca: StiCa) -> None:
    value = signed(ca)
    [ih] = parse_identity(value)
    assert ih == IdentityHeader(value.split(";")[0], X5U, "ES256", "shaken", False)
    p = decode_passport(ih)
    assert (p.x5u, p.ppt, p.attest, p.orig_tn, p.dest_tns, p.iat) == (
        X5U,
        "shaken",
        "A",
        ORIG,
        (DEST,),
        NOW,
    )
    assert p.origid == "123e4567-e89b-12d3-a456-426614174000"
    assert len(p.signature) == 64
    assert p.signing_input == ih.token.rsplit(".", 1)[0].encode()


def test_several_identity_values_and_lws(ca: StiCa) -> None:
    first = signed(ca)
    token2 = signed(ca, ppt="div", info="https://cert.example.org/a;b.pem").split(";")[0]
    second = f'{token2} ; info = <https://cert.example.org/a;b.pem> ; alg = ES256 ; ppt = "div"'
    parsed = parse_identity(f"{first} ,\t{second}")
    assert [(h.ppt, h.info, h.alg) for h in parsed] == [
        ("shaken", X5U, "ES256"),
        ("div", "https://cert.example.org/a;b.pem", "ES256"),
    ]
    assert parse_identity("  ") == []


def test_unknown_parameters_are_ignored_and_info_may_be_absent(ca: StiCa) -> None:
    token = signed(ca).split(";")[0]
    [ih] = parse_identity(f"{token};ppt=shaken;foo=bar;flag")
    assert (ih.info, ih.alg, ih.ppt) == (None, None, "shaken")
    assert decode_passport(ih).x5u == X5U  # from the PASSporT header


def _token(ca: StiCa, header: dict[str, Any], claims: dict[str, Any]) -> str:
    return passport_token(ca.leaf.key, header, claims)


_HEADER = {"alg": "ES256", "ppt": "shaken", "typ": "passport", "x5u": X5U}
_DUP_ALG = b'{"alg":"ES256","alg":"none"}'
_CLAIMS = {"attest": "A", "dest": {"tn": [DEST]}, "iat": NOW, "orig": {"tn": ORIG}}


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("not-a-jws;info=<https://x>", "malformed"),
        ("abc.def;info=<https://x>", "malformed"),
        ("a.b.c.d;info=<https://x>", "malformed"),
        ("abc.def.gh=;info=<https://x>", "malformed"),  # padding is not base64url
        ("abc.def.ghi;info=https://x", "malformed"),  # info without <>
        ("abc.def.ghi;info=<https://x", "malformed"),
        ('abc.def.ghi;ppt="shaken', "malformed"),
        ("abc.def.ghi;=x", "malformed"),
        ("abc.def.ghi;ppt=a;ppt=b", "malformed"),
        ("abc.def.ghi junk", "malformed"),
        ("A" * 5000 + ".b.c", "malformed"),
        (",".join(["abc.def.ghi"] * 9), "too-many"),
    ],
)
def test_malformed_identity_values(value: str, reason: str) -> None:
    with pytest.raises(PassportError) as err:
        parse_identity(value)
    assert err.value.reason == reason


def _with(ca: StiCa, header: dict[str, Any] | None = None, claims: Any = None) -> str:
    return _token(ca, header or _HEADER, _CLAIMS if claims is None else claims)


@pytest.mark.parametrize(
    ("build", "reason"),
    [
        (lambda ca: "eyJ.eyJ.AAAA", "bad-base64"),
        (lambda ca: "e.eyJ.AAAA", "bad-base64"),
        (lambda ca: f"{b64url(b'not json')}.{b64url(b'{}')}.{b64url(bytes(64))}", "bad-json"),
        (lambda ca: f"{b64url(b'[1]')}.{b64url(b'{}')}.{b64url(bytes(64))}", "bad-json"),
        (lambda ca: f"{b64url(_DUP_ALG)}.e30.{b64url(bytes(64))}", "bad-json"),
        (lambda ca: _with(ca).rsplit(".", 1)[0] + "." + b64url(bytes(63)), "bad-signature"),
        (lambda ca: _with(ca, {"ppt": "shaken", "x5u": X5U}), "missing-claim"),
        (lambda ca: _with(ca, {**_HEADER, "x5u": "https://evil.example/c.pem"}), "x5u-mismatch"),
        (lambda ca: _with(ca, {**_HEADER, "ppt": "div"}), "ppt"),
        (lambda ca: _with(ca, {**_HEADER, "alg": "ES384"}), "alg"),
        (lambda ca: _with(ca, {**_HEADER, "x5u": 7}), "bad-claim"),
        (
            lambda ca: _with(ca, claims={k: v for k, v in _CLAIMS.items() if k != "iat"}),
            "missing-claim",
        ),
        (lambda ca: _with(ca, claims={**_CLAIMS, "iat": "1700000000"}), "bad-claim"),
        (lambda ca: _with(ca, claims={**_CLAIMS, "iat": True}), "bad-claim"),
        (
            lambda ca: _with(ca, claims={k: v for k, v in _CLAIMS.items() if k != "orig"}),
            "missing-claim",
        ),
        (lambda ca: _with(ca, claims={**_CLAIMS, "dest": {"tn": DEST}}), "bad-claim"),
        (lambda ca: _with(ca, claims={**_CLAIMS, "dest": {"tn": [1]}}), "bad-claim"),
        (lambda ca: _with(ca, claims={**_CLAIMS, "attest": 1}), "bad-claim"),
    ],
)
def test_broken_passports_give_their_reason(ca: StiCa, build: Any, reason: str) -> None:
    [ih] = parse_identity(f"{build(ca)};info=<{X5U}>;alg=ES256;ppt=shaken")
    with pytest.raises(PassportError) as err:
        decode_passport(ih)
    assert err.value.reason == reason


def test_non_canonical_base64_is_refused(ca: StiCa) -> None:
    head, payload, sig = _with(ca).split(".")
    # the last char of a 64-byte signature carries 4 unused low bits
    last = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    bumped = last[last.index(sig[-1]) ^ 1]
    [ih] = parse_identity(f"{head}.{payload}.{sig[:-1]}{bumped};info=<{X5U}>")
    with pytest.raises(PassportError) as err:
        decode_passport(ih)
    assert err.value.reason == "bad-base64"


# -- certificate chains ------------------------------------------------------


def test_chain_validates_to_the_leaf_key(ca: StiCa, store: TrustStore) -> None:
    key, not_after = store.key_and_expiry(ca.chain_pem, NOW)
    assert key.public_numbers() == ca.leaf.key.public_key().public_numbers()
    assert not_after == (NOW_DT + timedelta(days=365)).timestamp()
    # the root itself may be served at the end of the bundle
    assert store.key_from_response(ca.chain_pem + ca.root.pem, NOW) is not None


def _chain_error(store: TrustStore, body: bytes, now: float = NOW) -> str:
    with pytest.raises(ChainError) as err:
        store.key_from_response(body, now)
    return err.value.reason


def _cert(cn: str, issuer: Issued, *, ca: bool, **kwargs: Any) -> Issued:
    """A certificate valid from a day before NOW to nine days after."""
    start, end = NOW_DT - timedelta(days=1), NOW_DT + timedelta(days=9)
    return issue(cn, issuer, ca=ca, not_before=start, not_after=end, **kwargs)


def test_unknown_ca_is_untrusted(ca: StiCa) -> None:
    stranger = make_sti_ca(name="Stranger CA", now=NOW_DT)
    assert _chain_error(TrustStore([ca.root.cert]), stranger.chain_pem) == "untrusted"
    # an impostor root with the trusted root's very name, but its own key
    impostor = make_sti_ca(now=NOW_DT)
    assert _chain_error(TrustStore([ca.root.cert]), impostor.chain_pem) == "untrusted"
    # and serving the untrusted root along does not help
    body = stranger.chain_pem + stranger.root.pem
    assert _chain_error(TrustStore([ca.root.cert]), body) == "untrusted"


def test_expired_and_not_yet_valid_leaf() -> None:
    expired = make_sti_ca(now=NOW_DT, leaf_not_after=NOW_DT - timedelta(seconds=1))
    assert _chain_error(TrustStore([expired.root.cert]), expired.chain_pem) == "expired"
    early = make_sti_ca(now=NOW_DT, leaf_not_before=NOW_DT + timedelta(hours=1))
    assert _chain_error(TrustStore([early.root.cert]), early.chain_pem) == "not-yet-valid"
    # the same chain is fine once its time has come
    later = (NOW_DT + timedelta(hours=2)).timestamp()
    assert TrustStore([early.root.cert]).key_from_response(early.chain_pem, later) is not None


def test_non_ca_intermediate_is_refused() -> None:
    bad = make_sti_ca(now=NOW_DT, intermediate_is_ca=False)
    assert _chain_error(TrustStore([bad.root.cert]), bad.chain_pem) == "not-a-ca"


def test_intermediate_without_basic_constraints_is_not_a_ca(ca: StiCa) -> None:
    inter = _cert("Bare", ca.root, ca=True, basic_constraints=False)
    leaf = _cert("Leaf", inter, ca=False)
    store = TrustStore([ca.root.cert])
    assert _chain_error(store, leaf.pem + inter.pem) == "not-a-ca"


def test_chain_out_of_order_or_incomplete(ca: StiCa, store: TrustStore) -> None:
    # reversed: the leaf stands as the intermediate's issuer, and is no CA
    assert _chain_error(store, ca.intermediate.pem + ca.leaf.pem) == "not-a-ca"
    # a CA that did not sign the leaf
    stranger = make_sti_ca(name="Stranger CA", now=NOW_DT)
    assert _chain_error(store, ca.leaf.pem + stranger.intermediate.pem) == "bad-chain"
    assert _chain_error(store, ca.leaf.pem) == "untrusted"  # intermediate missing


def test_path_length_and_ca_leaf(ca: StiCa, store: TrustStore) -> None:
    # the intermediate has pathLen 0: no further CA may sit below it
    sub = _cert("Sub CA", ca.intermediate, ca=True)
    leaf = _cert("Leaf", sub, ca=False)
    assert _chain_error(store, leaf.pem + sub.pem + ca.intermediate.pem) == "bad-chain"
    assert _chain_error(store, sub.pem + ca.intermediate.pem) == "bad-chain"  # CA as leaf


def test_leaf_key_must_be_p256(ca: StiCa, store: TrustStore) -> None:
    p384 = ec.generate_private_key(ec.SECP384R1())
    leaf = _cert("P-384 leaf", ca.intermediate, ca=False, key=p384)
    assert _chain_error(store, leaf.pem + ca.intermediate.pem) == "key-type"


def test_single_der_certificate(ca: StiCa) -> None:
    leaf = _cert("Direct leaf", ca.root, ca=False)
    der = leaf.cert.public_bytes(serialization.Encoding.DER)
    assert parse_certificates(der) == [leaf.cert]
    key = TrustStore([ca.root.cert]).key_from_response(der, NOW)
    assert key.public_numbers() == leaf.key.public_key().public_numbers()


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "no-certificate"),
        (b"  \r\n", "no-certificate"),
        (b"garbage", "bad-certificate"),
        (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "bad-certificate"),
    ],
)
def test_unparsable_bodies(store: TrustStore, body: bytes, reason: str) -> None:
    assert _chain_error(store, body) == reason


def test_bundle_size_is_bounded(ca: StiCa, store: TrustStore) -> None:
    assert _chain_error(store, ca.chain_pem + ca.intermediate.pem * 7) == "bad-chain"
    with pytest.raises(ChainError) as err:
        store.validate([], NOW_DT)
    assert err.value.reason == "no-certificate"


def test_trust_store_from_directory(ca: StiCa, tmp_path: Path) -> None:
    other = make_sti_ca(name="Second CA", now=NOW_DT)
    (tmp_path / "a.pem").write_bytes(ca.root.pem)
    (tmp_path / "b.der").write_bytes(other.root.cert.public_bytes(serialization.Encoding.DER))
    (tmp_path / "README.txt").write_text("not a certificate")
    store = TrustStore.from_directory(tmp_path)
    assert set(store.roots) == {ca.root.cert, other.root.cert}
    assert store.key_from_response(other.chain_pem, NOW) is not None


def test_trust_store_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(TrustStoreError, match="no STI-CA root"):
        TrustStore.from_directory(tmp_path)
    with pytest.raises(TrustStoreError, match="cannot list"):
        TrustStore.from_directory(tmp_path / "missing")
    (tmp_path / "broken.crt").write_bytes(b"junk")
    with pytest.raises(TrustStoreError, match=r"broken\.crt"):
        TrustStore.from_directory(tmp_path)


def test_tls_server_certificate_completes_a_handshake(tmp_path: Path) -> None:
    """The helper's HTTPS identity works with the ssl module (memory BIOs,
    no socket), as the end-to-end test's certificate server will use it.
    The ssl module checks validity against the real clock: a fresh CA."""
    ca = make_sti_ca()
    tls = ca.tls_server("127.0.0.1")
    (tmp_path / "cert.pem").write_bytes(tls.pem + ca.intermediate.pem)
    (tmp_path / "key.pem").write_bytes(tls.key_pem)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    client_ctx = ssl.create_default_context(cadata=ca.root.pem.decode())
    bios = [ssl.MemoryBIO() for _ in range(4)]
    client = client_ctx.wrap_bio(bios[0], bios[1], server_hostname="127.0.0.1")
    server = server_ctx.wrap_bio(bios[2], bios[3], server_side=True)
    done = [False, False]
    for _ in range(10):
        for i, side in enumerate((client, server)):
            try:
                side.do_handshake()
                done[i] = True
            except ssl.SSLWantReadError:
                pass
        bios[2].write(bios[1].read())
        bios[0].write(bios[3].read())
    assert done == [True, True]


# -- the shared corpus sample ------------------------------------------------


def test_shared_shaken_sample_verifies_against_its_public_key() -> None:
    corpus = shared_dir("sip-corpus")
    msg = parse_message((corpus / "invite_identity_shaken.sip").read_bytes())
    assert isinstance(msg, SipRequest)
    pem = (corpus / "stir_shaken_test_es256_pubkey.pem").read_bytes()
    key = serialization.load_pem_public_key(pem)
    assert isinstance(key, ec.EllipticCurvePublicKey)
    facts = call_facts(msg, "198.51.100.10")
    identity, date = msg.header("identity"), msg.header("date")
    assert identity is not None and date is not None
    date_ts = parsedate_to_datetime(date).timestamp()
    [ih] = parse_identity(identity)
    p = decode_passport(ih)
    assert (p.iat, p.x5u) == (1741104000, "https://cert.example.org/sti/shaken-test-cert.pem")
    assert p.origid == "de305d54-75b4-431b-adb2-eb6b9e546014"

    def run(now: float) -> Verification:
        return verify_passport(
            p, key, caller=facts.caller, callee=facts.callee, now=now, date=date_ts
        )

    assert run(p.iat) == Verification(Outcome.PASSED, "A", "ok")  # clock pinned to iat
    assert run(p.iat + 61).reason == "iat-stale"  # a real clock would reject it


# -- number normalisation ------------------------------------------------------


def _reference_tn(number: str) -> str:
    key = e164_key(number)
    return str(key) if key is not None else digits_of(number).removeprefix("+")


@given(st.from_regex(r"\+?[0-9]{0,16}", fullmatch=True) | st.text("0123456789+-.() ;=a"))
def test_canonical_tn_fast_path_agrees_with_e164_key(number: str) -> None:
    assert canonical_tn(number) == _reference_tn(number)


@pytest.mark.parametrize(
    ("number", "canonical"),
    [
        ("+12025550123", "12025550123"),
        ("12025550123", "12025550123"),
        ("2025550123", "12025550123"),
        ("+1-202-555-0123", "12025550123"),
        ("+442071234567", "442071234567"),
        ("+2025550123", "2025550123"),  # a '+' number is never NANP-completed
    ],
)
def test_canonical_tn(number: str, canonical: str) -> None:
    assert canonical_tn(number) == canonical
