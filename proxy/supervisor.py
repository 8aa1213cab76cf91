"""``[sip] workers = N``: N processes share the SIP port, and this parent
restarts any that dies.

Each worker is a whole proxy on its own event loop; the kernel spreads
datagrams and connections over their sockets by SO_REUSEPORT. The parent
loads the blocklist artefact and freezes its heap before forking, so those
pages stay shared. It never touches SIP itself: it waits for signals,
forwards SIGHUP (reload), stops everything on SIGTERM/SIGINT and restarts a
dead worker, backing off when one keeps dying young.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import mmap
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import struct
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from blocklists.slot import ArtefactSlot
from blocklists.store import Artefact, ArtefactError

from .config import Config
from .subscribers.disputes import DisputeStore
from .subscribers.store import SubscriberStore, connect

log = logging.getLogger("robocall_shield.supervisor")

# A worker that cannot start (port taken, bad store) exits with this; the
# same failure would repeat, so the supervisor stops instead of looping.
EXIT_STARTUP = 78
YOUNG = 10.0  # seconds: a worker dying younger than this is crash-looping
MAX_BACKOFF = 30.0
MAX_WORKERS = 64
STOP_MARGIN = 5.0  # seconds past [sip] drain_seconds a worker has to flush and exit
_COUNTER = struct.Struct("=Q")
_HANDLED = (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class RestartCounts:
    """Restarts per worker, in memory shared with the workers (mapped before
    the fork), so the first worker can export them as a metric."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._map = mmap.mmap(-1, _COUNTER.size * MAX_WORKERS)

    def add(self, index: int) -> None:
        _COUNTER.pack_into(self._map, index * _COUNTER.size, self.get(index) + 1)

    def get(self, index: int) -> int:
        value: int = _COUNTER.unpack_from(self._map, index * _COUNTER.size)[0]
        return value


@dataclass(frozen=True, slots=True)
class SharedSockets:
    """[sip] worker_balance = "message": the supervisor binds the SIP sockets
    once and every worker reads the same ones, so each datagram (and each
    TCP connection) goes to whichever worker takes it first."""

    udp: socket.socket
    tcp: socket.socket | None


@dataclass(frozen=True, slots=True)
class WorkerRole:
    """What a worker needs to know about its siblings."""

    index: int  # 0 serves the admin API and gathers everyone's metrics
    count: int
    nonce: str  # shared: any worker must recognise the ACK of another's 603
    runtime_dir: Path  # Unix sockets the workers talk over
    restarts: RestartCounts
    slot: ArtefactSlot = field(default_factory=ArtefactSlot)
    sockets: SharedSockets | None = None  # None: each worker binds its own (SO_REUSEPORT)

    @property
    def primary(self) -> bool:
        return self.index == 0

    def link_socket(self, index: int) -> Path:
        return self.runtime_dir / f"metrics-{index}.sock"


def worker_count(cfg: Config) -> int:
    return cfg.sip.workers or os.cpu_count() or 1


def bind_shared(cfg: Config) -> SharedSockets:
    """The SIP sockets all workers read; OSError if the port is taken."""
    sip = cfg.sip
    family = socket.AF_INET6 if ":" in sip.host else socket.AF_INET
    udp = socket.socket(family, socket.SOCK_DGRAM)
    tcp: socket.socket | None = None
    try:
        udp.bind((sip.host, sip.port))
        udp.setblocking(False)
        if "tcp" in sip.transports:
            tcp = socket.socket(family, socket.SOCK_STREAM)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            tcp.bind((sip.host, sip.port))
            tcp.listen(1024)
            tcp.setblocking(False)
    except OSError:
        udp.close()
        if tcp is not None:
            tcp.close()
        raise
    return SharedSockets(udp, tcp)


def preload(cfg: Config) -> ArtefactSlot:
    """Load the artefact once in the parent; a failure is the workers' to
    report (they retry), so here it is only logged."""
    slot = ArtefactSlot()
    if cfg.blocklists.dir:
        try:
            slot.current = Artefact.load(Path(cfg.blocklists.dir))
        except ArtefactError as exc:
            log.warning("blocklists not preloaded before forking workers: %s", exc)
    return slot


def prepare_subscriber_store(cfg: Config) -> None:
    """Create the store and switch it to WAL once, before the workers open
    it together: two first opens racing for that switch fail as locked."""
    if not cfg.subscribers.enabled or cfg.subscribers.backend != "sqlite":
        return  # PostgreSQL: the server creates its tables; nothing races
    path = Path(cfg.subscribers.data_dir) / "subscribers.sqlite3"
    try:
        with contextlib.closing(connect(path)) as db:
            SubscriberStore(db)
            DisputeStore(db)
    except (OSError, sqlite3.Error) as exc:  # the workers report it as they start
        log.warning("could not prepare the subscriber store %s: %s", path, exc)


