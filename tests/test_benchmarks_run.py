"""The `make bench` microbenchmarks still run to the end, at a tiny size.

No timing is asserted here (speed is measured by `make bench`, never by a
test): these only catch a benchmark that no longer finishes or no longer
exercises what it claims to, as bench_reputation did when its warm-up waited
for a table the engine had renamed. Reports go to the test's own directory,
never to loadtest/results."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def run(script: str, *args: str, codes: tuple[int, ...] = (0,)) -> None:
    done = subprocess.run(
        [sys.executable, f"loadtest/{script}", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert done.returncode in codes, f"{script}: {done.stdout[-2000:]}\n{done.stderr[-2000:]}"


def test_bench_core_measures_every_row(tmp_path: Path) -> None:
    out = tmp_path / "core.json"
    run("bench_core.py", "--iterations", "200", "--repeats", "1", "--json", str(out))
    rows = {r["name"]: r for r in json.loads(out.read_text())["rows"]}
    assert any(name.startswith("full call") for name in rows), rows.keys()
    assert all(r["median_us"] > 0 for r in rows.values())


def test_bench_reputation_warms_to_the_caps_and_times_each_scenario(tmp_path: Path) -> None:
    out = tmp_path / "reputation.json"
    run(
        "bench_reputation.py", "--iterations", "2000", "--repeats", "1", "--no-memory",
        "--json", str(out), "--markdown", str(tmp_path / "reputation.md"),
    )  # fmt: skip
    report: dict[str, Any] = json.loads(out.read_text())
    warm = report["warm_up"]
    # the engine is measured warm: every table the benchmark claims is full
    assert warm["callers"] == 100_000 and warm["calls"] > 0, warm
    assert set(report["scenarios"]) >= {"no artefact", "artefact, 1% listed", "calls table full"}


def test_bench_stir_verifies_signed_passports(tmp_path: Path) -> None:
    out = tmp_path / "stir.json"
    # it exits 1 when its speed target is missed: that is make bench's call
    run("bench_stir.py", "--count", "50", "--repeats", "1", "--out", str(out), codes=(0, 1))
    report = json.loads(out.read_text())
    assert report["verdict"] in ("PASS", "FAIL")
    medians = report["us_per_invite_median"]
    assert medians and all(v > 0 for v in medians.values()), medians
