"""Peer statistics and actions as Prometheus metrics, labelled by peer (the
[[peers]] names and "unknown": a bounded set), and the hook that feeds the
statistics from the events the worker already counts."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..events import Event
from ..metrics import Metrics
from ..peers import PEER_ACTIONS
from ..routing import SwitchPool
from . import stats as s
from .rmd import STANDINGS
from .service import PeerService


class StatsMetrics(Metrics):
    """The worker's metrics, also feeding the per-peer rolling statistics:
    the screened calls and call outcomes ``Metrics`` counts one by one are
    handed to them as well (at most two events per call)."""

    def __init__(
        self,
        pool: SwitchPool,
        service: PeerService,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(pool, peers=service.actions.directory)
        self.peer_stats = service.stats
        self.clock = clock
        self.registry.register(PeerCollector(service, clock))

    def _record_other(self, ev: Event) -> None:
        super()._record_other(ev)
        self.peer_stats.observe(ev, self.clock())


class PeerCollector(Collector):
    def __init__(self, service: PeerService, clock: Callable[[], float]) -> None:
        self.service = service
        self.clock = clock

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        yield from self._windows()
        yield from self._actions()
        yield from self._rmd()

    def _windows(self) -> Iterator[Metric]:
        now = self.clock()
        stats = self.service.stats

        def gauge(name: str, text: str, *extra: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, text, labels=["peer", "window", *extra])

        calls = gauge("rs_peer_window_calls", "Screened calls per peer over the window")
        flagged = gauge(
            "rs_peer_flagged_ratio",
            "Share of a peer's assessed calls the analytics labelled or blocked over the window "
            "(calls a peer action refused are not assessed)",
        )
        attest = gauge(
            "rs_peer_attestation_ratio",
            "Share of a peer's calls by STIR/SHAKEN attestation claimed, over the window",
            "level",
        )
        asr = gauge("rs_peer_answer_seizure_ratio", "Answered share of final responses (ASR)")
        acd = gauge(
            "rs_peer_average_call_duration_seconds", "Mean duration of answered calls (ACD)"
        )
        short = gauge(
            "rs_peer_short_call_ratio",
            "Share of answered calls shorter than [reputation] short_call_seconds",
        )
        for peer in stats.directory.names:
            for window in s.WINDOWS:
                t = stats.totals(peer, window, now)
                labels = [peer, window]
                calls.add_metric(labels, t[s.CALLS])
                _ratio(flagged, labels, t[s.FLAGGED], t[s.ASSESSED])
                for level, k in s.ATTESTATIONS:
                    _ratio(attest, [*labels, level], t[k], t[s.CALLS])
                _ratio(asr, labels, t[s.ANSWERED], t[s.FINALS])
                _ratio(acd, labels, t[s.TALK], t[s.ENDED])
                _ratio(short, labels, t[s.SHORT], t[s.ENDED])
        yield from (calls, flagged, attest, asr, acd, short)

    def _actions(self) -> Iterator[Metric]:
        actions = self.service.actions
        effective = GaugeMetricFamily(
            "rs_peer_action",
            "1 for each declared peer's effective action ([peer_policy] mode says if applied)",
            labels=["peer", "action"],
        )
        standing = GaugeMetricFamily(
            "rs_peer_rmd_standing",
            "1 for each declared peer's standing in the Robocall Mitigation Database",
            labels=["peer", "status"],
        )
        for name, view in actions.views.items():
            for action in PEER_ACTIONS:
                effective.add_metric([name, action], float(view.effective.action == action))
            for status in STANDINGS:
                standing.add_metric([name, status], float(view.standing.status == status))
        throttled = CounterMetricFamily(
            "rs_peer_throttled_calls",
            "Calls answered 503 because their peer was over its throttle rate",
            labels=["peer"],
        )
        for name, count in actions.throttled.items():
            throttled.add_metric([name], float(count))
        overrides = GaugeMetricFamily(
            "rs_peer_overrides", "Peers whose action an operator has overridden"
        )
        overrides.add_metric([], float(len(actions.overrides)))
        yield from (effective, standing, throttled, overrides)

    def _rmd(self) -> Iterator[Metric]:
        actions = self.service.actions
        data = actions.rmd
        failing = GaugeMetricFamily(
            "rs_peer_rmd_import_failing",
            "1 while the last RMD import failed (the data loaded before stays in force)",
        )
        failing.add_metric([], float(actions.rmd_error is not None))
        filings = GaugeMetricFamily("rs_peer_rmd_filings", "Filings in the loaded RMD export")
        filings.add_metric([], float(data.filings) if data else 0.0)
        problems = GaugeMetricFamily(
            "rs_peer_rmd_row_problems", "Rows of the loaded RMD export with a problem"
        )
        problems.add_metric([], float(data.problem_count) if data else 0.0)
        loaded = GaugeMetricFamily(
            "rs_peer_rmd_loaded_timestamp_seconds", "When the loaded RMD export was read"
        )
        loaded.add_metric([], data.loaded_at if data else 0.0)
        yield from (failing, filings, problems, loaded)


def _ratio(family: GaugeMetricFamily, labels: list[str], part: float, whole: float) -> None:
    """No sample without a denominator: an ASR of 0 from no calls would alert."""
    if whole:
        family.add_metric(labels, part / whole)
