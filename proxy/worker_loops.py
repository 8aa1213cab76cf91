"""The worker's background loops: health checks, following the stores,
flushing logs, retention, overload probing, heap freezing and idle TCP
sweeps. Each runs for the worker's life on its event loop."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from typing import TYPE_CHECKING

from .events import Send
from .records.recorder import SWEEP_INTERVAL
from .verdict_log import FLUSH_INTERVAL

if TYPE_CHECKING:
    from .server import Worker

log = logging.getLogger("robocall_shield")
FREEZE_INTERVAL = 60.0
LAG_PROBE = 0.1
FOLLOW_INTERVAL = 1.0  # seconds between a sibling's looks at the subscriber store
# a store other nodes write (PostgreSQL): their changes apply here within 1 s
SHARED_FOLLOW_INTERVAL = 0.25


async def health_checks(w: Worker) -> None:
    step = min(w.cfg.routing.ping_interval, w.cfg.routing.ping_timeout) / 4
    while True:
        try:
            events = w.core.pings(asyncio.get_running_loop().time())
            if w.ping_udp is None:
                w.dispatch(events)
            else:
                for ev in events:
                    if isinstance(ev, Send):
                        w.ping_udp.send(ev.dest, ev.data)
                w.metrics.record(events)
        except Exception:  # never let one bad send stop health checking
            log.exception("health check round failed")
        await asyncio.sleep(step)


async def follow_subscribers(w: Worker) -> None:
    """A sibling of the worker that serves the API learns its subscriber
    edits from the shared store's audit trail."""
    assert w.subscribers is not None
    while True:
        shared = w.cfg.subscribers.backend != "sqlite"
        await asyncio.sleep(SHARED_FOLLOW_INTERVAL if shared else FOLLOW_INTERVAL)
        try:
            await w.subscribers.follow()
        except Exception:  # a locked or busy store: try again next round
            log.exception("reading subscriber changes failed")


async def flush_verdicts(w: Worker) -> None:
    while True:
        await asyncio.sleep(FLUSH_INTERVAL)
        w.verdicts.flush()


async def sweep_records(w: Worker) -> None:
    """[records] retention: day files past retention_days go, at start and hourly."""
    assert w.records is not None
    while True:
        await asyncio.to_thread(w.records.sweep)  # unlinks files: off the loop
        await asyncio.sleep(SWEEP_INTERVAL)


async def watch_loop_lag(w: Worker) -> None:
    """Measure how late the loop runs a 100 ms timer, and how much waits
    in the UDP receive queue. Beyond [sip] overload_lag or
    overload_backlog, the worker admits a shrinking share of new calls
    and answers the rest 503 (emergency calls excepted): better a fast
    503 the caller's network retries elsewhere than every call timing
    out. The share grows back once both are under half their limits
    (see proxy.overload)."""
    worst, since = 0.0, time.monotonic()
    while True:
        before = time.monotonic()
        await asyncio.sleep(LAG_PROBE)
        lag = max(0.0, time.monotonic() - before - LAG_PROBE)
        worst = max(worst, lag)
        queue = w.udp_queue.read() if w.udp_queue is not None else None
        backlog = queue.queued_bytes if queue is not None else 0
        was = w.core.overloaded
        admit = w.overload.probe(lag, backlog)
        w.core.admit = 0.0 if w.draining is not None else admit
        w.metrics.admitted.set(w.core.admit)
        if w.core.overloaded != was:
            news = "calls taken again" if was else f"shedding new calls ({w.overload.cause})"
            log.warning(
                "overload: %s (loop lag %.3f s, %d bytes queued)",
                news,
                lag,
                backlog,
            )
        w.metrics.overloaded.set(1.0 if w.core.overloaded else 0.0)
        if time.monotonic() - since >= 1.0:
            w.metrics.loop_lag.set(worst)
            worst, since = 0.0, time.monotonic()


async def freeze_long_lived(w: Worker) -> None:
    """Move what has survived into the permanent generation, so a full
    cyclic collection never walks the reputation tables and the
    subscriber index: at the default caps that walk stalled the loop for
    about 260 ms (measured). Their objects hold no reference cycles, so
    refcounting still frees what is evicted. A full collection runs
    first, so cyclic garbage is never frozen with them; it walks only
    what is not frozen yet (a minute's worth), so it stays short."""
    while True:
        await asyncio.sleep(FREEZE_INTERVAL)
        gc.collect()
        gc.freeze()


async def sweep_idle_connections(w: Worker) -> None:
    while True:
        await asyncio.sleep(30)
        for edge in (w.tcp, w.tls):
            if edge is not None:
                edge.close_idle(time.monotonic())
