"""How the first worker talks to its siblings: one Unix socket each, one
command per connection ("name" or "name argument", one ASCII line). The
first worker gathers their metrics for /metrics, their figures for the admin
answers that speak for the whole node (/admin/peers, /admin/reputation/<n>)
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
import re
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from .supervisor import WorkerRole

log = logging.getLogger("robocall_shield.workers")
Command = Callable[[], Awaitable[bytes]]
ArgCommand = Callable[[str], Awaitable[bytes]]  # validates its own argument
MAX_REPLY = 64 << 20
ASK_TIMEOUT = 2.0
MAX_LINE = 128
# a command name, then at most one argument of printable ASCII without spaces
_LINE = re.compile(r"([a-z][a-z-]{0,31})(?: ([!-~]{1,64}))?")
T = TypeVar("T")


async def serve_link(
    path: Path, commands: dict[str, Command], with_argument: dict[str, ArgCommand] | None = None
) -> asyncio.AbstractServer:
    """Answer the first worker's commands on ``path``. A line that is not a
    known command, with an argument exactly when it takes one, gets an empty
    answer, which the asker reads as no answer."""
    arg_commands = with_argument or {}

    async def answer(line: bytes) -> bytes:
        m = _LINE.fullmatch(line.rstrip(b"\n").decode("ascii", "replace"))
        if m is None:
            log.warning("worker link: malformed command %r", line[:MAX_LINE])
            return b""
        name, arg = m.group(1), m.group(2)
        if arg is None and name in commands:
            return await commands[name]()
        if arg is not None and name in arg_commands:
            return await arg_commands[name](arg)
        log.warning("worker link: unknown command or wrong arguments %r", line[:MAX_LINE])
        return b""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), ASK_TIMEOUT)
            writer.write(await answer(line[: MAX_LINE + 1]))
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


@dataclass(frozen=True, slots=True)
class Gathered(Generic[T]):
    """The siblings' decoded answers to one command, and how many workers
    the node has: a sibling that did not answer in time, or answered
    something unreadable, is left out and counted as missing."""

    answers: tuple[T, ...]
    of: int  # workers on the node, the asking one included

    def workers(self) -> dict[str, int]:
        return {"answered": len(self.answers) + 1, "of": self.of}


async def gather_from_siblings(
    role: WorkerRole | None, command: str, decode: Callable[[bytes], T]
) -> Gathered[T]:
    """Every sibling's answer to ``command``, through ``decode`` (which
    raises ValueError on anything it does not accept)."""
    if role is None:
        return Gathered((), 1)
    answers: list[T] = []
    for index, raw in sorted((await ask_siblings(role, command)).items()):
        if not raw:
            log.warning("worker link: no answer from worker %d to %r (gone, slow, refused)",
                        index, command)  # fmt: skip
            continue
        try:
            answers.append(decode(raw))
        except ValueError as exc:
            log.warning("worker link: worker %d answered %r unreadably: %s", index, command, exc)
    return Gathered(tuple(answers), role.count)


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
