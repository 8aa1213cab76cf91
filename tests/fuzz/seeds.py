"""Seed corpus for the atheris harnesses: the RFC 4475 torture messages and
the carrier corpus from ../shared (read, never copied into the repository),
plus hand-made messages, written into a scratch directory libFuzzer grows."""

from __future__ import annotations

from pathlib import Path

from tests.sipmsg import request, response

SHARED = Path(__file__).resolve().parents[2].parent / "shared"


def seed_messages() -> list[bytes]:
    out = [
        request(),
        request("BYE", to_tag="t9", cseq=102),
        request("CANCEL"),
        request(body=b"v=0\r\n"),
        response(180, "Ringing", vias=("SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx",)),
    ]
    for name in ("sip-torture", "sip-corpus"):
        folder = SHARED / name
        if folder.is_dir():
            out.extend(p.read_bytes() for p in sorted(folder.glob("*.sip")))
    return out


def seed(corpus: Path, prefix: bytes = b"") -> Path:
    """Fill an empty corpus directory; ``prefix`` goes before each message
    (the core harness reads a selector byte first)."""
    corpus.mkdir(parents=True, exist_ok=True)
    if not any(corpus.iterdir()):
        for i, data in enumerate(seed_messages()):
            (corpus / f"seed-{i:03d}").write_bytes(prefix + data)
    return corpus
