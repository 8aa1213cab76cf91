"""The decision recorder: the event loop appends, a thread writes.

``add`` is the only call on the loop's per-call path: one length check and
one ``deque.append`` of the event as it is (no formatting). A writer thread
wakes every ``POLL`` seconds, takes what is pending, turns the events into
rows (decoding the PASSporT's origid there, off the loop) and inserts them
with one ``executemany`` per day file in one transaction.

The queue is bounded by ``max_pending`` records: when the writer falls that
far behind (a stalled disk, a locked file), further records are dropped and
counted (``rs_records_dropped_total{reason="queue-full"}``) rather than
growing the worker's memory without bound. A batch the database refuses
(disk full, corrupt file) is logged and counted as ``reason="write-error"``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ..events import Screened
from .settings import RecordsConfig
from .store import DayWriter, Row, day_of, row_of

log = logging.getLogger("robocall_shield.records")

POLL = 0.1  # seconds between the writer's looks at the queue
BATCH = 1_000  # records per transaction at most
YIELD_EVERY = 64  # rows built between offers of the GIL to the event loop
SWEEP_INTERVAL = 3600.0  # seconds between retention sweeps (see DecisionRecorder.sweep)

Pending = tuple[Screened, float, str]


class DecisionRecorder:
    """Owned by the worker: ``add`` on the loop, ``sweep`` from a background
    task, ``close`` at stop. Raises OSError at construction when the
    directory cannot be made."""

    def __init__(
        self, cfg: RecordsConfig, clock: Callable[[], float] = time.time, poll: float = POLL
    ) -> None:
        self.cfg = cfg
        self.directory = Path(cfg.dir)
        self.cap = cfg.max_pending
        self.clock = clock
        self.poll = poll
        self.written = 0
        self.dropped = 0  # queue full
        self.failed = 0  # the database refused the batch
        self.swept = 0  # day files deleted by retention
        self._queue: deque[Pending] = deque()
        self._writer = DayWriter(self.directory)  # makes the directory: OSError here
        self._wake = threading.Event()
        self._stop = False
        self._sweep_due = False
        self._thread: threading.Thread | None = threading.Thread(
            target=self._run, name="decision-records", daemon=True
        )
        self._thread.start()

    @property
    def pending(self) -> int:
        return len(self._queue)

    def add(self, ev: Screened, wall_time: float, peer: str) -> None:
        """Queue one screened call; O(1), no I/O, safe on the event loop."""
        if len(self._queue) < self.cap:
            self._queue.append((ev, wall_time, peer))
        else:
            self.dropped += 1

    def sweep(self) -> None:
        """Ask the writer to delete the day files past ``retention_days``;
        it does so between batches, so it never races an insert. Call it
        from a background task every ``SWEEP_INTERVAL`` on one worker."""
        self._sweep_due = True
        self._wake.set()

    def close(self, timeout: float = 30.0) -> None:
        """Write everything queued, then stop the writer; waits up to
        ``timeout`` seconds (a full default queue takes a few)."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop = True
        self._wake.set()
        thread.join(timeout)
        if thread.is_alive():
            log.error("decision records: writer still busy at close; %d queued", self.pending)

    def _run(self) -> None:
        try:
            while True:
                self._wake.wait(self.poll)
                self._wake.clear()
                stopping = self._stop  # read before draining: what came before is written
                self._drain()
                if self._sweep_due:
                    self._sweep_due = False
                    self._sweep()
                if stopping:
                    self._drain()
                    return
        finally:
            self._writer.close()

    def _drain(self) -> None:
        queue = self._queue
        while queue:
            rows: list[Row] = []
            take = min(len(queue), BATCH)
            try:
                for i in range(take):  # popleft: the loop may append meanwhile, safely
                    ev, wall_time, peer = queue.popleft()
                    rows.append(row_of(ev, wall_time, peer))
                    if i % YIELD_EVERY == YIELD_EVERY - 1:
                        time.sleep(0)  # let the loop have the GIL now, not after 5 ms
                refused = self._writer.insert(rows)
            except Exception:  # a bug: count the batch lost, keep recording
                log.exception("decision records: a batch of %d was not written", take)
                self.failed += take
                continue
            self.failed += refused
            self.written += len(rows) - refused

    def _sweep(self) -> None:
        try:
            gone = self._writer.sweep(day_of(self.clock()), self.cfg.retention_days)
        except OSError as exc:
            log.error("decision records: retention sweep failed: %s", exc)
            return
        self.swept += len(gone)
        if gone:
            log.info("decision records: retention deleted %s", ", ".join(p.name for p in gone))

    def collect(self) -> Iterator[Metric]:
        """Prometheus collector: ``registry.register(recorder)``."""
        written = CounterMetricFamily(
            "rs_records_written", "Decision records written to the record store"
        )
        written.add_metric([], self.written)
        dropped = CounterMetricFamily(
            "rs_records_dropped",
            "Decision records lost: queue-full (the writer fell max_pending behind) "
            "or write-error (the database refused a batch)",
            labels=["reason"],
        )
        dropped.add_metric(["queue-full"], self.dropped)
        dropped.add_metric(["write-error"], self.failed)
        pending = GaugeMetricFamily("rs_records_pending", "Decision records waiting for the writer")
        pending.add_metric([], self.pending)
        yield written
        yield dropped
        yield pending
