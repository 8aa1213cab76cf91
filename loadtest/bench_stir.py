"""Microbenchmark of STIR verification with a cached certificate key.

Target (issue 8): verification with a cached certificate adds at most
150 µs per INVITE. What one INVITE costs the proxy/stir core is timed here:
``parse_identity`` + ``decode_passport`` + ``verify_passport`` of its
Identity header, the public key already in hand (validated once by
``TrustStore.key_from_response``, as the certificate cache keeps it).

--count distinct PASSporTs (distinct callers, callees, iat, attestations,
origids) are signed up front by one STI leaf of a test CA. Each of --repeats
passes verifies all of them once; the rows are µs per INVITE, median pass:

  total           parse + decode + verify, the target row
  parse+decode    parse_identity + decode_passport alone
  verify          verify_passport alone, on pre-decoded PASSporTs
  ecdsa floor     cryptography's bare ES256 verify of the same signatures
                  (DER conversion included): what no Python can go under

    .venv/bin/python loadtest/bench_stir.py [--count N] [--repeats R] [--out PATH]
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from procs import ROOT, source_version, write_result

sys.path.insert(0, str(ROOT))  # for the test CA in tests/stir_ca.py

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from proxy.stir.chain import TrustStore
from proxy.stir.passport import Passport, decode_passport, parse_identity
from proxy.stir.verify import Outcome, verify_passport
from tests.stir_ca import make_sti_ca

TARGET_US = 150.0
NOW = 1_750_000_000
X5U = "https://cert.example.org/sti/bench.pem"


def build(count: int, seed: int) -> tuple[list[Call], ec.EllipticCurvePublicKey]:
    """``count`` distinct calls signed by one test STI leaf, and the leaf
    key as the certificate cache holds it (one validated chain)."""
    rng = random.Random(seed)
    ca = make_sti_ca(now=datetime.fromtimestamp(NOW, UTC))
    key = TrustStore([ca.root.cert]).key_from_response(ca.chain_pem, NOW)
    calls = []
    for i in range(count):
        orig = f"1{rng.randint(200, 999)}555{i:04d}"
        dest = f"1{rng.randint(200, 999)}{rng.randint(200, 999)}{rng.randint(0, 9999):04d}"
        iat = NOW - rng.randint(0, 30)
        value = ca.sign(
            orig=orig,
            dest=dest,
            iat=iat,
            x5u=X5U,
            attest=rng.choice("AABC"),
            origid=f"{rng.getrandbits(128):032x}",
        )
        # caller as the proxy sees it (+E.164), callee as 10 NANP digits
        calls.append(Call(value, "+" + orig, dest[1:]))
    return calls, key


@dataclass(frozen=True, slots=True)
class Call:
    identity: str
    caller: str
    callee: str


def per_call_us(fn: Callable[[], int], n: int) -> float:
    t0 = time.perf_counter_ns()
    passed = fn()
    elapsed = time.perf_counter_ns() - t0
    if passed != n:
        raise SystemExit(f"only {passed} of {n} verified: the benchmark is broken")
    return elapsed / 1000 / n


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--seed", type=int, default=8)
    ap.add_argument("--out", type=Path, default=ROOT / "loadtest/results/bench_stir.json")
    args = ap.parse_args()
    calls, key = build(args.count, args.seed)
    n = len(calls)
    now = float(NOW)

    def total() -> int:
        ok = 0
        for c in calls:
            for ih in parse_identity(c.identity):
                p = decode_passport(ih)
                v = verify_passport(p, key, caller=c.caller, callee=c.callee, now=now, date=now)
                ok += v.outcome is Outcome.PASSED
        return ok

    def parse_decode() -> int:
        ok = 0
        for c in calls:
            for ih in parse_identity(c.identity):
                ok += decode_passport(ih).iat > 0
        return ok

    decoded: list[tuple[Passport, Call]] = [
        (decode_passport(parse_identity(c.identity)[0]), c) for c in calls
    ]

    def verify_only() -> int:
        ok = 0
        for p, c in decoded:
            v = verify_passport(p, key, caller=c.caller, callee=c.callee, now=now, date=now)
            ok += v.outcome is Outcome.PASSED
        return ok

    ecdsa = ec.ECDSA(hashes.SHA256())

    def ecdsa_floor() -> int:
        for p, _ in decoded:
            sig = p.signature
            der = encode_dss_signature(int.from_bytes(sig[:32]), int.from_bytes(sig[32:]))
            key.verify(der, p.signing_input, ecdsa)
        return n

    rows: dict[str, Callable[[], int]] = {
        "total": total,
        "parse+decode": parse_decode,
        "verify": verify_only,
        "ecdsa floor": ecdsa_floor,
    }
    samples: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(args.repeats):  # rows take turns, pass by pass
        for name, fn in rows.items():
            samples[name].append(per_call_us(fn, n))
    medians = {name: statistics.median(v) for name, v in samples.items()}

    print(f"STIR verification, cached key: {n} distinct PASSporTs x {args.repeats} passes")
    print(f"{'row':<14} {'median µs':>10} {'min µs':>8} {'max µs':>8}")
    for name, v in samples.items():
        print(f"{name:<14} {medians[name]:>10.1f} {min(v):>8.1f} {max(v):>8.1f}")
    verdict = "PASS" if medians["total"] <= TARGET_US else "FAIL"
    print(f"target: total <= {TARGET_US:.0f} µs per INVITE: {verdict}")
    write_result(
        args.out,
        {
            "benchmark": "bench_stir",
            "source": source_version(),
            "python": platform.python_version(),
            "machine": platform.machine(),
            "count": n,
            "repeats": args.repeats,
            "us_per_invite_median": {k: round(v, 2) for k, v in medians.items()},
            "us_per_invite_samples": {k: [round(x, 2) for x in v] for k, v in samples.items()},
            "target_us": TARGET_US,
            "verdict": verdict,
        },
    )
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
