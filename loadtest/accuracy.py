"""Accuracy report: the reputation engine on a labelled traffic simulation.

Replays traffic_sim.py's calls through the real engine and screening chain
(default config, a real DNO artefact) the way proxy/core.py drives them:
``record`` then ``screen`` at the INVITE, ``forget`` when the chain blocks,
otherwise ``final`` at the first final response and ``ended`` at the BYE.
The carrier policy is the default "label"; what "block-high-confidence"
would have blocked is read from the same score (score >= block_at), so the
engine's state is that of the label replay.

Figures: campaign detection (labelled or blocked) for calls placed at least
60 s after their campaign started, and within that first minute apart;
legit calls labelled or blocked, headline without the unsigned bulk stress
case; legit calls block-high-confidence would block; top reasons per class.

    .venv/bin/python -m loadtest.accuracy [--seed N] [--minutes M] [--scale S]
    .venv/bin/python loadtest/accuracy.py  (the same)

A MISS is printed, not an error: the exit status is 0 either way.
"""

from __future__ import annotations

import argparse
import heapq
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from blocklists.build import build
from blocklists.slot import ArtefactSlot
from blocklists.sources import Kind, Source
from blocklists.store import Artefact
from proxy.config import parse_config
from proxy.reputation import ReputationEngine
from proxy.screening import Action, Pipeline, build_pipeline
from proxy.sip.identity import CallFacts

if TYPE_CHECKING or __package__:  # python -m loadtest.accuracy, and for mypy
    from loadtest.procs import source_version, write_result
    from loadtest.traffic_sim import CAMPAIGN, NANP, STRESS_CLASSES, SimCall, Simulation, generate
else:  # python loadtest/accuracy.py, like the other benchmarks
    from procs import source_version, write_result
    from traffic_sim import CAMPAIGN, NANP, STRESS_CLASSES, SimCall, Simulation, generate

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
GRACE_S = 60.0  # detection is judged on calls placed this long after a campaign began
TARGET_DETECTION = 0.95
TARGET_LEGIT_LABELLED = 0.001
IDENTITY = "sim.passport.sig;info=<https://cert.example/sim.pem>;ppt=shaken"
INVITE, FINAL, ENDED = 0, 1, 2


@dataclass(slots=True)
class Replay:
    flagged: list[bool]  # labelled or blocked as replayed (carrier policy "label")
    would_block: list[bool]  # blocked under "block-high-confidence", or by a list
    scores: list[int]
    reasons: list[tuple[str, ...]]
    screen_s: float = 0.0  # record + screen, summed over the INVITEs
    outcome_s: float = 0.0  # final + ended, summed
    outcome_events: int = 0


def dno_artefact(sim: Simulation, directory: Path) -> Artefact:
    """The simulation's DNO numbers as a real artefact, built as an operator would."""
    listed = directory / "dno.txt"
    listed.write_text("".join(f"{n - NANP:010d}\n" for n in sim.dno_numbers), encoding="utf-8")
    build([Source(Kind.DNO, listed)], directory / "artefact")
    return Artefact.load(directory / "artefact")


def facts(c: SimCall, now: float) -> CallFacts:
    withheld = c.caller is None
    return CallFacts(
        method="INVITE",
        call_id=c.call_id,
        source=c.peer,
        caller=None if withheld else f"+{c.caller}",
        caller_key=c.caller,
        caller_display=None,
        asserted=not withheld,
        anonymous=withheld,
        privacy_id=withheld,
        callee=f"+{c.callee}",
        callee_key=c.callee,
        emergency_urn=False,
        identity=IDENTITY if c.attest else None,
        received=now,
        verstat=c.verstat,
        attest=c.attest,
    )


def replay(sim: Simulation, engine: ReputationEngine, pipeline: Pipeline) -> Replay:
    calls = sim.calls
    n = len(calls)
    block_at = engine.cfg.block_at
    out = Replay([False] * n, [False] * n, [0] * n, [()] * n)
    heap = [(c.t, i, INVITE, i) for i, c in enumerate(calls)]
    heapq.heapify(heap)
    seq = n
    clock = time.perf_counter
    while heap:
        t, _, kind, i = heapq.heappop(heap)
        c = calls[i]
        if kind == INVITE:
            f = facts(c, t)
            t0 = clock()
            engine.record(f)
            screened = pipeline.screen(f)
            out.screen_s += clock() - t0
            verdict = screened.verdict
            action = verdict.action
            out.scores[i] = verdict.score
            out.reasons[i] = verdict.reasons
            out.flagged[i] = action is not Action.PASS
            # the policy only turns a reputation score into a block; list verdicts stand
            out.would_block[i] = action is Action.BLOCK or (
                screened.decided_by == "reputation" and verdict.score >= block_at
            )
            if action is Action.BLOCK:
                engine.forget(c.call_id)  # answered by the proxy: no outcome
                continue
            seq += 1
            heapq.heappush(heap, (t + c.ring, seq, FINAL, i))
        elif kind == FINAL:
            t0 = clock()
            engine.final(c.call_id, c.status, t)
            out.outcome_s += clock() - t0
            out.outcome_events += 1
            if c.answered:
                seq += 1
                heapq.heappush(heap, (t + c.talk, seq, ENDED, i))
        else:
            t0 = clock()
            engine.ended(c.call_id, t)
            out.outcome_s += clock() - t0
            out.outcome_events += 1
    return out