@dataclass(frozen=True, slots=True)
class _Child:
    index: int
    started: float


class Supervisor:
    def __init__(self, cfg: Config, run_worker: Callable[[WorkerRole], int]) -> None:
        """Binds the shared sockets when asked to: OSError if it cannot."""
        self.count = worker_count(cfg)
        self.grace = cfg.sip.drain_seconds + STOP_MARGIN  # SIGTERM to SIGKILL
        self.sockets = bind_shared(cfg) if cfg.sip.worker_balance == "message" else None
        self.run_worker = run_worker
        self.runtime_dir = Path(tempfile.mkdtemp(prefix="robocall-shield-"))
        self.restarts = RestartCounts(self.count)
        self.nonce = secrets.token_hex(4)
        self.slot = preload(cfg)
        prepare_subscriber_store(cfg)
        self.children: dict[int, _Child] = {}  # by pid
        self.due: dict[int, float] = {}  # index -> when to restart it
        self.failures: dict[int, int] = {}  # index -> consecutive young deaths
        self.exit_code = 0

    def role(self, index: int) -> WorkerRole:
        return WorkerRole(
            index, self.count, self.nonce, self.runtime_dir, self.restarts, self.slot, self.sockets
        )

    def run(self) -> int:
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _HANDLED)
        try:
            gc.collect()
            gc.freeze()  # the preloaded heap stays shared: the GC never writes to it
            for index in range(self.count):
                self._spawn(index, old_mask)
            log.info("supervising %d workers", self.count)
            self._loop(old_mask)
        finally:
            self._stop_all()
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
            shutil.rmtree(self.runtime_dir, ignore_errors=True)
            if self.sockets is not None:
                self.sockets.udp.close()
                if self.sockets.tcp is not None:
                    self.sockets.tcp.close()
        return self.exit_code

    def _loop(self, old_mask: set[int | signal.Signals]) -> None:
        while True:
            self._respawn_due(old_mask)
            timeout = max(0.05, min(self.due.values(), default=time.monotonic() + 1.0)
                          - time.monotonic())  # fmt: skip
            info = signal.sigtimedwait(_HANDLED, min(timeout, 1.0))
            if info is None:
                continue
            if info.si_signo in (signal.SIGTERM, signal.SIGINT):
                log.info("shutting down %d workers", len(self.children))
                return
            if info.si_signo == signal.SIGHUP:
                for pid in self.children:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGHUP)
                continue
            if self._reap():
                return

    def _reap(self) -> bool:
        """Collect dead workers; True when the supervisor must give up."""
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return True
            if pid == 0:
                return False
            child = self.children.pop(pid, None)
            if child is None:
                continue
            code = os.waitstatus_to_exitcode(status)
            age = time.monotonic() - child.started
            if code == EXIT_STARTUP:
                log.error("worker %d could not start (see its log): stopping", child.index)
                self.exit_code = 1
                return True
            failures = self.failures.get(child.index, 0) + 1 if age < YOUNG else 0
            delay = 0.0 if failures == 0 else min(MAX_BACKOFF, 0.5 * 2 ** (failures - 1))
            log.error(
                "worker %d (pid %d) died after %.1f s (%s): restarting in %.1f s",
                child.index,
                pid,
                age,
                _describe(code),
                delay,
            )
            self.restarts.add(child.index)
            self.due[child.index] = time.monotonic() + delay
            self.failures[child.index] = failures
        return False

    def _respawn_due(self, old_mask: set[int | signal.Signals]) -> None:
        now = time.monotonic()
        for index, when in list(self.due.items()):
            if when <= now:
                del self.due[index]
                self._spawn(index, old_mask)

    def _spawn(self, index: int, old_mask: set[int | signal.Signals]) -> None:
        pid = os.fork()
        if pid == 0:  # the worker: never returns into the supervisor's code
            code = 1
            try:
                signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
                for sig in _HANDLED:
                    signal.signal(sig, signal.SIG_DFL)
                code = self.run_worker(self.role(index))
            except BaseException:
                log.exception("worker %d crashed", index)
            finally:
                logging.shutdown()
                os._exit(code)
        self.children[pid] = _Child(index, time.monotonic())

    def _stop_all(self) -> None:
        """SIGTERM: each worker drains (see serving.serve); one still there
        after drain_seconds and the margin is killed."""
        for pid in self.children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        while self.children and time.monotonic() < deadline:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                time.sleep(0.05)
            else:
                self.children.pop(pid, None)
        for pid in self.children:  # still there after the grace period
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        self.children.clear()


def _describe(code: int) -> str:
    if code < 0:
        return f"signal {signal.Signals(-code).name}"
    return f"exit status {code}"
