"""Prometheus metrics, fed from the core's events by the edges."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge

from .events import Dropped, Event, Forwarded, Malformed, PingAnswered, Replied, Screened, Send
from .routing import SwitchPool, SwitchState


class Metrics:
    def __init__(self, pool: SwitchPool, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
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
        self.pings = Counter(
            "rs_switch_ping_responses", "OPTIONS health-check responses", ["switch"], registry=r
        )
        self._children: dict[tuple[Counter, tuple[str, ...]], Counter] = {}
        self.switch_up = Gauge(
            "rs_switch_up", "1 when the switch is healthy", ["switch"], registry=r
        )
        for state in pool.states:
            self.switch_up.labels(state.cfg.name).set_function(_up_reader(state))

    def _inc(self, metric: Counter, labels: tuple[str, ...], amount: float = 1.0) -> None:
        """``metric.labels(...).inc()`` with the child cached: labels() costs
        microseconds per call, and every label value here is from a bounded set."""
        key = (metric, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        child.inc(amount)

    def record(self, events: list[Event]) -> None:
        inc = self._inc
        for ev in events:
            if isinstance(ev, Send):
                inc(self.sent_bytes, (ev.dest.transport,), len(ev.data))
            elif isinstance(ev, Forwarded):
                inc(self.forwarded, (ev.kind, method_label(ev.method)))
            elif isinstance(ev, Replied):
                inc(self.replied, (str(ev.status),))
            elif isinstance(ev, Malformed):
                inc(self.parse_errors, (str(ev.status),))
            elif isinstance(ev, Dropped):
                inc(self.dropped, (ev.reason,))
            elif isinstance(ev, Screened):
                inc(self.verdicts, (ev.action.value, method_label(ev.call.method)))
                result = ev.screening
                if result.decided_by:
                    inc(self.decided_by, (result.decided_by,))
                for name, verdict in result.observed:
                    inc(self.observed, (name, verdict.action.value))
                for name in result.failed:
                    inc(self.check_errors, (name,))
            elif isinstance(ev, PingAnswered):
                inc(self.pings, (ev.switch,))


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


def method_label(method: str) -> str:
    return method if method in KNOWN_METHODS else "other"


def _up_reader(state: SwitchState) -> Callable[[], float]:
    return lambda: 1.0 if state.up else 0.0
