"""Soak: SIPp calls at a moderate rate through a real `robocall-shield serve`
for minutes, while the blocklist artefact is rebuilt and reloaded and
subscribers are written through the API (issue 9, part 7).

    python -m loadtest.soak [--seconds 600] [--rate 200] [--json PATH]

Expected: zero failed calls; flat memory, stated as: after the warm-up (the
first 40% of the run), the mean RSS of the last third of the samples is
within 10% of the mean of the first third; and no growth in open file
descriptors (the last third's highest count at most 4 above the first
third's). Exit status 1 when any of these fails. SOAK_SECONDS and SOAK_RATE
in the environment set the defaults (`make soak`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtest.procs import HOST, Processes, free_port, show_log_tails, udp_bound, wait_for
from loadtest.sipp import read_uac, uac_command, uas_command
from loadtest.workload import Mix, build_artefact, list_numbers, prepare

TOKEN = "soak-token-0123456789abcdef"
RSS_TOLERANCE = 0.10
FD_SLACK = 4
WARM_UP = 0.4  # share of the run before memory is judged (tables and caches filling)
SAMPLE_EVERY = 2.0


@dataclass
class Sample:
    t: float
    rss_kb: int
    fds: int


def proc_sample(pid: int, t: float) -> Sample:
    rss = 0
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    return Sample(t, rss, len(os.listdir(f"/proc/{pid}/fd")))


def proxy_config(work: Path, sip: int, admin: int, uas: int, lists: Path) -> str:
    return f"""[sip]
host = "{HOST}"
port = {sip}
transports = ["udp"]

[[switches]]
name = "uas"
host = "{HOST}"
port = {uas}

[routing]
health_checks = false

[admin]
host = "{HOST}"
port = {admin}
token = "{TOKEN}"

[log]
level = "warning"
verdict_log = {json.dumps(str(work / "verdicts.jsonl"))}

[blocklists]
dir = {json.dumps(str(lists))}

