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

DECREASE = 0.8  # admitted share kept per probe under pressure (multiplicative decrease)
INCREASE = 0.02  # admitted share added per calm probe (additive increase: 5 s from 0 to all)
CALM = 0.5  # pressure under which the share grows again


class OverloadGuard:
    """Admission control for new calls, probed every 100 ms.

    Pressure is the larger of loop lag / overload_lag and receive queue /
    overload_backlog. Above 1, the share of new calls admitted shrinks by a
    fifth per probe, unless the pressure is already falling (the queue is
    draining: cutting more would refuse calls the worker could take); under
    0.5 it grows back by 2 points per probe; in between it holds. Shedding
    only the excess keeps the worker at its capacity: refusing every new
    call until a calm second (the first design) halved what it completed at
    1.5 times its maximum rate (measured with ``python -m loadtest``)."""

    def __init__(self, lag_limit: float, backlog_limit: int) -> None:
        self.lag_limit = lag_limit
        self.backlog_limit = backlog_limit
        self.admit = 1.0  # share of new calls admitted
        self.cause = ""
        self._last = 0.0  # the previous probe's pressure

    @property
    def overloaded(self) -> bool:
        return self.admit < 1.0

    def pressure(self, lag: float, backlog: int) -> tuple[float, str]:
        by_lag = lag / self.lag_limit if self.lag_limit > 0 else 0.0
        by_backlog = backlog / self.backlog_limit if self.backlog_limit > 0 else 0.0
        if by_lag >= by_backlog:
            return by_lag, "loop-lag"
        return by_backlog, "receive-backlog"

    def probe(self, lag: float, backlog: int) -> float:
        """Feed one probe; returns the share of new calls to admit now."""
        pressure, cause = self.pressure(lag, backlog)
        falling, self._last = pressure < self._last, pressure
        if pressure > 1.0:
            if not falling:
                self.admit *= DECREASE
            self.cause = cause
        elif pressure < CALM and self.admit < 1.0:
            self.admit = min(1.0, self.admit + INCREASE)
            if self.admit == 1.0:
                self.cause = ""
        return self.admit


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
