"""Running one worker as a process: signals (SIGTERM and SIGINT drain,
a second one cuts the drain short; SIGHUP reloads) around Worker."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from .config import Config, load_config
from .config_table import ConfigError
from .server import Worker
from .supervisor import WorkerRole

log = logging.getLogger("robocall_shield")


async def serve(
    cfg: Config, config_path: str | None = None, role: WorkerRole | None = None
) -> None:
    worker = Worker(cfg, role)
    stop, hurry = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_stop() -> None:  # a second SIGTERM or SIGINT cuts the drain short
        (hurry if stop.is_set() else stop).set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, on_stop)
    with contextlib.suppress(NotImplementedError):
        loop.add_signal_handler(signal.SIGHUP, reload_from_file, worker, config_path)
    try:
        await worker.start()
        await stop.wait()
        log.info("shutting down: draining for up to %g s", cfg.sip.drain_seconds)
        if cfg.sip.drain_seconds > 0:
            await worker.drain(cfg.sip.drain_seconds, hurry)
    finally:
        await worker.stop()


def reload_from_file(worker: Worker, path: str | None) -> None:
    """SIGHUP: reopen the verdict log, reload the blocklists, re-read the
    config file; a bad config file keeps the running policy."""
    worker.verdicts.reopen()  # logrotate sends SIGHUP too
    worker.background(worker.lists.reload("SIGHUP"))
    if worker.telemarketing is not None:
        worker.background(worker.telemarketing.reload("SIGHUP"))
    try:
        new = load_config(path)
    except ConfigError as exc:
        log.error("reload rejected, running policy kept: config error: %s", exc)
        return
    skipped = worker.reload(new)
    if worker.peer_service is not None:
        worker.background(worker.peer_service.reload("SIGHUP"))
    log.info("reloaded screening policy from %s", path or "embedded defaults")
    if skipped:
        log.warning("changes to [%s] need a restart to take effect", "], [".join(skipped))