[subscribers]
data_dir = {json.dumps(str(work / "data"))}
"""


def admin_call(port: int, method: str, path: str, body: object = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        f"http://{HOST}:{port}{path}",
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return int(resp.status), json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, None


def judge(samples: list[Sample], seconds: float, tolerance: float) -> dict[str, Any]:
    """The memory and descriptor criteria over the samples after warm-up."""
    kept = [s for s in samples if s.t >= WARM_UP * seconds]
    third = max(1, len(kept) // 3)
    first, last = kept[:third], kept[-third:]
    if not first:
        return {"rss_flat": False, "fds_flat": False, "reason": "no samples"}
    rss_first = statistics.mean(s.rss_kb for s in first)
    rss_last = statistics.mean(s.rss_kb for s in last)
    fds_first, fds_last = max(s.fds for s in first), max(s.fds for s in last)
    return {
        "rss_first_third_kb": round(rss_first),
        "rss_last_third_kb": round(rss_last),
        "rss_change": round(rss_last / rss_first - 1, 4),
        "rss_flat": rss_last <= rss_first * (1 + tolerance),
        "fds_first_third_max": fds_first,
        "fds_last_third_max": fds_last,
        "fds_flat": fds_last <= fds_first + FD_SLACK,
    }


def soak(work: Path, seconds: float, rate: int, tolerance: float = RSS_TOLERANCE) -> dict[str, Any]:
    workload = prepare(work, Mix(blocked=0.1, labelled=0.05), list_size=5000)
    procs = Processes()
    sip, admin, uas_port, uac_port = free_port(), free_port(), free_port(), free_port()
    config = work / "proxy.toml"
    config.write_text(proxy_config(work, sip, admin, uas_port, workload.artefact_dir))
    reloads: list[str] = []
    writes = {"ok": 0, "failed": 0}
    samples: list[Sample] = []
    try:
        uas = procs.start("uas", uas_command(uas_port), work, work / "uas.log")
        wait_for("the SIPp UAS", lambda: udp_bound(uas_port), 10, uas)
        cmd = [sys.executable, "-m", "proxy", "serve", "--config", str(config)]
        proxy = procs.start("proxy", cmd, work, work / "proxy.log")
        wait_for("the proxy", lambda: admin_call(admin, "GET", "/readyz")[0] == 200, 30, proxy)
        calls = int(rate * seconds)
        uac_cmd = uac_command(sip, uac_port, workload.callers_csv, rate, calls, seconds)
        uac = procs.start("uac", uac_cmd, work, work / "uac.log")
        start = time.monotonic()
        reload_every = max(5.0, seconds / 10)
        next_reload, next_write, n = start + reload_every, start + 1.0, 0
        numbers = list_numbers(5000)
        limit = seconds * 3 + 60  # SIPp's own timeout is 2 x seconds + 15
        while uac.poll() is None and time.monotonic() - start < limit:
            now = time.monotonic()
            samples.append(proc_sample(proxy.pid, now - start))
            if now >= next_write:  # a subscriber written through the API every second
                number = f"+1646555{n % 10000:04d}"
                body = {"opted_in": True, "policy": "label", "block": [f"+1900555{n % 10000:04d}"]}
                status = admin_call(admin, "PUT", f"/api/v1/subscribers/{number}", body)[0]
                ok = status in (200, 201)
                writes["ok" if ok else "failed"] += 1
                next_write, n = now + 1.0, n + 1
            if now >= next_reload:  # a new build of the list, one number more each time
                built = build_artefact([*numbers, 12025550100 + len(reloads)], work)
                version = json.loads((built / "manifest.json").read_text())["version"]
                status, answer = admin_call(admin, "POST", "/admin/blocklists/reload")
                outcome = answer.get("outcome") if answer else ""
                if outcome == "unchanged" and answer and answer.get("version") == version:
                    outcome = "loaded"  # the manifest watcher took this build first
                reloads.append(f"{status} {outcome}")
                next_reload = time.monotonic() + reload_every
            time.sleep(SAMPLE_EVERY)
        ran = time.monotonic() - start
        if uac.poll() is None:
            raise RuntimeError(f"SIPp still running after {limit:.0f} s")
        samples.append(proc_sample(proxy.pid, ran))
        figures = read_uac(work)
    except BaseException:
        show_log_tails(work, "soak")
        raise
    finally:
        procs.stop_all()
    memory = judge(samples, seconds, tolerance)
    failed = figures.failed + figures.timeouts + figures.unexpected
    result = {
        "seconds": seconds,
        "rate": rate,
        "ran_s": round(ran, 1),
        "calls_made": figures.calls_made,
        "completed": figures.completed,
        "blocked": figures.blocked,
        "shed": figures.shed,
        "failed": failed,
        "retransmissions": figures.retransmissions,
        "reloads": reloads,
        "subscriber_writes": writes,
        **memory,
        "samples": [[round(s.t, 1), s.rss_kb, s.fds] for s in samples],
    }
    result["passed"] = bool(
        failed == 0
        and figures.calls_made == calls
        and figures.shed == 0
        and figures.completed + figures.blocked == calls
        and all(r == "200 loaded" for r in reloads)
        and writes["failed"] == 0
        and memory["rss_flat"]
        and memory["fds_flat"]
    )
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--seconds", type=float, default=float(os.environ.get("SOAK_SECONDS", 600)))
    ap.add_argument("--rate", type=int, default=int(os.environ.get("SOAK_RATE", 200)))
    ap.add_argument("--rss-tolerance", type=float, default=RSS_TOLERANCE)
    ap.add_argument("--json", type=Path, default=Path("loadtest/results/soak.json"))
    ap.add_argument("--work", type=Path, help="keep the run's files here (default: a temp dir)")
    args = ap.parse_args(argv)
    if args.work is not None:
        args.work.mkdir(parents=True, exist_ok=True)
        result = soak(args.work, args.seconds, args.rate, args.rss_tolerance)
    else:
        with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
            result = soak(Path(tmp), args.seconds, args.rate, args.rss_tolerance)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"soak {result['ran_s']} s at {args.rate} calls/s: {result['calls_made']} calls, "
        f"{result['completed']} completed, {result['blocked']} blocked, {result['failed']} failed, "
        f"{result['shed']} shed; {len(result['reloads'])} reloads, "
        f"{result['subscriber_writes']['ok']} subscriber writes; RSS "
        f"{result.get('rss_first_third_kb')} -> {result.get('rss_last_third_kb')} kB "
        f"({result.get('rss_change', 0):+.1%}); fds {result.get('fds_first_third_max')} -> "
        f"{result.get('fds_last_third_max')}: {'PASS' if result['passed'] else 'FAIL'}"
    )
    print(f"wrote {args.json}")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
