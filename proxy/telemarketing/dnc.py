"""The National Do Not Call artefact: built by ``robocall-shield blocklist
build dnc:FILE... -o DIR`` (the blocklist format: Bloom filter, exact uint64
store, manifest), loaded in a background thread and swapped into its own
``ArtefactSlot`` in one assignment. A load that fails keeps the artefact in
use, and is tried again when the manifest changes or after a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge

from blocklists.slot import ArtefactSlot
from blocklists.sources import Kind
from blocklists.store import Artefact, ArtefactError

log = logging.getLogger("robocall_shield.telemarketing")
RETRY_AFTER = 60.0  # seconds before a failed load is tried again
OUTCOMES = ("loaded", "unchanged", "error")


@dataclass(frozen=True, slots=True)
class DncReload:
    outcome: str  # loaded, unchanged, error
    version: str | None
    detail: str = ""


def load_dnc(directory: Path) -> Artefact:
    """Load and check a DNC artefact; a blocklist artefact (or a mixed one)
    is refused, so a wrong directory cannot block calls to its numbers."""
    with contextlib.suppress(OSError, AttributeError):  # Linux: nice this thread only
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    art = Artefact.load(directory)
    sources = art.manifest.get("sources")
    listed = sources if isinstance(sources, list) else []
    kinds = {s.get("kind") for s in listed if isinstance(s, dict)}
    if kinds != {Kind.DNC.value}:
        art.close()
        found = ", ".join(sorted(str(k) for k in kinds)) or "none"
        raise ArtefactError(
            f"{directory}: not a National DNC artefact (sources: {found}); "
            "build one with `robocall-shield blocklist build dnc:FILE... -o DIR`"
        )
    return art


class DncLoader:
    def __init__(
        self, directory: Path, slot: ArtefactSlot, registry: CollectorRegistry | None = None
    ) -> None:
        self.directory = directory
        self.slot = slot
        self._lock = asyncio.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dnc-load")
        self._seen: tuple[int, int, int] | None = None
        self._retry_at: float | None = None
        self.reloads = Counter(
            "rs_dnc_reloads", "National DNC artefact reloads", ["outcome"], registry=registry
        )
        for outcome in OUTCOMES:
            self.reloads.labels(outcome)  # at 0 from the start, for rate() and alerts
        Gauge(
            "rs_dnc_numbers", "Numbers in the National DNC artefact in use", registry=registry
        ).set_function(lambda: float(slot.current.counts.get("numbers", 0) if slot.current else 0))
        Gauge(
            "rs_dnc_age_seconds",
            "Seconds since the National DNC artefact in use was built",
            registry=registry,
        ).set_function(lambda: time.time() - slot.current.built_at if slot.current else 0.0)

    async def reload(self, why: str) -> DncReload:
        async with self._lock:
            self._seen = self._stamp()
            loop = asyncio.get_running_loop()
            try:
                new = await loop.run_in_executor(self._executor, load_dnc, self.directory)
            except ArtefactError as exc:
                return self._failed(why, str(exc))
            except Exception as exc:  # a bug, but it must not stop the proxy
                log.exception("National DNC load crashed")
                return self._failed(why, f"{type(exc).__name__}: {exc}")
            self._retry_at = None
            self.slot.last_error = None
            old = self.slot.current
            if old is not None and old.version == new.version:
                new.close()
                self.reloads.labels("unchanged").inc()
                return DncReload("unchanged", old.version)
            self.slot.current = new  # the swap: atomic between two messages
            if old is not None:
                old.close()
            self.reloads.labels("loaded").inc()
            log.info(
                "National DNC %s loaded (%s): %d numbers",
                new.version,
                why,
                new.counts.get("numbers", 0),
            )
            return DncReload("loaded", new.version)

    def _failed(self, why: str, detail: str) -> DncReload:
        self._retry_at = time.monotonic() + RETRY_AFTER
        self.slot.last_error = detail
        self.reloads.labels("error").inc()
        current = self.slot.current.version if self.slot.current else None
        log.error(
            "National DNC reload (%s) failed, keeping %s: %s",
            why,
            current or "no list (telemarketing calls are not checked against it)",
            detail,
        )
        return DncReload("error", current, detail)

    def _stamp(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.directory / "manifest.json")
        except OSError:
            return None
        return st.st_ino, st.st_size, st.st_mtime_ns

    async def tick(self) -> DncReload | None:
        """One look: reload if the manifest was replaced or a retry is due."""
        stamp = self._stamp()
        if stamp is not None and stamp != self._seen:
            return await self.reload("manifest changed")
        if self._retry_at is not None and time.monotonic() >= self._retry_at:
            return await self.reload("retry after a failed load")
        return None

    def status(self) -> dict[str, object]:
        art = self.slot.current
        out: dict[str, object] = {"dir": str(self.directory)}
        if art is not None:
            out.update(version=art.version, numbers=art.counts.get("numbers", 0))
        if self.slot.last_error:
            out["last_error"] = self.slot.last_error
        return out

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
