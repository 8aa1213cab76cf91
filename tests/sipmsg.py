"""Small builders of SIP test messages (written for these tests)."""

from __future__ import annotations


def request(
    method: str = "INVITE",
    ruri: str = "sip:+13125550187@192.0.2.5;user=phone",
    *,
    caller: str = "+12125550142",
    from_display: str = "ALICE",
    to_tag: str | None = None,
    branch: str = "z9hG4bK-test-1",
    via_host: str = "198.51.100.10:5060",
    transport: str = "UDP",
    max_forwards: int | None = 70,
    call_id: str = "call-1@198.51.100.10",
    cseq: int = 101,
    extra: tuple[str, ...] = (),
    body: bytes = b"",
) -> bytes:
    to = "<sip:+13125550187@192.0.2.5;user=phone>" + (f";tag={to_tag}" if to_tag else "")
    lines = [
        f"{method} {ruri} SIP/2.0",
        f"Via: SIP/2.0/{transport} {via_host};branch={branch}",
    ]
    if max_forwards is not None:
        lines.append(f"Max-Forwards: {max_forwards}")
    lines += [
        f'From: "{from_display}" <sip:{caller}@198.51.100.10;user=phone>;tag=ft1',
        f"To: {to}",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {'INVITE' if method == 'ACK' and to_tag is None else method}",
        "Contact: <sip:caller@198.51.100.10:5060>",
        *extra,
        f"Content-Length: {len(body)}",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def response(
    status: int = 200,
    reason: str = "OK",
    *,
    vias: tuple[str, ...] = (),
    method: str = "INVITE",
    call_id: str = "call-1@198.51.100.10",
) -> bytes:
    lines = [f"SIP/2.0 {status} {reason}"]
    lines += [f"Via: {v}" for v in vias]
    lines += [
        'From: "ALICE" <sip:+12125550142@198.51.100.10>;tag=ft1',
        "To: <sip:+13125550187@192.0.2.5>;tag=switch-tag",
        f"Call-ID: {call_id}",
        f"CSeq: 101 {method}",
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()
