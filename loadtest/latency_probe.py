"""Latency probe with µs resolution: what a target adds to a round trip.

Four round trips, interleaved so background load weighs on each alike, each
timed with ``time.perf_counter_ns`` from the send to the answer:

  invite_603_via_target  INVITE from a blocked caller to the target, which
                         answers 603 itself (then our ACK)
  invite_603_direct      the same INVITE straight to the responder, which
                         answers 603 at once: the same work without the target
  bye_200_via_target     BYE with a Route to the target and the responder as
                         Request-URI: relayed out and its 200 relayed back
  bye_200_direct         the same BYE straight to the responder

The responder is a separate process (``python -m loadtest.latency_probe
--respond PORT``): a blocking UDP loop that answers INVITE with 603 and any
other request with 200. What the target adds is the percentile through it
minus the same percentile direct. Samples are bounded in count and in time.
"""

from __future__ import annotations

import argparse
import itertools
import socket
import sys
import time
from typing import Any

from loadtest.procs import HOST
from loadtest.sipp import percentiles

RESPONSE_TIMEOUT = 1.0  # a lost datagram counts as a timeout, not a sample
KINDS = ("invite_603_via_target", "invite_603_direct", "bye_200_via_target", "bye_200_direct")


def _invite(caller: str, to_host: str, port: int, local: int, n: int) -> bytes:
    return (
        f"INVITE sip:+13125550199@{to_host}:{port};user=phone SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {HOST}:{local};branch=z9hG4bK-probe-{n}-i;rport\r\n"
        "Max-Forwards: 70\r\n"
        f'From: "PROBE" <sip:{caller}@{HOST};user=phone>;tag=probe-{n}\r\n'
        f"To: <sip:+13125550199@{to_host};user=phone>\r\n"
        f"Call-ID: probe-inv-{n}@{HOST}\r\n"
        "CSeq: 1 INVITE\r\n"
        f"Contact: <sip:{caller}@{HOST}:{local}>\r\n"
        f'P-Asserted-Identity: "PROBE" <sip:{caller}@{HOST};user=phone>\r\n'
        "Content-Length: 0\r\n\r\n"
    ).encode()


def _ack(invite: bytes) -> bytes:
    return invite.replace(b"INVITE sip:", b"ACK sip:", 1).replace(b"CSeq: 1 INVITE", b"CSeq: 1 ACK")


def _bye(route_port: int | None, responder: int, local: int, n: int) -> bytes:
    route = f"Route: <sip:{HOST}:{route_port};lr>\r\n" if route_port else ""
    return (
        f"BYE sip:switch@{HOST}:{responder} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {HOST}:{local};branch=z9hG4bK-probe-{n}-b;rport\r\n"
        f"{route}"
        "Max-Forwards: 70\r\n"
        f"From: <sip:+13125550100@{HOST}>;tag=probe-{n}\r\n"
        f"To: <sip:+13125550199@{HOST}>;tag=switch-{n}\r\n"
        f"Call-ID: probe-bye-{n}@{HOST}\r\n"
        "CSeq: 2 BYE\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def _round_trip(
    sock: socket.socket, data: bytes, dest: tuple[str, int], want: bytes
) -> float | None:
    """µs from sending ``data`` to the first answer whose status starts ``want``."""
    t0 = time.perf_counter_ns()
    sock.sendto(data, dest)
    deadline = time.monotonic() + RESPONSE_TIMEOUT
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        sock.settimeout(remaining)
        try:
            answer = sock.recv(65535)
        except TimeoutError:
            return None
        if answer.startswith(b"SIP/2.0 " + want):
            return (time.perf_counter_ns() - t0) / 1000.0
        # a 100 Trying or a stray late answer of an earlier probe: keep waiting


def probe(
    target_port: int,
    responder_port: int,
    blocked_caller: str,
    samples: int,
    seconds: float,
    gap: float = 0.002,
) -> dict[str, Any]:
    """Up to ``samples`` of each round trip, for at most ``seconds``."""
    times: dict[str, list[float]] = {k: [] for k in KINDS}
    lost = dict.fromkeys(KINDS, 0)
    end = time.monotonic() + seconds
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        local = sock.getsockname()[1]
        target, responder = (HOST, target_port), (HOST, responder_port)
        for n in itertools.count():
            if n >= samples or time.monotonic() >= end:
                break
            invite = _invite(blocked_caller, HOST, target_port, local, 2 * n)
            direct = _invite(blocked_caller, HOST, responder_port, local, 2 * n + 1)
            plan = (
                ("invite_603_via_target", invite, target, b"603"),
                ("invite_603_direct", direct, responder, b"603"),
                (
                    "bye_200_via_target",
                    _bye(target_port, responder_port, local, 2 * n),
                    target,
                    b"200",
                ),
                ("bye_200_direct", _bye(None, responder_port, local, 2 * n + 1), responder, b"200"),
            )
            for kind, data, dest, want in plan:
                us = _round_trip(sock, data, dest, want)
                if us is None:
                    lost[kind] += 1
                else:
                    times[kind].append(us)
                if kind == "invite_603_via_target":
                    sock.sendto(_ack(invite), target)
                time.sleep(gap)
    out: dict[str, Any] = {"samples": {k: len(v) for k, v in times.items()}, "lost": lost}
    out["us"] = {k: _r(percentiles(v)) for k, v in times.items()}
    out["added_us"] = {
        "invite_603": _added(out["us"]["invite_603_via_target"], out["us"]["invite_603_direct"]),
        "bye_200": _added(out["us"]["bye_200_via_target"], out["us"]["bye_200_direct"]),
    }
    return out


def _r(p: dict[str, float | None]) -> dict[str, float | None]:
    return {k: (round(v, 1) if v is not None else None) for k, v in p.items()}


def _added(
    via: dict[str, float | None], direct: dict[str, float | None]
) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for q in ("p50", "p90", "p99"):
        a, b = via.get(q), direct.get(q)
        out[q] = round(a - b, 1) if a is not None and b is not None else None
    return out


def respond(port: int, seconds: float) -> None:
    """Answer INVITE with 603 and anything else with 200, for ``seconds`` at most."""
    end = time.monotonic() + seconds
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, port))
        sock.settimeout(0.5)
        while time.monotonic() < end:
            try:
                data, addr = sock.recvfrom(65535)
            except TimeoutError:
                continue
            if data.startswith((b"SIP/", b"ACK ")):
                continue
            lines = data.split(b"\r\n")
            keep = [
                ln for ln in lines[1:]
                if ln[:4].lower() in (b"via:", b"from", b"to: ", b"call", b"cseq")
            ]  # fmt: skip
            status = b"603 Decline" if data.startswith(b"INVITE ") else b"200 OK"
            answer = b"\r\n".join([b"SIP/2.0 " + status, *keep, b"Content-Length: 0", b"", b""])
            sock.sendto(answer, addr)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="latency probe responder")
    ap.add_argument("--respond", type=int, required=True, metavar="PORT")
    ap.add_argument("--seconds", type=float, default=600.0, help="quit after this long")
    args = ap.parse_args(argv)
    respond(args.respond, args.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
