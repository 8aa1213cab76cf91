"""Deterministic Via branches (RFC 3261 §16.11): a stateless proxy keeps no
transaction, so the branch it adds is computed from the request. Then a
retransmission, its CANCEL and its non-2xx ACK all map to the same branch."""

from __future__ import annotations

import hashlib

from .sip import SipRequest

COOKIE = "z9hG4bK"  # RFC 3261 magic cookie


def digest(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8", "surrogateescape"), digest_size=8).hexdigest()


def deterministic_branch(req: SipRequest) -> tuple[str, str]:
    """(branch, loop part): a transaction part, the same for every request
    of one client transaction, and a loop part (RFC 3261 §16.6 step 8) that
    stays the same if the request comes back to us."""
    top = req.vias[0]
    ftag = req.from_.tag or ""
    b = top.branch
    if b and b.startswith(COOKIE) and len(b) > len(COOKIE):
        txn = f"{b}|{top.sent_by}"
    else:  # RFC 2543 peer: no usable branch
        txn = f"{req.call_id}|{ftag}|{req.cseq}|{top.sent_by}"
    loop = digest(f"{req.uri.raw}|{req.call_id}|{ftag}|{req.cseq}|{req.header('proxy-require')}")
    return f"{COOKIE}{digest(txn)}.{loop}", loop
