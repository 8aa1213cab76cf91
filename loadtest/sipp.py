"""SIPp for the comparison: command lines and what its statistics files say.

The UAC (``scenarios/uac_mix.xml``) writes three files in its work dir:
``-trace_stat`` (cumulative calls, failures, retransmissions), ``-trace_counts``
(per scenario element: how often each message was sent or received, which
tells completed, blocked, shed and cancelled calls apart) and ``-trace_rtt``
(one line per response-time sample: INVITE -> final response, BYE -> 200).
The UAS (``scenarios/uas_switch.xml``) writes ``-trace_counts`` too: its
labelled-180 element counts the labelled calls that reached the switch.
"""

from __future__ import annotations

import shutil
import statistics
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from loadtest.procs import HOST

SCENARIOS = Path(__file__).resolve().parent / "scenarios"
UAC_SCENARIO = SCENARIOS / "uac_mix.xml"
UAS_SCENARIO = SCENARIOS / "uas_switch.xml"
BUFFER = str(4 << 20)  # socket buffers of SIPp: large, so SIPp itself drops nothing


def sipp_binary() -> str:
    path = shutil.which("sipp")
    if path is None:
        raise SystemExit("loadtest: sipp not found (make bench-deps installs Debian's sip-tester)")
    return path


def uas_command(port: int) -> list[str]:
    return [
        sipp_binary(), "-sf", str(UAS_SCENARIO), "-i", HOST, "-p", str(port),
        "-nostdin", "-nd", "-recv_timeout", "20000", "-buff_size", BUFFER,
        "-trace_counts", "-trace_err",
    ]  # fmt: skip


def uac_command(
    target_port: int, port: int, callers: Path, rate: int, calls: int, seconds: float
) -> list[str]:
    """Calls at ``rate`` per second, ``calls`` in all; SIPp itself quits after
    ``seconds`` plus the time a late call needs to time out."""
    return [
        sipp_binary(), f"{HOST}:{target_port}", "-sf", str(UAC_SCENARIO),
        "-inf", str(callers), "-i", HOST, "-p", str(port),
        "-r", str(rate), "-rp", "1000", "-m", str(calls), "-l", str(max(1000, rate * 10)),
        "-nd", "-nostdin", "-recv_timeout", "8000",
        "-timeout", f"{int(seconds * 2 + 15)}s", "-timeout_error",
        "-buff_size", BUFFER, "-trace_stat", "-fd", "1", "-trace_counts",
        "-trace_rtt", "-rtt_freq", "1", "-trace_err",
    ]  # fmt: skip


def _last_row(path: Path) -> dict[str, str]:
    """Header and last row of a SIPp ;-separated statistics file."""
    lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    if len(lines) < 2:
        return {}
    return dict(zip(lines[0].split(";"), lines[-1].split(";"), strict=False))


def _int(value: str | None) -> int:
    try:
        return int(float(value or 0))
    except ValueError:
        return 0


def _one(work: Path, pattern: str) -> Path | None:
    found = sorted(work.glob(pattern))
    return found[-1] if found else None


def element_counts(scenario: Path, counts_file: Path | None) -> list[int]:
    """How often each scenario element ran: sends count "Sent", receives
    "Recv" (``-trace_counts`` names its columns by element index)."""
    elements = [e for e in ET.parse(scenario).getroot() if e.tag in ("send", "recv", "nop")]
    row = _last_row(counts_file) if counts_file else {}
    out = []
    for i, element in enumerate(elements):
        if element.tag == "nop":
            out.append(0)
            continue
        what = "Sent" if element.tag == "send" else "Recv"
        out.append(
            sum(_int(v) for k, v in row.items() if k.startswith(f"{i}_") and k.endswith(what))
        )
    return out


def _index(scenario: Path, tag: str, nth: int, **attrs: str) -> int:
    """Position of the nth element with ``tag`` and ``attrs`` among the counted ones."""
    elements = [e for e in ET.parse(scenario).getroot() if e.tag in ("send", "recv", "nop")]
    hits = [
        i
        for i, e in enumerate(elements)
        if e.tag == tag and all(e.get(k) == v for k, v in attrs.items())
    ]
    return hits[nth]


@dataclass
class UacFigures:
    calls_made: int
    successful: int
    failed: int
    completed: int  # 200 to the BYE received
    blocked: int  # 603 received
    shed: int  # 503 received
    cancelled: int  # 487 received after our CANCEL
    retransmissions: int
    timeouts: int
    unexpected: int
    final_ms: list[float]  # INVITE -> final response, per sampled call
    bye_ms: list[float]  # BYE -> 200


def read_uac(work: Path) -> UacFigures:
    stat = _one(work, "uac_mix_*_.csv")
    stats = _last_row(stat) if stat else {}
    counts = element_counts(UAC_SCENARIO, _one(work, "uac_mix_*_counts.csv"))
    final_ms: list[float] = []
    bye_ms: list[float] = []
    rtt = _one(work, "uac_mix_*_rtt.csv")
    if rtt is not None:
        for line in rtt.read_text(errors="replace").splitlines()[1:]:
            parts = line.split(";")
            if len(parts) >= 3:
                try:
                    value = float(parts[1])
                except ValueError:
                    continue
                (final_ms if parts[2].strip() == "final" else bye_ms).append(value)
    return UacFigures(
        calls_made=_int(stats.get("OutgoingCall(C)")),
        successful=_int(stats.get("SuccessfulCall(C)")),
        failed=_int(stats.get("FailedCall(C)")),
        completed=counts[_index(UAC_SCENARIO, "recv", 0, rtd="bye")],
        blocked=counts[_index(UAC_SCENARIO, "recv", 0, response="603")],
        shed=counts[_index(UAC_SCENARIO, "recv", 0, response="503")],
        cancelled=counts[_index(UAC_SCENARIO, "recv", 0, response="487")],
        retransmissions=_int(stats.get("Retransmissions(C)")),
        timeouts=_int(stats.get("FailedTimeoutOnRecv(C)"))
        + _int(stats.get("FailedMaxUDPRetrans(C)")),
        unexpected=_int(stats.get("FailedUnexpectedMessage(C)")),
        final_ms=final_ms,
        bye_ms=bye_ms,
    )


def read_uas_labelled(work: Path) -> int:
    """Labelled INVITEs the switch answered (its labelled-180 element)."""
    counts = element_counts(UAS_SCENARIO, _one(work, "uas_switch_*_counts.csv"))
    sends = [i for i, e in enumerate(_elements(UAS_SCENARIO)) if e.tag == "send"]
    return counts[sends[2]]  # 100, plain 180, labelled 180, ...


def _elements(scenario: Path) -> list[ET.Element]:
    return [e for e in ET.parse(scenario).getroot() if e.tag in ("send", "recv", "nop")]


def percentiles(values: list[float]) -> dict[str, float | None]:
    """p50/p90/p99 and the maximum, None when there are too few samples."""
    if len(values) < 2:
        return {"p50": None, "p90": None, "p99": None, "max": max(values) if values else None}
    q = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50": q[49], "p90": q[89], "p99": q[98], "max": max(values)}
