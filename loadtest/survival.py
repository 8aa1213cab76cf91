"""Survival: a real `robocall-shield serve` on loopback takes N hostile UDP
datagrams and a stream of TCP abuse (loadtest/hostile.py) while a small
Python UAC places real calls through it to a Python UAS playing the switch.
The proxy's RSS and open fds are sampled throughout.

    python -m loadtest.survival                       # 1,000,000 datagrams
    python -m loadtest.survival --datagrams 20000 --tcp-abuses 300 --json out.json

Reports datagrams and streams sent, calls attempted and completed, crashes
(the proxy exiting), RSS start/peak/end and fd counts; exits 1 if the proxy
crashed or a call alongside failed. Bounded: --max-seconds for the attack,
then at most 40 s for the calls in flight to end."""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

from loadtest.hostile import Datagrams, TcpAbuse, blast, message
from loadtest.procs import HOST, free_port, udp_errors

CALL_TIMEOUT = 32.0  # RFC 3261 Timer B / F
SETTLE = 2.0  # seconds after the attack before the last samples


# -- the calls alongside: a UAC and a UAS (the switch) -----------------------


class Phone(asyncio.DatagramProtocol):
    """The UAS answers our calls (Call-ID surv-*) 200 and BYEs 200, and
    ignores the junk the proxy forwards; the UAC side hands responses to
    the waiting call."""

    def __init__(self, uas: bool) -> None:
        self.uas = uas
        self.transport: asyncio.DatagramTransport | None = None
        self.waiting: dict[tuple[str, str], asyncio.Future[int]] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        head, _, _ = data.partition(b"\r\n\r\n")
        call_id = _header(head, b"call-id|i")
        if not call_id.startswith("surv-"):
            return  # junk the proxy forwarded, or answers to it
        cseq = _header(head, b"cseq").split()
        if self.uas:
            if head.startswith((b"INVITE ", b"BYE ")):
                assert self.transport is not None
                self.transport.sendto(_answer(head, 200), addr)
            return
        if head.startswith(b"SIP/2.0 ") and len(cseq) == 2:
            status = int(head[8:11])
            fut = self.waiting.get((call_id, cseq[1]))
            if fut is not None and not fut.done() and status >= 200:
                fut.set_result(status)


def _header(head: bytes, names: bytes) -> str:
    m = re.search(rb"\r\n(?:" + names + rb")[ \t]*:[ \t]*([^\r\n]*)", head, re.I)
    return m.group(1).decode("latin-1").strip() if m else ""


def _answer(head: bytes, status: int) -> bytes:
    lines = [f"SIP/2.0 {status} OK".encode()]
    for line in head.split(b"\r\n")[1:]:
        name = line.split(b":", 1)[0].strip().lower()
        if name in (b"via", b"v", b"from", b"f", b"call-id", b"i", b"cseq", b"record-route"):
            lines.append(line)
        elif name in (b"to", b"t"):
            lines.append(line if b"tag=" in line else line + b";tag=uas")
    lines += [b"Contact: <sip:uas@127.0.0.1>", b"Content-Length: 0"]
    return b"\r\n".join(lines) + b"\r\n\r\n"


