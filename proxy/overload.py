"""When a worker sheds new calls, and how full its UDP receive queue is.

Two signs that a worker is behind: its event loop runs a timer late, or
datagrams pile up in the kernel's receive queue. The second comes first when
a burst arrives faster than the loop drains it; by the time the loop is late,
the queue may already be overflowing, and an overflowing queue drops BYEs and
200s as readily as new INVITEs, which is what turns an overload into a
retransmission storm. Shedding new calls with a cheap 503 keeps the queue
short, so the calls already up keep their messages.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

CALM_PROBES = 10  # probes in a row under half the limits before calls are taken again


class OverloadGuard:
    def __init__(self, lag_limit: float, backlog_limit: int) -> None:
        self.lag_limit = lag_limit
        self.backlog_limit = backlog_limit
        self.overloaded = False
        self.cause = ""
        self._calm = 0

    def probe(self, lag: float, backlog: int) -> bool:
        """Feed one probe; returns whether new calls are shed now."""
        lag_high = self.lag_limit > 0 and lag > self.lag_limit
        backlog_high = self.backlog_limit > 0 and backlog > self.backlog_limit
        if lag_high or backlog_high:
            self.overloaded = True
            self.cause = "loop-lag" if lag_high else "receive-backlog"
            self._calm = 0
            return True
        calm = (self.lag_limit <= 0 or lag < self.lag_limit / 2) and (
            self.backlog_limit <= 0 or backlog < self.backlog_limit / 2
        )
        self._calm = self._calm + 1 if calm else 0
        if self._calm >= CALM_PROBES:
            self.overloaded = False
            self.cause = ""
        return self.overloaded


@dataclass(frozen=True, slots=True)
class QueueState:
    queued_bytes: int  # what the kernel holds for the socket (its accounting, with overhead)
    drops: int  # datagrams the kernel dropped on this socket since it was opened


class UdpQueueReader:
    """Reads a UDP socket's queue from /proc/self/net/udp{,6}, found by the
    socket's inode: the only per-socket view of the whole queue (FIONREAD
    gives just the next datagram's size) and of the drops."""

    def __init__(self, sock: socket.socket) -> None:
        self.inode = f" {os.fstat(sock.fileno()).st_ino} "
        family = "udp6" if sock.family == socket.AF_INET6 else "udp"
        self.path = f"/proc/self/net/{family}"

    def read(self) -> QueueState | None:
        try:
            with open(self.path, encoding="ascii") as table:
                for line in table:
                    if self.inode in line:
                        return parse_udp_line(line)
        except OSError:
            return None
        return None


def parse_udp_line(line: str) -> QueueState:
    """One row: sl local rem st tx_queue:rx_queue tr:when retrnsmt uid timeout
    inode ref pointer drops; the queues are hexadecimal byte counts."""
    fields = line.split()
    rx_queue = int(fields[4].partition(":")[2], 16)
    return QueueState(rx_queue, int(fields[12]))


class QueueMetrics:
    """The SIP socket's queue and drops, read when Prometheus scrapes."""

    def __init__(self, reader: UdpQueueReader) -> None:
        self.reader = reader

    def collect(self) -> Iterator[Metric]:
        state = self.reader.read()
        if state is None:
            return
        queued = GaugeMetricFamily(
            "rs_sip_udp_receive_queue_bytes",
            "Bytes waiting in the SIP UDP socket's kernel receive queue",
        )
        queued.add_metric([], state.queued_bytes)
        drops = CounterMetricFamily(
            "rs_sip_udp_receive_drops",
            "Datagrams the kernel dropped on the SIP UDP socket (receive queue full)",
        )
        drops.add_metric([], state.drops)
        yield queued
        yield drops