# -- figures ----------------------------------------------------------------------


@dataclass(slots=True)
class Tally:
    calls: int = 0
    flagged: int = 0
    would_block: int = 0
    flagged_reasons: Counter[str] = field(default_factory=Counter)
    missed_reasons: Counter[str] = field(default_factory=Counter)
    missed_scores: list[int] = field(default_factory=list)
    flagged_scores: list[int] = field(default_factory=list)

    def add(self, flagged: bool, would_block: bool, score: int, reasons: tuple[str, ...]) -> None:
        self.calls += 1
        if flagged:
            self.flagged += 1
            self.flagged_reasons.update(reasons)
            self.flagged_scores.append(score)
        else:
            self.missed_reasons.update(reasons or ("(no points)",))
            self.missed_scores.append(score)
        self.would_block += would_block

    @property
    def rate(self) -> float:
        return self.flagged / self.calls if self.calls else 0.0

    def json(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "flagged": self.flagged,
            "rate": round(self.rate, 6),
            "would_block_high_confidence": self.would_block,
            "flagged_reasons": dict(self.flagged_reasons.most_common()),
            "unflagged_reasons": dict(self.missed_reasons.most_common()),
            "median_score_flagged": _median(self.flagged_scores),
            "median_score_unflagged": _median(self.missed_scores),
        }


def _median(xs: list[int]) -> float | None:
    return statistics.median(xs) if xs else None


@dataclass(slots=True)
class Figures:
    campaign_after: dict[str, Tally] = field(default_factory=dict)
    campaign_first: dict[str, Tally] = field(default_factory=dict)
    legit: dict[str, Tally] = field(default_factory=dict)
    legit_phase: dict[str, Tally] = field(default_factory=dict)  # headline classes by phase
    after: Tally = field(default_factory=Tally)
    first: Tally = field(default_factory=Tally)
    headline: Tally = field(default_factory=Tally)


def figures(sim: Simulation, r: Replay) -> Figures:
    fig = Figures()
    for i, c in enumerate(sim.calls):
        args = (r.flagged[i], r.would_block[i], r.scores[i], r.reasons[i])
        if c.label == CAMPAIGN:
            assert c.campaign_start is not None
            late = c.t - c.campaign_start >= GRACE_S
            per = fig.campaign_after if late else fig.campaign_first
            per.setdefault(c.cls, Tally()).add(*args)
            (fig.after if late else fig.first).add(*args)
            continue
        fig.legit.setdefault(c.cls, Tally()).add(*args)
        if c.cls not in STRESS_CLASSES:
            fig.headline.add(*args)
            phase = "warm-up" if c.t < sim.warmup_end else "campaign phase"
            fig.legit_phase.setdefault(phase, Tally()).add(*args)
    return fig


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%" if x >= 0.0001 or x == 0 else f"{100 * x:.4f}%"


def _top(counter: Counter[str], calls: int, k: int = 4) -> str:
    if not calls:
        return "-"
    return ", ".join(f"{code} {100 * n / calls:.0f}%" for code, n in counter.most_common(k)) or "-"


def targets(fig: Figures) -> list[tuple[str, str, str, bool]]:
    blocked = fig.headline.would_block
    return [
        (
            "campaign calls labelled or blocked, placed >= 1 min after the start",
            f">= {TARGET_DETECTION:.0%}",
            f"{_pct(fig.after.rate)} of {fig.after.calls:,}",
            fig.after.rate >= TARGET_DETECTION,
        ),
        (
            "legit calls labelled or blocked (unsigned bulk stress case apart)",
            f"<= {_pct(TARGET_LEGIT_LABELLED)}",
            f"{_pct(fig.headline.rate)} ({fig.headline.flagged:,} of {fig.headline.calls:,})",
            fig.headline.rate <= TARGET_LEGIT_LABELLED,
        ),
        (
            "legit calls blocked (lists, or block-high-confidence)",
            "0",
            f"{blocked:,}",
            blocked == 0,
        ),
    ]


