"""The telemarketing check and what a worker holds for it.

The check has an opinion only on calls from a trunk listed in
[telemarketing] trunks; emergency calls never reach it (the emergency
check runs first and passes them). Per call: a memoised peer lookup, then
for telemarketing calls one Bloom probe in the DNC artefact and the
callee's zones from a precomputed table: no I/O, no phonenumbers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from prometheus_client import CollectorRegistry

from blocklists.slot import ArtefactSlot
from blocklists.sources import Flag

from ..peers import PeerConfig, PeerDirectory
from ..screening.pipeline import Stage
from ..screening.verdict import Action, Mode, Verdict
from ..sip.identity import CallFacts
from .dnc import DncLoader, DncReload
from .settings import TelemarketingConfig
from .zones import ZoneTable

log = logging.getLogger("robocall_shield.telemarketing")
DNC_REASON = "national-dnc"
HOURS_REASONS = {"tsr": "tsr-calling-hours", "dnd": "dnd-calling-hours", "custom": "calling-hours"}
CLOCK_INTERVAL = 60.0  # seconds between re-reads of the wall clock without a DNC watch
_NATIONAL_DNC = int(Flag.NATIONAL_DNC)  # a plain int: IntFlag arithmetic is slow


class TelemarketingCheck:
    name = "telemarketing"

    def __init__(
        self,
        cfg: TelemarketingConfig,
        peers: PeerDirectory,
        zones: ZoneTable,
        dnc: ArtefactSlot,
        wall_offset: float = 0.0,
    ) -> None:
        self.trunks = cfg.trunks
        self.start, self.end = cfg.start * 60.0, cfg.end * 60.0  # seconds of the day
        self.peers = peers
        self.zones = zones
        self.dnc = dnc
        # calls carry the proxy's monotonic `now`; this turns it into wall-clock seconds
        self.wall_offset = wall_offset
        hours = HOURS_REASONS[cfg.hours]
        self.late = Verdict(Action.BLOCK, 100, (hours,))
        self.listed = Verdict(Action.BLOCK, 100, (DNC_REASON,))
        self.both = Verdict(Action.BLOCK, 100, (DNC_REASON, hours))

    def check(self, call: CallFacts) -> Verdict | None:
        key = call.callee_key
        if key is None or self.peers.name_of(call.source) not in self.trunks:
            return None
        art = self.dnc.current
        listed = False
        if art is not None:
            entry = art.lookup(key)
            listed = entry is not None and bool(entry.flags & _NATIONAL_DNC)
        wall = call.received + self.wall_offset
        late = not self.zones.zones_for(key).within(wall, self.start, self.end)
        if listed:
            return self.both if late else self.listed
        return self.late if late else None


class Telemarketing:
    """A worker's [telemarketing]: the check and its pipeline stage, the
    DNC slot and loader, and the wall clock the check reads."""

    def __init__(
        self,
        cfg: TelemarketingConfig,
        peers: tuple[PeerConfig, ...],
        zones: ZoneTable | None = None,
    ) -> None:
        self.cfg = cfg
        self.slot = ArtefactSlot()
        zones = zones or ZoneTable.build()
        if zones.unloadable:
            log.warning(
                "time zones missing from the zone database, judged as unplaced numbers: %s",
                ", ".join(zones.unloadable),
            )
        self.check = TelemarketingCheck(cfg, PeerDirectory(peers), zones, self.slot)
        self.stage = Stage(self.check, Mode(cfg.mode))
        self.loader: DncLoader | None = None
        self.sync_clock()

    def sync_clock(self) -> None:
        """Follow steps of the wall clock (NTP) against the monotonic one."""
        self.check.wall_offset = time.time() - time.monotonic()

    async def start(self, registry: CollectorRegistry | None = None) -> DncReload | None:
        """The first DNC load; a failure is logged and calls still flow."""
        self.sync_clock()
        if not self.cfg.dnc_dir:
            return None
        self.loader = DncLoader(Path(self.cfg.dnc_dir), self.slot, registry)
        return await self.loader.reload("start-up")

    async def reload(self, why: str) -> DncReload | None:
        self.sync_clock()
        return await self.loader.reload(why) if self.loader is not None else None

    async def watch(self) -> None:
        interval = self.cfg.watch_interval or CLOCK_INTERVAL
        while True:
            await asyncio.sleep(interval)
            self.sync_clock()
            if self.loader is None or not self.cfg.watch_interval:
                continue
            try:
                await self.loader.tick()
            except Exception:  # the watcher must outlive any one bad reload
                log.exception("National DNC watcher")

    def status(self) -> dict[str, object]:
        out: dict[str, object] = {"trunks": sorted(self.cfg.trunks), "mode": self.cfg.mode}
        if self.loader is not None:
            out["dnc"] = self.loader.status()
        return out

    def close(self) -> None:
        if self.loader is not None:
            self.loader.close()
