"""Loading blocklist artefacts in the background and swapping them in.

Triggers: start-up, SIGHUP, ``POST /admin/blocklists/reload`` and a change of
``manifest.json`` in the artefact directory. Loading (checksums, mmap, Bloom
filter) runs in a thread; the swap is one assignment on the event loop. On
any error the artefact in use stays, and the error is logged, counted and
shown on /healthz.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Info

from blocklists.slot import ArtefactSlot
from blocklists.store import Artefact, ArtefactError

from .config import BlocklistConfig

log = logging.getLogger("robocall_shield.blocklists")
RETRY_AFTER = 60.0  # seconds before a failed load is tried again


@dataclass(frozen=True, slots=True)
class ReloadResult:
    outcome: str  # loaded, unchanged, error, disabled
    version: str | None
    detail: str = ""


def _load_gently(directory: Path) -> Artefact:
    with contextlib.suppress(OSError, AttributeError):  # Linux: nice this thread only
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    return Artefact.load(directory)


class BlocklistLoader:
    def __init__(self, cfg: BlocklistConfig, slot: ArtefactSlot, registry: CollectorRegistry):
        self.cfg = cfg
        self.slot = slot
        self.directory = Path(cfg.dir) if cfg.dir else None
        self._lock = asyncio.Lock()
        # One dedicated, low-priority thread: checksumming a large artefact
        # must not take CPU from the event loop while calls are flowing.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="blocklist-load")
        self._seen: tuple[int, int, int] | None = None
        self._retry_at: float | None = None
        self.reloads = Counter(
            "rs_blocklist_reloads", "Blocklist artefact reloads", ["outcome"], registry=registry
        )
        for outcome in ("loaded", "unchanged", "error"):
            self.reloads.labels(outcome)  # at 0 from the start, so rate() and alerts see them
        self.info = Info("rs_blocklist", "The blocklist artefact in use", registry=registry)
        entries = Gauge(
            "rs_blocklist_entries", "Entries in the artefact in use", ["kind"], registry=registry
        )
        for kind in ("numbers", "allow", "prefix_rules"):
            entries.labels(kind).set_function(self._count_reader(kind))
        Gauge(
            "rs_blocklist_age_seconds",
            "Seconds since the artefact in use was built",
            registry=registry,
        ).set_function(
            lambda: time.time() - self.slot.current.built_at if self.slot.current else 0.0
        )
        Gauge(
            "rs_blocklist_bloom_false_positives",
            "Bloom hits not confirmed by the exact store since the artefact was loaded",
            registry=registry,
        ).set_function(
            lambda: float(self.slot.current.bloom_false_positives) if self.slot.current else 0.0
        )

    def _count_reader(self, kind: str) -> Callable[[], float]:
        return lambda: float(self.slot.current.counts.get(kind, 0)) if self.slot.current else 0.0

    def adopt(self) -> None:
        """Take the artefact already in the slot (the supervisor loaded it
        before forking) as if this loader had loaded it."""
        art = self.slot.current
        if art is None:
            return
        self._seen = self._manifest_stamp()
        self.reloads.labels("loaded").inc()
        self.info.info({"version": art.version})
        log.info("blocklists %s loaded before the fork: shared with the other workers", art.version)

    async def reload(self, why: str) -> ReloadResult:
        if self.directory is None:
            return ReloadResult("disabled", None, "no [blocklists] dir configured")
        async with self._lock:
            loop = asyncio.get_running_loop()
            # Remember what was tried, good or bad: a broken manifest is not
            # re-read every tick, only when it changes or after RETRY_AFTER.
            self._seen = self._manifest_stamp()
            try:
                new = await loop.run_in_executor(self._executor, _load_gently, self.directory)
            except ArtefactError as exc:
                return self._failed(why, str(exc))
            except Exception as exc:  # anything else is a bug, but must not stop the proxy
                log.exception("blocklist load crashed")
                return self._failed(why, f"{type(exc).__name__}: {exc}")
            self._retry_at = None
            old = self.slot.current
            if old is not None and old.version == new.version:
                new.close()
                self.slot.last_error = None
                self.reloads.labels("unchanged").inc()
                return ReloadResult("unchanged", old.version)
            self.slot.current = new  # the swap: atomic between two messages
            self.slot.last_error = None
            if old is not None:
                old.close()
            self.reloads.labels("loaded").inc()
            self.info.info({"version": new.version})
            log.info(
                "blocklists %s loaded (%s): %d numbers, %d allowed, %d prefix rules",
                new.version,
                why,
                new.counts.get("numbers", 0),
                new.counts.get("allow", 0),
                new.counts.get("prefix_rules", 0),
            )
            return ReloadResult("loaded", new.version)

    def _failed(self, why: str, detail: str) -> ReloadResult:
        # A failure may be passing (a file still being copied): retry later.
        self._retry_at = time.monotonic() + RETRY_AFTER
        self.slot.last_error = detail
        self.reloads.labels("error").inc()
        current = self.slot.current.version if self.slot.current else None
        log.error(
            "blocklist reload (%s) failed, keeping %s: %s", why, current or "no lists", detail
        )
        return ReloadResult("error", current, detail)

    def _manifest_stamp(self) -> tuple[int, int, int] | None:
        assert self.directory is not None
        try:
            st = os.stat(self.directory / "manifest.json")
        except OSError:
            return None
        return st.st_ino, st.st_size, st.st_mtime_ns

    async def watch(self) -> None:
        """Reload when manifest.json is replaced (a build finished)."""
        if self.directory is None or self.cfg.watch_interval <= 0:
            return
        while True:
            await asyncio.sleep(self.cfg.watch_interval)
            try:
                stamp = self._manifest_stamp()
                if stamp is not None and stamp != self._seen:
                    await self.reload("manifest changed")
                elif self._retry_at is not None and time.monotonic() >= self._retry_at:
                    await self.reload("retry after a failed load")
            except Exception:  # the watcher must outlive any one bad reload
                log.exception("blocklist watcher")

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def status(self) -> dict[str, object]:
        art = self.slot.current
        out: dict[str, object] = {"dir": str(self.directory) if self.directory else None}
        if art is not None:
            out.update(
                version=art.version,
                counts=art.counts,
                age_seconds=round(time.time() - art.built_at, 1),
                loaded_at=round(art.loaded_at, 3),
            )
        if self.slot.last_error:
            out["last_error"] = self.slot.last_error
        return out