def traffic_table(sim: Simulation) -> list[str]:
    """What the generator produced, so its assumptions can be checked."""
    by: dict[str, list[SimCall]] = {}
    for c in sim.calls:
        by.setdefault(c.cls, []).append(c)
    lines = [
        "## Simulated traffic",
        "",
        "| class | calls | numbers | ASR | answered < 10 s | median talk | A / B / C / unsigned "
        "| peers |",
        "|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for cls, calls in sorted(by.items(), key=lambda kv: (kv[0].startswith("campaign"), kv[0])):
        talks = [c.talk for c in calls if c.answered]
        att = Counter(c.attest for c in calls)
        mix = " / ".join(f"{100 * att[a] / len(calls):.0f}%" for a in ("A", "B", "C", None))
        numbers = len({c.caller for c in calls if c.caller is not None})
        withheld = sum(c.caller is None for c in calls)
        peers = ", ".join(sorted({c.peer for c in calls}))
        short = sum(t < 10 for t in talks) / max(1, len(talks))
        lines.append(
            f"| {cls} | {len(calls):,} | {numbers:,}"
            f"{f' (+{withheld:,} withheld)' if withheld else ''} | "
            f"{len(talks) / len(calls):.0%} | {short:.0%} | "
            f"{statistics.median(talks) if talks else 0:.0f} s | {mix} | {peers} |"
        )
    return lines


def markdown(
    sim: Simulation, r: Replay, fig: Figures, engine: ReputationEngine, meta: dict[str, Any]
) -> str:
    cfg = engine.cfg
    n = len(sim.calls)
    campaign_calls = fig.after.calls + fig.first.calls
    lines = [
        "# Reputation accuracy on simulated carrier traffic",
        "",
        f"seed {meta['seed']}, warm-up {(sim.warmup_end - sim.start) / 60:.0f} min + campaign "
        f"phase {meta['minutes']:g} min, scale {meta['scale']:g}: {n:,} calls "
        f"({n - campaign_calls:,} legit, {campaign_calls:,} campaign); source {meta['source']}",
        f"default config: label_at {cfg.label_at}, block_at {cfg.block_at}, carrier policy "
        f"{cfg.carrier_policy}; DNO artefact of {len(sim.dno_numbers)} numbers",
        "",
        "## Targets",
        "",
        "| target | limit | measured | result |",
        "|---|---|---|---|",
    ]
    for name, limit, measured, ok in targets(fig):
        lines.append(f"| {name} | {limit} | {measured} | {'PASS' if ok else 'MISS'} |")
    lines += ["", *traffic_table(sim)]
    lines += [
        "",
        "## Campaigns (ground truth: campaign)",
        "",
        "Detected = labelled or blocked. Reasons: share of the calls in that column "
        "whose verdict names the reason.",
        "",
        "| class | calls >= 1 min | detected | would block (hc) | first-minute calls | "
        "detected in 1st min | reasons when detected | reasons when missed | "
        "median score missed |",
        "|---|---:|---:|---:|---:|---:|---|---|---:|",
    ]
    for cls in sorted(fig.campaign_after.keys() | fig.campaign_first.keys()):
        a = fig.campaign_after.get(cls, Tally())
        f = fig.campaign_first.get(cls, Tally())
        missed = a.calls - a.flagged
        med = _median(a.missed_scores)
        lines.append(
            f"| {cls} | {a.calls:,} | {_pct(a.rate)} | {_pct(a.would_block / max(1, a.calls))} | "
            f"{f.calls:,} | {_pct(f.rate)} | {_top(a.flagged_reasons, a.flagged)} | "
            f"{_top(a.missed_reasons, missed)} | {'-' if med is None else f'{med:g}'} |"
        )
    a, f = fig.after, fig.first
    lines.append(
        f"| **all campaigns** | {a.calls:,} | {_pct(a.rate)} | "
        f"{_pct(a.would_block / max(1, a.calls))} | {f.calls:,} | {_pct(f.rate)} | | | |"
    )
    lines += [
        "",
        "## Legitimate traffic (ground truth: legit)",
        "",
        "| class | calls | labelled or blocked | rate | would block (hc) | "
        "reasons when flagged | median score flagged | p99 / max score |",
        "|---|---:|---:|---:|---:|---|---:|---:|",
    ]
    order = sorted(fig.legit, key=lambda k: (k in STRESS_CLASSES, -fig.legit[k].calls))
    rows = [(k, fig.legit[k]) for k in order if k not in STRESS_CLASSES]
    rows.append(("**headline (all of the above)**", fig.headline))
    rows += [(f"{k} (stress case)", fig.legit[k]) for k in order if k in STRESS_CLASSES]
    for name, t in rows:
        med = _median(t.flagged_scores)
        scores = sorted(t.flagged_scores + t.missed_scores)
        p99 = scores[int(0.99 * (len(scores) - 1))] if scores else 0
        lines.append(
            f"| {name} | {t.calls:,} | {t.flagged:,} | {_pct(t.rate)} | {t.would_block:,} | "
            f"{_top(t.flagged_reasons, t.flagged)} | {'-' if med is None else f'{med:g}'} | "
            f"{p99} / {scores[-1] if scores else 0} |"
        )
    phases = ", ".join(
        f"{p} {_pct(t.rate)} ({t.flagged:,} of {t.calls:,})" for p, t in fig.legit_phase.items()
    )
    lines += [
        "",
        f"Headline legit labelled by phase: {phases}.",
        "",
        "## Engine cost (informative, not a target)",
        "",
        f"record + screen: {1e6 * r.screen_s / n:.1f} us per call ({n:,} calls, "
        f"{r.screen_s:.2f} s); final + ended: "
        f"{1e6 * r.outcome_s / max(1, r.outcome_events):.1f} us per event "
        f"({r.outcome_events:,} events); whole run {meta['wall_s']:.1f} s "
        f"(generation {meta['generate_s']:.1f} s), Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs.",
        f"Engine tables at the end: {len(engine.callers):,} numbers "
        f"({engine.callers.evicted:,} evicted), {len(engine.ranges):,} thousands-blocks "
        f"({engine.ranges.evicted:,} evicted), {len(engine.peers)} peers, "
        f"{len(engine.calls):,} calls in progress.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--minutes", type=float, default=60.0, help="campaign-phase length")
    ap.add_argument("--scale", type=float, default=1.0, help="legit caller populations x S")
    ap.add_argument("--json", type=Path, default=RESULTS / "accuracy.json")
    ap.add_argument("--markdown", type=Path, default=RESULTS / "accuracy.md")
    args = ap.parse_args(argv)

    started = time.perf_counter()
    sim = generate(args.seed, args.minutes, args.scale)
    generate_s = time.perf_counter() - started
    # verstat is written by the carrier's own verification service in front of
    # the proxy on every trunk here, so it is believed from all of them
    cfg = parse_config({"reputation": {"verstat_from": ["198.51.100.0/24", "203.0.113.0/24"]}})
    slot = ArtefactSlot()
    with tempfile.TemporaryDirectory(prefix="accuracy-") as tmp:
        slot.current = dno_artefact(sim, Path(tmp))
        engine = ReputationEngine(cfg.reputation, slot)
        pipeline = build_pipeline(cfg.screening, slot, cfg.blocklists, engine)
        result = replay(sim, engine, pipeline)
        slot.current.close()
        slot.current = None
    fig = figures(sim, result)
    meta = {
        "seed": args.seed,
        "minutes": args.minutes,
        "scale": args.scale,
        "source": source_version(),
        "generate_s": generate_s,
        "wall_s": time.perf_counter() - started,
    }
    report = markdown(sim, result, fig, engine, meta)
    print(report)
    verdicts = targets(fig)
    for name, limit, measured, ok in verdicts:
        print(f"{'PASS' if ok else 'MISS'}  {name}: {measured} (target {limit})")
    print()
    args.markdown.parent.mkdir(parents=True, exist_ok=True)
    args.markdown.write_text(report, encoding="utf-8")
    print(f"wrote {args.markdown}")
    write_result(
        args.json,
        {
            "benchmark": "accuracy",
            **{k: meta[k] for k in ("seed", "minutes", "scale", "source")},
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "calls": len(sim.calls),
            "wall_s": round(meta["wall_s"], 2),
            "record_screen_us_per_call": round(1e6 * result.screen_s / len(sim.calls), 2),
            "final_ended_us_per_event": round(
                1e6 * result.outcome_s / max(1, result.outcome_events), 2
            ),
            "targets": [
                {"target": n, "limit": lim, "measured": m, "passed": ok}
                for n, lim, m, ok in verdicts
            ],
            "campaigns_after_first_minute": fig.after.json(),
            "campaigns_first_minute": fig.first.json(),
            "legit_headline": fig.headline.json(),
            "legit_by_phase": {p: t.json() for p, t in fig.legit_phase.items()},
            "campaign_classes": {
                c: {
                    "after_first_minute": fig.campaign_after.get(c, Tally()).json(),
                    "first_minute": fig.campaign_first.get(c, Tally()).json(),
                    "start": sim.campaign_starts[c],
                }
                for c in sorted(sim.campaign_starts)
            },
            "legit_classes": {c: t.json() for c, t in sorted(fig.legit.items())},
            "stress_classes": sorted(STRESS_CLASSES),
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
