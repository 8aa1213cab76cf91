"""Verifying the Identity headers of one INVITE, on the hot path.

Synchronous and without I/O: certificates come from the cache's in-memory
``lookup``. When one is not cached, ``verify`` either names the URL to wait
for (the edge waits for the shared fetch within the budget, then offers the
INVITE again with ``may_wait`` False) or starts a background fetch and
answers No-TN-Validation, as ``[stir] on_uncached`` says.
"""

from __future__ import annotations

from collections.abc import Callable
from email.utils import parsedate_to_datetime

from ..sip import CallFacts, SipRequest
from .certs import CertEntry
from .passport import Passport, PassportError, decode_passport, parse_identity
from .settings import StirConfig
from .verify import Outcome, Verification, verification_for_error, verify_passport

NO_IDENTITY = Verification(Outcome.NO_VALIDATION, None, "no-identity")
_RANK = {"A": 3, "B": 2, "C": 1}


class StirVerifier:
    def __init__(
        self,
        cfg: StirConfig,
        lookup: Callable[[str], CertEntry | None],
        prefetch: Callable[[str], None],
    ) -> None:
        self.cfg = cfg
        self.lookup = lookup
        self.prefetch = prefetch
        self.wall_offset = 0.0  # wall clock minus the monotonic `now` the edges pass

    def verify(
        self, req: SipRequest, call: CallFacts, now: float, may_wait: bool
    ) -> Verification | str:
        """The verification, or the certificate URL to wait for."""
        values = [v for k, _, v in req.headers if k == "identity"]
        if not values:
            return NO_IDENTITY
        wall = now + self.wall_offset
        date = _date(req.header("date"))
        results: list[Verification] = []
        for value in values:
            try:
                headers = parse_identity(value)
            except PassportError as exc:
                results.append(verification_for_error(exc))
                continue
            for ih in headers:
                try:
                    passport = decode_passport(
                        ih,
                        orig_tn=call.caller,
                        dest_tns=(call.callee,) if call.callee else (),
                        iat=int(date) if date is not None else None,
                    )
                except PassportError as exc:
                    results.append(verification_for_error(exc))
                    continue
                result = self._check(passport, call, wall, date, may_wait)
                if isinstance(result, str):
                    return result
                results.append(result)
        return best(results)

    def _check(
        self, passport: Passport, call: CallFacts, wall: float, date: float | None, may_wait: bool
    ) -> Verification | str:
        entry = self.lookup(passport.x5u)
        if entry is None:
            if may_wait and self.cfg.on_uncached == "wait":
                return passport.x5u
            self.prefetch(passport.x5u)
            return Verification(Outcome.NO_VALIDATION, None, "cert-unavailable")
        if entry.key is None:
            # a certificate that could not be had leaves the call unverified,
            # which is not a failed verification; a refused chain is one
            outcome = Outcome.FAILED if entry.refused else Outcome.NO_VALIDATION
            return Verification(outcome, None, entry.error or "cert-unavailable")
        return verify_passport(
            passport,
            entry.key,  # type: ignore[arg-type]  # the cache holds what load_key returned
            caller=call.caller,
            callee=call.callee,
            now=wall,
            date=date,
            max_skew=self.cfg.max_skew,
        )


def best(results: list[Verification]) -> Verification:
    """Of several Identity headers: the best passed one (A over B over C),
    else the first failure, else no validation."""
    passed = [r for r in results if r.outcome is Outcome.PASSED]
    if passed:
        return max(passed, key=lambda r: _RANK.get(r.attest or "", 0))
    failed = [r for r in results if r.outcome is Outcome.FAILED]
    if failed:
        return failed[0]
    return results[0] if results else NO_IDENTITY


def _date(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