async def _transaction(
    phone: Phone, data: bytes, call_id: str, method: str, proxy: tuple[str, int]
) -> int:
    """Send with RFC 3261 retransmissions (T1 = 0.5 s doubling to 4 s) until
    a final response; 0 on timeout."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[int] = loop.create_future()
    phone.waiting[(call_id, method)] = fut
    interval, deadline = 0.5, loop.time() + CALL_TIMEOUT
    try:
        while loop.time() < deadline:
            assert phone.transport is not None
            phone.transport.sendto(data, proxy)
            try:
                return await asyncio.wait_for(asyncio.shield(fut), interval)
            except TimeoutError:
                interval = min(interval * 2, 4.0)
        return 0
    finally:
        del phone.waiting[(call_id, method)]


async def _call(
    phone: Phone, n: int, proxy: tuple[str, int], via: str, tally: Counter[str]
) -> None:
    call_id = f"surv-{n}@127.0.0.1"
    caller = f"+1312555{n % 10000:04d}"
    callee = f"+1646555{(n * 7) % 10000:04d}"

    def msg(method: str, branch: str, cseq: int, to_tag: str = "") -> bytes:
        return message(method, proxy[1], caller=caller, callee=callee, call_id=call_id,
                       via=via, branch=branch, cseq=cseq, to_tag=to_tag)  # fmt: skip

    tally["attempted"] += 1
    invite = msg("INVITE", f"z9hG4bK-i{n}", 1)
    status = await _transaction(phone, invite, call_id, "INVITE", proxy)
    if status != 200:
        tally[f"failed-invite-{status or 'timeout'}"] += 1
        return
    ack = msg("ACK", f"z9hG4bK-a{n}", 1, "uas")
    assert phone.transport is not None
    phone.transport.sendto(ack, proxy)
    bye = msg("BYE", f"z9hG4bK-b{n}", 2, "uas")
    status = await _transaction(phone, bye, call_id, "BYE", proxy)
    tally["completed" if status == 200 else f"failed-bye-{status or 'timeout'}"] += 1


async def _calls(proxy_port: int, uas_port: int, rate: float, stop: Any, out: Any) -> None:
    loop = asyncio.get_running_loop()
    await loop.create_datagram_endpoint(lambda: Phone(True), local_addr=(HOST, uas_port))
    transport, phone = await loop.create_datagram_endpoint(
        lambda: Phone(False), local_addr=(HOST, 0)
    )
    via = f"127.0.0.1:{transport.get_extra_info('sockname')[1]}"
    tally: Counter[str] = Counter()
    tasks: set[asyncio.Task[None]] = set()
    out.put("ready")
    n, start = 0, loop.time()
    while not stop.is_set():
        task = loop.create_task(_call(phone, n, (HOST, proxy_port), via, tally))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        n += 1
        await asyncio.sleep(max(0.0, start + n / rate - loop.time()))
    if tasks:
        await asyncio.wait(tasks, timeout=2 * CALL_TIMEOUT + 5)
    out.put(dict(tally))


def run_calls(proxy_port: int, uas_port: int, rate: float, stop: Any, out: Any) -> None:
    asyncio.run(_calls(proxy_port, uas_port, rate, stop, out))


def run_blast(
    port: int, count: int, rate: float, seconds: float, kinds: list[str], out: Any
) -> None:
    out.put(blast(port, count, rate, seconds, sources=64, seed=os.getpid(), kinds=kinds))


# -- the proxy and what we measure of it --------------------------------------


def write_config(
    path: Path,
    sip: int,
    admin: int,
    switch: int,
    limits: dict[str, Any],
    defended: bool = False,
    cap: int = 0,
) -> None:
    lines = [
        "[sip]",
        f'host = "{HOST}"',
        f"port = {sip}",
        # --defended: the caller is a declared peer; the attack's addresses
        # (127.0.2.x, 127.0.3.x) are strangers, dropped, and flood-limited
        # before they are parsed
        *(['unknown_sources = "drop"'] if defended else []),
        "[sip.limits]",
        *(f"{k} = {json.dumps(v)}" for k, v in limits.items()),
        "[[switches]]",
        'name = "sw"',
        f'host = "{HOST}"',
        f"port = {switch}",
        "[routing]",
        "health_checks = false",
        "[admin]",
        f'host = "{HOST}"',
        f"port = {admin}",
        "[log]",
        f'verdict_log = "{path.parent / "verdicts.jsonl"}"',
        "[subscribers]",
        f'data_dir = "{path.parent / "var"}"',
    ]
    flood: dict[str, Any] = {}
    if defended:
        lines += ["[[peers]]", 'name = "caller"', f'addresses = ["{HOST}/32"]']
        flood.update(per_ip_rate=20.0, per_ip_burst=40)
    if cap:
        # --cap: every per-number and per-address table bounded at `cap`, so
        # a run of a few thousand distinct callers reaches the bounds that
        # take 100,000 at the defaults
        tables = ("max_numbers", "max_ranges", "max_calls")
        lines += ["[reputation]", *(f"{k} = {cap}" for k in tables)]
        flood.update(max_ips=cap, max_callers=cap)
    if flood:
        lines += ["[flood]", *(f"{k} = {v}" for k, v in flood.items())]
    path.write_text("\n".join(lines) + "\n")


def sample(pid: int) -> tuple[int, int, int]:
    """(RSS, anonymous RSS in kB, open fds) of a process; zeros once it is
    gone. Anonymous is the heap: file pages (code, mapped artefacts) are
    shared and bounded by the files."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
        anon = int(re.search(r"RssAnon:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
        return rss, anon, len(os.listdir(f"/proc/{pid}/fd"))
    except (OSError, AttributeError):
        return 0, 0, 0


def metrics(admin: int) -> dict[str, float]:
    """The proxy's counters worth reporting, summed over labels we do not keep."""
    keep = ("rs_sip_received_total", "rs_sip_parse_errors_total", "rs_sip_send_errors_total",
            "rs_sip_shed_total", "rs_flood_limited_total", "rs_tcp_closed_total",
            "rs_sip_dropped_total", "rs_sip_local_replies_total",
            "rs_reputation_tracked", "rs_flood_tracked")  # fmt: skip
    out: Counter[str] = Counter()
    try:
        with urllib.request.urlopen(f"http://{HOST}:{admin}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return {}
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in keep:
            label = re.search(r'(?:reason|transport|table)="([^"]*)"', line)
            split = name in ("rs_tcp_closed_total", "rs_sip_received_total",
                             "rs_reputation_tracked", "rs_flood_tracked")  # fmt: skip
            key = f"{name}[{label.group(1)}]" if split and label else name
            out[key] += float(line.rsplit(" ", 1)[1])
    return dict(out)


def wait_ready(proc: subprocess.Popen[bytes], admin: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the proxy exited at start-up ({proc.returncode})")
        try:
            with urllib.request.urlopen(f"http://{HOST}:{admin}/readyz", timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError("the proxy was not ready in time")


async def _attack(args: argparse.Namespace, port: int, proc: subprocess.Popen[bytes],
                  rss: list[tuple[int, int]], fds: list[int],
                  blaster: Any) -> dict[str, Any]:  # fmt: skip
    """TCP abuse spread over the datagram blast, and samples every 0.25 s,
    until the blaster is done (or --max-seconds)."""
    abuse = TcpAbuse(port, args.per_source, args.message_timeout)
    loop = asyncio.get_running_loop()
    start = loop.time()
    expected = min(args.max_seconds, args.datagrams / args.rate)
    jobs: set[asyncio.Task[None]] = set()
    slots = asyncio.Semaphore(args.tcp_concurrency)
    launched = 0

    async def one(kind: str) -> None:
        async with slots:
            await abuse.run(kind)

    while loop.time() - start < args.max_seconds + 1:
        r, anon, f = sample(proc.pid)
        if r:
            rss.append((r, anon))
            fds.append(f)
        if proc.poll() is not None:
            break
        due = min(args.tcp_abuses, int(args.tcp_abuses * (loop.time() - start) / expected) + 1)
        while launched < due:
            task = loop.create_task(one(args.tcp_kinds[launched % len(args.tcp_kinds)]))
            jobs.add(task)
            task.add_done_callback(jobs.discard)
            launched += 1
        if not blaster.is_alive() and launched >= args.tcp_abuses and not jobs:
            break
        await asyncio.sleep(0.25)
    for task in list(jobs):
        task.cancel()
    return {
        "launched": launched,
        "connections": abuse.connections,
        "by_kind": dict(abuse.started),
        "outcomes": dict(sorted(abuse.outcomes.items())),
    }


def survive(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="survival-"))
    sip, admin, switch = free_port(), free_port(), free_port()
    limits = {"message_timeout": args.message_timeout,
              "max_connections_per_source": args.per_source}  # fmt: skip
    write_config(work / "proxy.toml", sip, admin, switch, limits, args.defended, args.cap)
    script = Path(sys.executable).with_name("robocall-shield")
    cmd = [str(script), "serve", "--config", str(work / "proxy.toml")]
    ctx = mp.get_context("spawn")
    stop, calls_out, blast_out = ctx.Event(), ctx.Queue(), ctx.Queue()
    with (work / "proxy.log").open("wb") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    caller = blaster = None
    try:
        wait_ready(proc, admin)
        caller = ctx.Process(target=run_calls, args=(sip, switch, args.call_rate, stop, calls_out))
        caller.start()
        calls_out.get(timeout=20)  # the UAS is bound
        r, anon, f = sample(proc.pid)
        rss, fds = [(r, anon)], [f]
        drops = udp_errors()["RcvbufErrors"]
        began = time.monotonic()
        blaster = ctx.Process(
            target=run_blast,
            args=(sip, args.datagrams, args.rate, args.max_seconds, args.udp_kinds, blast_out),
        )
        blaster.start()
        tcp = asyncio.run(_attack(args, sip, proc, rss, fds, blaster))
        blaster.join(timeout=args.max_seconds + 30)
        sent = blast_out.get(timeout=10)
        attack_seconds = time.monotonic() - began
        drops = udp_errors()["RcvbufErrors"] - drops
        stop.set()
        calls = calls_out.get(timeout=2 * CALL_TIMEOUT + 20)
        time.sleep(SETTLE)
        end_rss, _anon, end_fds = sample(proc.pid)
        alive = proc.poll() is None
        counters = metrics(admin) if alive else {}
    finally:
        stop.set()
        for child in (caller, blaster):
            if child is not None:
                child.join(timeout=5)
                if child.is_alive():
                    child.kill()
        exit_code = proc.poll()
        if exit_code is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    log_text = (work / "proxy.log").read_text(errors="replace")
    return {
        "datagrams": {**sent, "rate_asked": args.rate,
                      "per_second": round(sent.get("sent", 0) / max(sent.get("seconds", 1), 0.01))},
        "udp_kernel_drops": drops,  # receive buffer overflows (all sockets)
        "tcp": tcp,
        "calls": calls,
        "crashes": 0 if alive else 1,
        "exit_code": exit_code,
        "attack_seconds": round(attack_seconds, 1),
        "rss_mb": {"start": round(rss[0][0] / 1024, 1),
                   "peak": round(max(r for r, _ in rss) / 1024, 1),
                   "end": round(end_rss / 1024, 1)},
        "fds": {"start": fds[0], "peak": max(fds), "end": end_fds},
        "rss_timeline_mb": tenths([r for r, _ in rss]),
        "rss_anon_timeline_mb": tenths([a for _, a in rss]),
        # the heap's growth over the last third of the attack: ~0 once every
        # bounded table is full
        "rss_anon_last_third_growth_mb": round((rss[-1][1] - rss[2 * len(rss) // 3][1]) / 1024, 1),
        "samples": len(rss),
        "proxy_metrics": counters,
        "tracebacks_in_log": log_text.count("Traceback"),
        "workdir": str(work),
    }  # fmt: skip


def tenths(kb: list[int]) -> list[float]:
    """Eleven samples, start to end, in MB."""
    return [round(kb[i * (len(kb) - 1) // 10] / 1024, 1) for i in range(11)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--datagrams", type=int, default=1_000_000)
    p.add_argument("--rate", type=float, default=4000.0,
                   help="datagrams per second; below what the proxy takes beside the "
                   "attacker on a 2-core box (6-8k/s)")  # fmt: skip
    p.add_argument("--tcp-abuses", type=int, default=5000)
    p.add_argument("--tcp-concurrency", type=int, default=100)
    udp_kinds = [k for k, _ in Datagrams.KINDS]
    p.add_argument("--udp-kinds", type=lambda v: v.split(","), default=udp_kinds,
                   help="comma-separated: " + ",".join(k for k, _ in Datagrams.KINDS))  # fmt: skip
    p.add_argument("--tcp-kinds", type=lambda v: v.split(","), default=list(TcpAbuse.KINDS),
                   help="comma-separated: " + ",".join(TcpAbuse.KINDS))  # fmt: skip
    p.add_argument("--call-rate", type=float, default=10.0, help="calls alongside per second")
    p.add_argument("--max-seconds", type=float, default=600.0, help="bound on the attack")
    p.add_argument("--message-timeout", type=float, default=10.0, help="[sip.limits]")
    p.add_argument("--per-source", type=int, default=64, help="[sip.limits] per-source cap")
    p.add_argument(
        "--defended",
        action="store_true",
        help="declare the caller a [[peers]] entry; strangers dropped and flood-limited",
    )
    p.add_argument("--cap", type=int, default=0,
                   help="bound [reputation] max_numbers/max_ranges/max_calls and [flood] "
                   "max_ips/max_callers at this (>= 100): a short run reaches them")  # fmt: skip
    p.add_argument("--json", type=Path, help="write the report here")
    args = p.parse_args(argv)
    report = survive(args)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    failed = sum(v for k, v in report["calls"].items() if k.startswith("failed"))
    return 1 if report["crashes"] or failed else 0


if __name__ == "__main__":
    sys.exit(main())
