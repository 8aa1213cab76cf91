"""Counter batches on their way out and in, sans-I/O: exactly once.

An XADD that times out may have landed all the same. So the batch being
sent is frozen: its rows leave ``rows`` and it is sent again, the same
bytes under the same sequence number, until an XADD of it succeeds;
compaction and the bound on waiting rows touch only the rows not yet in
it. A receiver remembers the last sequence it applied per sender and skips
a batch that is not newer: a repeat, or one already applied.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from . import journal

CHUNK_ROWS = 5000  # rows per batch: a few hundred kB at most
SENDERS = 4096  # senders whose last sequence is remembered (process lives)


@dataclass(frozen=True, slots=True)
class Sending:
    """A batch as it goes on the wire: re-sent as is until Redis takes it."""

    seq: int
    data: bytes
    rows: int


class Outbox:
    def __init__(self, sender: str) -> None:
        self.sender = sender
        self.rows: list[journal.Row] = []  # not in a batch yet
        self.inflight: Sending | None = None  # attempted, not known to have landed
        self.seq = 0  # the last sequence number handed out

    @property
    def waiting(self) -> int:
        """Rows not known to be in Redis, the in-flight batch's included."""
        return len(self.rows) + (self.inflight.rows if self.inflight is not None else 0)

    def add(self, rows: Iterable[journal.Row]) -> None:
        self.rows.extend(rows)

    def bound(self, limit: int) -> int:
        """Keep at most ``limit`` rows outside the in-flight batch: compact
        per minute, then drop the oldest. Returns the rows dropped."""
        if len(self.rows) <= limit:
            return 0
        self.rows = journal.compact(self.rows)
        if len(self.rows) <= limit:
            return 0
        self.rows.sort(key=lambda row: row[1])  # the oldest go first: they matter least
        cut = len(self.rows) - limit
        del self.rows[:cut]
        return cut

    def next(self) -> Sending | None:
        """The batch to send now: the in-flight one again, else a new one."""
        if self.inflight is None and self.rows:
            chunk = tuple(self.rows[:CHUNK_ROWS])
            del self.rows[: len(chunk)]
            self.seq += 1
            data = journal.encode(journal.Batch(self.sender, self.seq, chunk))
            self.inflight = Sending(self.seq, data, len(chunk))
        return self.inflight

    def landed(self, sent: Sending) -> None:
        """An XADD of ``sent`` succeeded."""
        if self.inflight is sent:
            self.inflight = None


class Applied:
    """The last sequence applied per sender, for the newest SENDERS senders
    (a sender not heard of for that long is a process gone)."""

    def __init__(self, size: int = SENDERS) -> None:
        self.size = size
        self.last: OrderedDict[str, int] = OrderedDict()

    def fresh(self, batch: journal.Batch) -> bool:
        last = self.last.get(batch.sender)
        return last is None or batch.seq > last

    def mark(self, batch: journal.Batch) -> None:
        self.last[batch.sender] = batch.seq
        self.last.move_to_end(batch.sender)
        if len(self.last) > self.size:
            self.last.popitem(last=False)
