"""The side-by-side table: Markdown for people, ratios of this proxy against the others."""

from __future__ import annotations

from typing import Any

NAMES = {
    "proxy": "robocall-shield",
    "bare": "bare forwarder",
    "kamailio": "Kamailio (Debian)",
    "kamailio-tlsf": "Kamailio (tlsf)",
}


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def _get(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def common_rate_cpu(
    results: dict[str, dict[str, Any]],
) -> tuple[int | None, dict[str, float | None]]:
    """The highest rate every target passed in its search, and each one's CPU
    per 1000 calls at it: the like-for-like cost comparison."""
    passed: list[set[int]] = []
    for r in results.values():
        passed.append({run["rate"] for run in r.get("search", []) if run["passed"]})
    common = set.intersection(*passed) if passed else set()
    if not common:
        return None, {}
    rate = max(common)
    out: dict[str, float | None] = {}
    for name, r in results.items():
        runs = [x for x in r.get("search", []) if x["rate"] == rate and x["passed"]]
        out[name] = runs[0]["cpu_per_1000_calls"] if runs else None
    return rate, out


ROWS: list[tuple[str, tuple[str, ...], int]] = [
    ("highest rate with < 0.1% failed calls (calls/s)", ("max_rate",), 0),
    ("cost run: rate (calls/s)", ("cost", "rate"), 0),
    ("cost run: CPU-s per 1000 calls", ("cost", "cpu_per_1000_calls"), 3),
    ("cost run: target CPU (cores)", ("cost", "target_core_utilisation"), 2),
    ("cost run: SIPp UAS+UAC CPU (cores)", ("cost", "sipp_core_utilisation"), 2),
    ("cost run: failed calls", ("cost", "failed"), 0),
    ("cost run: INVITE->final p99 (ms, SIPp)", ("cost", "final_ms", "p99"), 0),
    ("added INVITE->603 p50/p99 idle (µs)", ("latency", "idle", "added_us", "invite_603"), 0),
    ("added BYE->200 p50/p99 idle (µs)", ("latency", "idle", "added_us", "bye_200"), 0),
    (
        "added INVITE->603 p50/p99 at half max (µs)",
        ("latency", "loaded", "added_us", "invite_603"),
        0,
    ),
    ("added BYE->200 p50/p99 at half max (µs)", ("latency", "loaded", "added_us", "bye_200"), 0),
    ("overload: rate (1.5x max, calls/s)", ("overload", "rate"), 0),
    ("overload: final response within 2 s", ("overload", "final_within_2s_share"), 4),
    ("overload: retransmissions per call", ("overload", "retransmissions_per_call"), 3),
    ("overload: retransmission storm", ("overload", "storm"), 0),
    ("overload: shed with 503", ("overload", "shed_503"), 0),
    ("overload: failed calls", ("overload", "failed"), 0),
    ("overload: completed+blocked calls/s vs max", ("overload", "good_vs_max"), 2),
]


def _cell(r: dict[str, Any], keys: tuple[str, ...], digits: int) -> str:
    value = _get(r, *keys)
    if isinstance(value, dict):  # p50/p99 pair
        return f"{_fmt(value.get('p50'), 0)} / {_fmt(value.get('p99'), 0)}"
    if isinstance(value, float) and digits == 0:
        return f"{value:.0f}"
    return _fmt(value, digits)


def ratios(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """This proxy's figures divided by each other target's (CPU and latency:
    lower is better; rate: higher is better)."""
    mine = results.get("proxy")
    if mine is None:
        return {}
    rate, cpu_common = common_rate_cpu(results)
    out: dict[str, dict[str, float | None]] = {}
    for name, other in results.items():
        if name == "proxy":
            continue

        def div(a: Any, b: Any) -> float | None:
            # An added latency at or under 0 is the two percentiles' noise
            # (through the target minus direct), not a figure to divide by.
            usable = isinstance(a, int | float) and isinstance(b, int | float)
            return round(a / b, 2) if usable and a > 0 and b > 0 else None

        out[name] = {
            "max_rate": div(mine.get("max_rate"), other.get("max_rate")),
            "cost_cpu_per_1000_calls": div(
                _get(mine, "cost", "cpu_per_1000_calls"), _get(other, "cost", "cpu_per_1000_calls")
            ),
            "cpu_per_1000_calls_at_common_rate": div(cpu_common.get("proxy"), cpu_common.get(name)),
            "common_rate": rate,
            "added_p99_invite_603_loaded": div(
                _get(mine, "latency", "loaded", "added_us", "invite_603", "p99"),
                _get(other, "latency", "loaded", "added_us", "invite_603", "p99"),
            ),
            "added_p99_bye_200_loaded": div(
                _get(mine, "latency", "loaded", "added_us", "bye_200", "p99"),
                _get(other, "latency", "loaded", "added_us", "bye_200", "p99"),
            ),
        }
    return out


def markdown(result: dict[str, Any]) -> str:
    results: dict[str, dict[str, Any]] = result["targets"]
    names = list(results)
    head = "| | " + " | ".join(NAMES.get(n, n) for n in names) + " |"
    lines = [
        f"# Load comparison ({result['source']}, {result['timestamp']})",
        "",
        f"`{result['command']}` on {result['environment'].get('cpus')} cores shared with SIPp "
        f"(load average {result['environment'].get('loadavg_1min')} before the run). Mix: "
        f"{result['mix']['blocked']:.0%} blocked, {result['mix']['labelled']:.0%} labelled, "
        f"{result['mix']['cancel']:.0%} cancelled, the rest completed; blocklist of "
        f"{result['list_size']} numbers; record-route {'on' if result['record_route'] else 'off'}.",
        "",
        head,
        "|---" * (len(names) + 1) + "|",
    ]
    for label, keys, digits in ROWS:
        lines.append(
            f"| {label} | " + " | ".join(_cell(results[n], keys, digits) for n in names) + " |"
        )
    rate, cpu = common_rate_cpu(results)
    if rate is not None:
        lines.append(
            f"| CPU-s per 1000 calls at {rate} calls/s (all passed) | "
            + " | ".join(_fmt(cpu.get(n)) for n in names) + " |"
        )  # fmt: skip
    r = result.get("ratios", {})
    if r:
        lines += ["", "robocall-shield as a multiple of each (CPU and latency: lower is better; "
                  "rate: higher is better):", "",
                  "| robocall-shield / | max rate | CPU per call (cost run) | CPU per call at "
                  "common rate | added p99 INVITE->603 | added p99 BYE->200 |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        for name, v in r.items():
            lines.append(
                f"| {NAMES.get(name, name)} | {_fmt(v['max_rate'], 2)} | "
                f"{_fmt(v['cost_cpu_per_1000_calls'], 2)} | "
                f"{_fmt(v['cpu_per_1000_calls_at_common_rate'], 2)} | "
                f"{_fmt(v['added_p99_invite_603_loaded'], 2)} | "
                f"{_fmt(v['added_p99_bye_200_loaded'], 2)} |"
            )
    lines += ["", "Targets:", ""]
    lines += [f"* {NAMES.get(n, n)}: {results[n]['description']}" for n in names]
    lines += ["", *result.get("notes", [])]
    return "\n".join(lines) + "\n"
