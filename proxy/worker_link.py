"""How the first worker talks to its siblings: one Unix socket each, one
command per connection. The first worker gathers their metrics for /metrics
and relays admin actions (a blocklist reload) to them.

Each worker's series keep their own ``worker`` label rather than being summed
here: a worker that restarts resets its counters, and Prometheus handles a
reset per series, not inside a sum it cannot see. ``sum without (worker)``
adds them up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from .supervisor import WorkerRole

log = logging.getLogger("robocall_shield.workers")
Command = Callable[[], Awaitable[bytes]]
MAX_REPLY = 64 << 20
ASK_TIMEOUT = 2.0


async def serve_link(path: Path, commands: dict[str, Command]) -> asyncio.AbstractServer:
    """Answer the first worker's commands on ``path``."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), ASK_TIMEOUT)
            command = commands.get(line.decode("ascii", "replace").strip())
            writer.write(await command() if command is not None else b"")
            await writer.drain()
        except (OSError, TimeoutError):
            pass
        except Exception:  # one bad command must not stop the link
            log.exception("worker link command failed")
        finally:
            writer.close()

    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # left by this worker's previous life
    return await asyncio.start_unix_server(handle, path=str(path))


async def ask(path: Path, command: str, timeout: float = ASK_TIMEOUT) -> bytes | None:
    """A sibling's answer, or None if it is not there (restarting) or slow."""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_unix_connection(str(path))
            try:
                writer.write(command.encode("ascii") + b"\n")
                await writer.drain()
                return await reader.read(MAX_REPLY)
            finally:
                writer.close()
    except (OSError, TimeoutError):
        return None


async def ask_siblings(role: WorkerRole, command: str) -> dict[int, bytes | None]:
    others = [i for i in range(role.count) if i != role.index]
    answers = await asyncio.gather(*(ask(role.link_socket(i), command) for i in others))
    return dict(zip(others, answers, strict=True))


async def gathered_metrics(role: WorkerRole, own: CollectorRegistry) -> bytes:
    """Every worker's series, each labelled with its worker, plus restarts."""
    texts: dict[int, bytes | None] = {role.index: generate_latest(own)}
    texts.update(await ask_siblings(role, "metrics"))
    families = merge_expositions(
        (str(i), text.decode("utf-8")) for i, text in sorted(texts.items()) if text is not None
    )
    reporting = sum(text is not None for text in texts.values())
    restarts = [role.restarts.get(i) for i in range(role.count)]
    return exposition([*families, *worker_families(reporting, restarts)])


def worker_families(reporting: int, restarts: list[int]) -> list[Metric]:
    gauge = GaugeMetricFamily("rs_workers_reporting", "Workers whose metrics this scrape gathered")
    gauge.add_metric([], reporting)
    counter = CounterMetricFamily(
        "rs_worker_restarts",
        "Times the supervisor restarted a worker that died",
        labels=["worker"],
    )
    for i, count in enumerate(restarts):
        counter.add_metric([str(i)], count)
    return [gauge, counter]


class SingleWorker:
    """The same two families for a proxy of one worker (no supervisor), so
    dashboards and alerts read alike either way."""

    def collect(self) -> Iterator[Metric]:
        return iter(worker_families(1, [0]))


def merge_expositions(texts: Iterable[tuple[str, str]]) -> list[Metric]:
    """Families from several expositions, samples labelled by their source."""
    merged: dict[str, Metric] = {}
    for worker, text in texts:
        for family in text_string_to_metric_families(text):
            into = merged.get(family.name)
            if into is None:
                into = merged[family.name] = Metric(
                    family.name, family.documentation, family.type, family.unit
                )
            into.samples.extend(
                Sample(s.name, {**s.labels, "worker": worker}, s.value, s.timestamp, s.exemplar)
                for s in family.samples
            )
    return list(merged.values())


class _Fixed:
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def exposition(families: list[Metric]) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(families))
    return generate_latest(registry)
