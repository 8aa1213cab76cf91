"""One worker's peer machinery: actions, statistics, the override store and
the RMD import, with the edges' entry points (start, reload, follow, an
operator's change). Everything slow runs on a thread; the loop only swaps
in the result."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path

from ..peers import PeerConfig
from ..screening.verdict import Mode
from .actions import Override, PeerActions, Setting, stricter
from .rmd import RmdData, RmdFileError, load_rmd
from .settings import PeerPolicyConfig
from .stats import PeerStats
from .store import AuditRow, PeerStore

log = logging.getLogger("robocall_shield.peers")
FOLLOW_INTERVAL = 1.0  # seconds between a sibling worker's looks at the store


class PeerService:
    def __init__(
        self,
        peers: tuple[PeerConfig, ...],
        policy: PeerPolicyConfig,
        short_call_seconds: float = 10.0,
        *,
        wall: Callable[[], float] = time.time,
    ) -> None:
        """Opens the store (OSError or sqlite3.Error when it cannot) and
        reads the RMD export, if one is configured (a failure is logged)."""
        self.wall = wall
        self.store = PeerStore(policy.store)
        names = {p.name for p in peers}
        saved = self.store.overrides()
        for name in sorted(set(saved) - names):
            log.warning(
                "peer %s has an override in %s but is no [[peers]] entry", name, policy.store
            )
        self.actions = PeerActions(peers, policy, {k: v for k, v in saved.items() if k in names})
        self.stats = PeerStats(self.actions.directory, short_call_seconds)
        self.seen_version = self.store.version()
        self._changing = asyncio.Lock()
        if policy.rmd_file:
            self._adopt(self._read(policy.rmd_file), "start-up")

    @property
    def policy(self) -> PeerPolicyConfig:
        return self.actions.policy

    @property
    def mode(self) -> Mode:
        return Mode(self.policy.mode)

    # -- the RMD export ------------------------------------------------------

    def _read(self, path: str) -> RmdData | str:
        try:
            return load_rmd(path, self.wall())
        except RmdFileError as exc:
            return str(exc)

    def _adopt(self, result: RmdData | str, why: str) -> str | None:
        """Apply an import's result; returns the error, if it failed."""
        if isinstance(result, str):
            self.actions.rmd_failed(result)
            kept = "the RMD data loaded before stays" if self.actions.rmd else "no RMD data"
            log.error("RMD import (%s) failed, %s: %s", why, kept, result)
            return result
        self.actions.adopt_rmd(result)
        log.info(
            "RMD import (%s): %d filings from %s, %d row problem(s), %d row(s) skipped",
            why,
            result.filings,
            result.path,
            result.problem_count,
            result.skipped,
        )
        for problem in result.problems[:20]:
            log.warning("RMD export %s line %d: %s", result.path, problem.line, problem.message)
        return None

    def configure(self, policy: PeerPolicyConfig, short_call_seconds: float) -> None:
        """A reloaded config: the new policy applies at once (the RMD export
        is read again by ``reload``); the store stays until a restart."""
        if self.store.path != Path(policy.store):
            log.warning(
                "[peer_policy] store: a new path needs a restart (%s kept)", self.store.path
            )
        if policy != self.actions.policy:
            self.actions.configure(policy)
        self.stats.short_s = short_call_seconds

    async def reload(self, why: str = "SIGHUP") -> None:
        """Read the RMD export again (on a thread), if one is configured."""
        path = self.actions.policy.rmd_file
        if not path:
            if self.actions.rmd is not None:
                log.info("[peer_policy] rmd_file removed: RMD standing no longer applied")
                self.actions.drop_rmd()
            return
        self._adopt(await asyncio.to_thread(self._read, path), why)

    # -- operator overrides ----------------------------------------------------

    async def change(
        self, name: str, setting: Setting | None, reason: str, actor: str, client: str
    ) -> AuditRow:
        """Set (``setting``) or clear (None) a peer's override: written to
        the store first, applied once it is there. Raises OSError or
        sqlite3.Error when the store cannot take it."""
        async with self._changing:
            view = self.actions.views[name]
            at = self.wall()
            override = Override(setting, reason, actor, at) if setting is not None else None
            new = setting if setting is not None else view.configured
            effective = stricter(new, view.policy).text()  # as PeerActions will compute it
            row = await asyncio.to_thread(
                self.store.record, name, override, view.own, new, effective, client, actor,
                reason, at,
            )  # fmt: skip
            self.actions.set_override(name, override)
            self.seen_version = max(self.seen_version, row.id)
            return row

    async def follow(self, interval: float = FOLLOW_INTERVAL) -> None:
        """A sibling worker: apply the overrides the admin worker writes."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.catch_up()
            except Exception:  # a locked store: try again next round
                log.exception("reading peer overrides failed")

    async def catch_up(self) -> bool:
        """Re-read the overrides if the store changed; True if it had."""
        version = await asyncio.to_thread(self.store.version)
        if version == self.seen_version:
            return False
        overrides = await asyncio.to_thread(self.store.overrides)
        self.seen_version = version
        self.actions.adopt_overrides(overrides)
        return True
