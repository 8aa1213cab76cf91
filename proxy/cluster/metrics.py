"""The link's Prometheus metrics (rs_cluster_*)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from .link import ClusterLink


class ClusterCollector(Collector):
    def __init__(self, link: ClusterLink) -> None:
        self.link = link

    def collect(self) -> Iterator[Metric]:
        link = self.link
        yield GaugeMetricFamily(
            "rs_cluster_degraded",
            "1 while Redis is unreachable: screening runs on this node's own state",
            value=int(link.degraded),
        )
        yield GaugeMetricFamily(
            "rs_cluster_pending_rows",
            "Counter rows not yet known to be in Redis (the batch being sent included)",
            value=link.outbox.waiting,
        )
        yield GaugeMetricFamily(
            "rs_cluster_last_sync_timestamp_seconds",
            "When counters last reached Redis (Unix time; 0: never)",
            value=link.last_sync,
        )
        yield GaugeMetricFamily(
            "rs_cluster_blocklist_mismatch",
            "1 when another node announced a blocklist version this node could not load",
            value=int(link.lists_mismatch),
        )
        rows = CounterMetricFamily(
            "rs_cluster_rows", "Counter rows exchanged with the other nodes", labels=["direction"]
        )
        rows.add_metric(["sent"], link.sent_rows)
        rows.add_metric(["received"], link.received_rows)
        rows.add_metric(["dropped"], link.dropped_rows)
        yield rows
        yield CounterMetricFamily(
            "rs_cluster_duplicate_batches",
            "Counter batches received again (an XADD retried after it had landed) and skipped",
            value=link.duplicate_batches,
        )
        yield CounterMetricFamily(
            "rs_cluster_remote_calls",
            "Calls other nodes saw, merged into this node's counters",
            value=link.received_calls,
        )
        changes = CounterMetricFamily(
            "rs_cluster_subscriber_changes",
            "Subscriber changes published to or applied from other nodes",
            labels=["direction"],
        )
        changes.add_metric(["published"], link.published_changes)
        changes.add_metric(["applied"], link.applied_changes)
        yield changes
        yield CounterMetricFamily(
            "rs_cluster_dispute_events",
            "Redress disputes filed or resolved, published to or applied from other nodes",
            value=link.dispute_events,
        )
        yield CounterMetricFamily(
            "rs_cluster_errors", "Redis operations that failed", value=link.errors
        )
        yield CounterMetricFamily(
            "rs_cluster_bad_entries",
            "Stream entries skipped as unreadable or failed to apply",
            value=link.bad_entries,
        )
