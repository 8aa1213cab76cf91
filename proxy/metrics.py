"""Prometheus metrics, fed from the core's events by the edges."""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from .events import (
    CallOutcome,
    Dropped,
    Event,
    Forwarded,
    KernelDrop,
    Limited,
    Malformed,
    PingAnswered,
    Received,
    Replied,
    Screened,
    Send,
    Shed,
)
from .flood import FloodGuard
from .peers import PeerDirectory
from .reputation import ReputationEngine
from .reputation.traffic import TrafficTable
from .routing import SwitchPool, SwitchState
from .stir.certs import CertificateCache
from .subscribers.service import SubscriberService

# seconds; screening and transit take tens of µs to a few ms
LATENCY_BUCKETS = (
    10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 100e-3,
)  # fmt: skip


class Metrics:
    def __init__(
        self,
        pool: SwitchPool,
        registry: CollectorRegistry | None = None,
        peers: PeerDirectory | None = None,
    ) -> None:
        self.registry = registry or CollectorRegistry()
        self.peers = peers or PeerDirectory(())
        r = self.registry
        # Events of one message are counted in plain ints and added to the
        # Prometheus children when the registry is collected: this collector
        # is registered first, so every scrape sees them.
        self._pending: dict[tuple[str, str, str, str], int] = {}
        self._pending_bytes: dict[str, int] = {}
        self._pending_received: dict[str, int] = {}
        r.register(_Flush(self.flush))
        self.messages_in = Counter(
            "rs_sip_messages_received",
            "SIP messages parsed, by kind, method and status class (responses)",
            ["kind", "method", "status_class"],
            registry=r,
        )
        self.messages_out = Counter(
            "rs_sip_messages_sent",
            "SIP messages sent: forwarded or answered by the proxy itself",
            ["kind", "method", "status_class"],
            registry=r,
        )
        self.screening_seconds = Histogram(
            "rs_screening_duration_seconds",
            "Time the screening chain took per INVITE or MESSAGE",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        # observed for every message: plain counts, exported at scrape time
        self.transit_seconds = PlainHistogram(
            "rs_sip_transit_seconds",
            "Time from a message's arrival to its forwarded or answered bytes being sent",
            LATENCY_BUCKETS,
        )
        r.register(self.transit_seconds)
        self.peer_calls = Counter(
            "rs_peer_calls",
            "Screened INVITEs and MESSAGEs per upstream peer, by action",
            ["peer", "action"],
            registry=r,
        )
        self.peer_attestation = Counter(
            "rs_peer_attestation",
            "Screened calls per upstream peer by STIR/SHAKEN attestation claimed",
            ["peer", "level"],
            registry=r,
        )
        self.peer_finals = Counter(
            "rs_peer_call_finals",
            "Final responses from a switch to screened INVITEs, per peer (ASR = answered / "
            "all); the proxy's own rejections are not seizures and are not counted",
            ["peer", "answered"],
            registry=r,
        )
        self.peer_talk = Counter(
            "rs_peer_answered_call_seconds",
            "Summed duration of answered calls per peer, counted at the BYE (ACD)",
            ["peer"],
            registry=r,
        )
        self.peer_ended = Counter(
            "rs_peer_answered_calls_ended",
            "Answered calls per peer whose BYE the proxy saw",
            ["peer"],
            registry=r,
        )
        self.stir_results = Counter(
            "rs_stir_verifications",
            "STIR/SHAKEN verifications of incoming calls, by verstat result, reason and the "
            "attestation verified (none unless passed)",
            ["result", "reason", "attest"],
            registry=r,
        )
        self.shed = Counter(
            "rs_sip_shed", "New calls refused with 503 while overloaded", ["method"], registry=r
        )
        self.repeats = Counter(
            "rs_sip_retransmissions",
            "Retransmitted INVITEs and MESSAGEs answered again but not counted as new calls",
            ["method"],
            registry=r,
        )
        self.overloaded = Gauge(
            "rs_overloaded",
            "1 while the worker sheds new calls (loop lag or receive backlog)",
            registry=r,
        )
        self.admitted = Gauge(
            "rs_new_calls_admitted_ratio",
            "Share of new calls the worker admits; the rest get 503 (1: not overloaded)",
            registry=r,
        )
        self.admitted.set(1.0)
        self.loop_lag = Gauge(
            "rs_event_loop_lag_seconds",
            "How late the event loop ran a timer, worst over the last second",
            registry=r,
        )
        self.received = Counter(
            "rs_sip_received", "SIP messages received", ["transport"], registry=r
        )
        self.parse_errors = Counter(
            "rs_sip_parse_errors", "Messages rejected by the parser", ["status"], registry=r
        )
        self.forwarded = Counter(
            "rs_sip_forwarded", "Messages forwarded", ["kind", "method"], registry=r
        )
        self.replied = Counter(
            "rs_sip_local_replies", "Responses the proxy generated itself", ["status"], registry=r
        )
        self.dropped = Counter(
            "rs_sip_dropped", "Messages dropped or absorbed", ["reason"], registry=r
        )
        self.sent_bytes = Counter("rs_sip_sent_bytes", "Bytes sent", ["transport"], registry=r)
        self.send_errors = Counter(
            "rs_sip_send_errors", "Sends that failed at the transport", ["transport"], registry=r
        )
        self.tcp_closed = Counter(
            "rs_tcp_closed",
            "TCP connections refused or cut off, by reason ([sip.limits], framing, idleness)",
            ["reason"],
            registry=r,
        )
        self.verdicts = Counter(
            "rs_screening_verdicts",
            "Screening verdicts acted upon",
            ["action", "method"],
            registry=r,
        )
        self.observed = Counter(
            "rs_screening_observed",
            "Verdicts of checks in observe mode (recorded, not enforced)",
            ["check", "action"],
            registry=r,
        )
        self.check_errors = Counter(
            "rs_screening_check_errors", "Checks that raised (failed open)", ["check"], registry=r
        )
        self.decided_by = Counter(
            "rs_screening_decided", "Which check decided the verdict", ["check"], registry=r
        )
        self.reasons = Counter(
            "rs_screening_reasons",
            "Reason codes of verdicts acted upon (one call can carry several)",
            ["action", "reason"],
            registry=r,
        )
        self.scores = Histogram(
            "rs_screening_score",
            "Score of each screened call (0-100)",
            buckets=(10, 20, 30, 40, 50, 60, 70, 80, 90, 100),
            registry=r,
        )
        self.flood_limited = Counter(
            "rs_flood_limited",
            "Messages over a [flood] limit, by scope (ip: source address, caller: caller "
            "number) and action (drop, 503)",
            ["scope", "action"],
            registry=r,
        )
        self.kernel_drops = Counter(
            "rs_flood_kernel_drops",
            "Source addresses handed to the kernel to drop ([flood] kernel_drop)",
            registry=r,
        )
        self.pings = Counter(
            "rs_switch_ping_responses", "OPTIONS health-check responses", ["switch"], registry=r
        )
        self._children: dict[tuple[Counter, tuple[str, ...]], Counter] = {}
        self.switch_up = Gauge(
            "rs_switch_up", "1 when the switch is healthy", ["switch"], registry=r
        )
        for state in pool.states:
            self.switch_up.labels(state.cfg.name).set_function(_up_reader(state))

    def receive_counter(self, transport: str) -> Callable[[], None]:
        """What an edge calls per message it receives (a plain count)."""

        def received() -> None:
            pending = self._pending_received
            pending[transport] = pending.get(transport, 0) + 1

        self.received.labels(transport)  # at 0 from the start
        return received

    def watch_certificates(self, cache: Callable[[], CertificateCache | None]) -> FetchHook:
        """The STIR certificate cache's counters, read at scrape time; returns
        the hook the cache calls with each fetch's duration."""
        self.registry.register(_CertificateCollector(cache))
        fetch_seconds = PlainHistogram(
            "rs_stir_certificate_fetch_seconds",
            "Time to fetch an STI certificate (x5u) over HTTPS, successful or not",
            FETCH_BUCKETS,
        )
        self.registry.register(fetch_seconds)
        return lambda seconds, ok: fetch_seconds.observe(seconds)

    def watch_tcp(self, connections: Callable[[], int], buffered: Callable[[], int]) -> None:
        """The TCP edge's open connections and bytes of unfinished messages."""
        Gauge(
            "rs_tcp_connections", "Open TCP connections, in and out", registry=self.registry
        ).set_function(lambda: float(connections()))
        Gauge(
            "rs_tcp_buffered_bytes",
            "Bytes of TCP messages received but not yet complete",
            registry=self.registry,
        ).set_function(lambda: float(buffered()))

    def watch_flood(self, guard: Callable[[], FloodGuard | None]) -> None:
        """The [flood] tables' sizes, read at scrape time; the limited
        counts start at 0 for the configured action, so rates have data."""
        g = guard()
        if g is not None:
            for scope in ("ip", "caller"):
                self.flood_limited.labels(scope, g.cfg.action)

        def tracked(table: str) -> Callable[[], float]:
            def size() -> float:
                current = guard()
                if current is None:
                    return 0.0
                return float(len(current.ips if table == "ips" else current.callers))

            return size

        gauge = Gauge(
            "rs_flood_tracked",
            "Source addresses (ips) and caller numbers (callers) with a [flood] token bucket",
            ["table"],
            registry=self.registry,
        )
        for table in ("ips", "callers"):
            gauge.labels(table).set_function(tracked(table))

    def watch_reputation(self, engine: Callable[[], ReputationEngine | None]) -> None:
        """Read at scrape time; ``engine`` is asked each time since a reload
        can replace or remove the engine."""
        self.registry.register(_ReputationCollector(engine))

    def watch_subscribers(self, service: SubscriberService) -> None:
        subscribers = Gauge(
            "rs_subscribers",
            "Subscribers by blocking policy (not-opted-in: known, service off)",
            ["policy"],
            registry=self.registry,
        )

        def count(policy: str) -> Callable[[], float]:
            return lambda: float(service.counts.get(policy, 0))

        for policy in service.by_policy():
            subscribers.labels(policy).set_function(count(policy))
        Gauge(
            "rs_disputes_open", "Redress disputes waiting for an answer", registry=self.registry
        ).set_function(lambda: len(service.open))
        Gauge(
            "rs_disputes_oldest_open_age_seconds",
            "Age of the oldest open dispute (answer within 24 hours)",
            registry=self.registry,
        ).set_function(lambda: time.time() - min(service.open.values()) if service.open else 0.0)

    def _inc(self, metric: Counter, labels: tuple[str, ...], amount: float = 1.0) -> None:
        """``metric.labels(...).inc()`` with the child cached: labels() costs
        microseconds per call, and every label value here is from a bounded set."""
        key = (metric, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        child.inc(amount)

    def flush(self) -> None:
        """Add the counts pending since the last flush to the Prometheus
        children (every scrape does this first)."""
        pending, self._pending = self._pending, {}
        sent, self._pending_bytes = self._pending_bytes, {}
        arrived, self._pending_received = self._pending_received, {}
        inc = self._inc
        for transport, n in arrived.items():
            inc(self.received, (transport,), n)
        for transport, size in sent.items():
            inc(self.sent_bytes, (transport,), size)
        for (group, a, b, c), n in pending.items():
            if group == "in":
                inc(self.messages_in, (a, b, c), n)
            elif group == "fwd":
                inc(self.forwarded, (a, b), n)
                inc(self.messages_out, (a, b, c), n)
            elif group == "reply":
                inc(self.replied, (a,), n)
                inc(self.messages_out, ("response", b, c), n)
            elif group == "malformed":
                inc(self.parse_errors, (a,), n)
            elif group == "flood":
                inc(self.flood_limited, (a, b), n)
            else:
                inc(self.dropped, (a,), n)

    def record(self, events: list[Event]) -> None:
        """Counts the events; the counters see them at the next flush."""
        pending = self._pending
        key: tuple[str, str, str, str]
        for ev in events:
            if isinstance(ev, Send):
                transport = ev.dest.transport
                sent = self._pending_bytes
                sent[transport] = sent.get(transport, 0) + len(ev.data)
                continue
            if isinstance(ev, Received):
                key = ("in", ev.kind, _method(ev.method), _status_class(ev.status))
            elif isinstance(ev, Forwarded):
                key = ("fwd", ev.kind, _method(ev.method), _status_class(ev.status))
            elif isinstance(ev, Replied):
                status = ev.status
                key = ("reply", str(status), _method(ev.method), f"{status // 100}xx")
            elif isinstance(ev, Malformed):
                key = ("malformed", str(ev.status), "", "")
            elif isinstance(ev, Dropped):
                key = ("dropped", ev.reason, "", "")
            elif isinstance(ev, Limited):
                key = ("flood", ev.scope, ev.action, "")
            else:
                self._record_other(ev)
                continue
            pending[key] = pending.get(key, 0) + 1

    def _record_other(self, ev: Event) -> None:
        """Screened calls, call outcomes, shed calls and ping answers: at most
        one per call, counted straight into Prometheus."""
        inc = self._inc
        if isinstance(ev, Screened):
            if ev.repeat:
                inc(self.repeats, (method_label(ev.call.method),))
                return
            action = ev.action.value
            inc(self.verdicts, (action, method_label(ev.call.method)))
            result = ev.screening
            for reason in result.verdict.reasons:
                inc(self.reasons, (action, reason))
            self.scores.observe(result.verdict.score)
            if ev.elapsed:
                self.screening_seconds.observe(ev.elapsed)
            peer = self.peers.name_of(ev.call.source)
            inc(self.peer_calls, (peer, action))
            inc(self.peer_attestation, (peer, ev.call.attest or "none"))
            if result.decided_by:
                inc(self.decided_by, (result.decided_by,))
            for name, verdict in result.observed:
                inc(self.observed, (name, verdict.action.value))
            for name in result.failed:
                inc(self.check_errors, (name,))
            call = ev.call
            if call.verified is not None:
                attest = (
                    call.attest or "none" if call.verified == "TN-Validation-Passed" else "none"
                )
                inc(self.stir_results, (call.verified, call.verify_reason or "", attest))
        elif isinstance(ev, CallOutcome):
            peer = self.peers.name_of(ev.source)
            if ev.answered is not None:
                inc(self.peer_finals, (peer, "true" if ev.answered else "false"))
            if ev.duration is not None:
                inc(self.peer_talk, (peer,), ev.duration)
                inc(self.peer_ended, (peer,))
        elif isinstance(ev, Shed):
            inc(self.shed, (method_label(ev.method),))
        elif isinstance(ev, PingAnswered):
            inc(self.pings, (ev.switch,))
        elif isinstance(ev, KernelDrop):
            self.kernel_drops.inc()


# Methods get their own label; anything else is "other", so a peer inventing
# methods cannot create unbounded time series.
KNOWN_METHODS = frozenset(
    [
        "INVITE",
        "ACK",
        "CANCEL",
        "BYE",
        "OPTIONS",
        "MESSAGE",
        "PRACK",
        "UPDATE",
        "INFO",
        "REFER",
        "NOTIFY",
        "SUBSCRIBE",
        "REGISTER",
        "PUBLISH",
    ]
)


class _Flush(Collector):
    """Collects nothing itself: it only flushes ``Metrics``' pending counts
    before the counters after it are collected."""

    def __init__(self, flush: Callable[[], None]) -> None:
        self._flush = flush

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        self._flush()
        return iter(())


class _ReputationCollector(Collector):
    """The reputation engine's table sizes (gauges) and evictions (counters)."""

    def __init__(self, engine: Callable[[], ReputationEngine | None]) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        e = self.engine()
        tracked = GaugeMetricFamily(
            "rs_reputation_tracked",
            "Entries held by the reputation engine, by table (bounded by [reputation] max_*)",
            labels=["table"],
        )
        evicted = CounterMetricFamily(
            "rs_reputation_evicted",
            "Entries evicted as least recently seen since start, by table",
            labels=["table"],
        )
        tables: dict[str, TrafficTable[Any]] = (
            {"callers": e.callers, "ranges": e.ranges, "peers": e.peers} if e else {}
        )
        for name in ("callers", "ranges", "peers"):
            table = tables.get(name)
            tracked.add_metric([name], float(len(table)) if table is not None else 0.0)
            evicted.add_metric([name], float(table.evicted) if table is not None else 0.0)
        tracked.add_metric(["calls"], float(len(e.calls)) if e else 0.0)
        yield tracked
        yield evicted


def _method(method: str) -> str:
    return method if method in KNOWN_METHODS else "other"


_STATUS_CLASSES = {status: f"{status // 100}xx" for status in range(100, 700)}
_STATUS_CLASSES[0] = "request"


def _status_class(status: int) -> str:
    return _STATUS_CLASSES.get(status) or status_class(status)


def method_label(method: str) -> str:
    return method if method in KNOWN_METHODS else "other"


def status_class(status: int) -> str:
    """ "1xx" to "6xx" for responses; "request" for requests (status 0)."""
    return f"{status // 100}xx" if status else "request"


def _up_reader(state: SwitchState) -> Callable[[], float]:
    return lambda: 1.0 if state.up else 0.0


class PlainHistogram(Collector):
    """A histogram without labels for values observed per message: a bucket
    index and two additions per observation, where prometheus-client's takes
    a lock and walks its buckets (about 2 µs here)."""

    def __init__(self, name: str, documentation: str, bounds: tuple[float, ...]) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def describe(self) -> list[Metric]:
        return [HistogramMetricFamily(self.name, self.documentation)]

    def collect(self) -> Iterator[Metric]:
        cumulative, buckets = 0, []
        labels = (*map(floatToGoString, self.bounds), "+Inf")
        for bound, count in zip(labels, self.counts, strict=True):
            cumulative += count
            buckets.append((bound, cumulative))
        family = HistogramMetricFamily(self.name, self.documentation)
        family.add_metric([], buckets, self.sum)
        yield family


FETCH_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, 2.0, 5.0)
FetchHook = Callable[[float, bool], None]


class _CertificateCollector(Collector):
    def __init__(self, cache: Callable[[], CertificateCache | None]) -> None:
        self.cache = cache

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        cache = self.cache()
        if cache is None:
            return
        lookups = CounterMetricFamily(
            "rs_stir_certificate_lookups",
            "Certificate cache lookups on the call path: hit, negative (a remembered "
            "failure) or miss",
            labels=["outcome"],
        )
        for outcome, value in (
            ("hit", cache.hits), ("negative", cache.negative_hits), ("miss", cache.misses)
        ):  # fmt: skip
            lookups.add_metric([outcome], value)
        fetches = CounterMetricFamily(
            "rs_stir_certificate_fetches",
            "Certificate fetches by outcome: ok, fetch-error, invalid (chain refused), busy",
            labels=["outcome"],
        )
        failed = cache.fetch_errors + cache.invalid
        for outcome, value in (
            ("ok", cache.fetches - failed), ("fetch-error", cache.fetch_errors),
            ("invalid", cache.invalid), ("busy", cache.busy),
        ):  # fmt: skip
            fetches.add_metric([outcome], max(0, value))
        cached = GaugeMetricFamily("rs_stir_certificates_cached", "Certificates in the cache")
        cached.add_metric([], len(cache))
        yield lookups
        yield fetches
        yield cached
