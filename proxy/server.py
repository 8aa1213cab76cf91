"""Wires config, core, screening and edges into one worker on one event loop."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import secrets
import sqlite3
import ssl
import time
from collections.abc import Coroutine, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from blocklists.slot import ArtefactSlot

from . import worker_loops as loops
from .admin import AdminApi
from .blocklist_loader import BlocklistLoader
from .cluster.link import ClusterLink
from .config import PLACEHOLDER_REDRESS_URL, Config
from .core import StatelessProxy
from .drain import Drain
from .events import AwaitCertificate, Event, KernelDrop, Screened, Send
from .gateway.metrics import StatsMetrics
from .gateway.service import PeerService
from .kernel_drop import KernelDropError, KernelDropper, drop_in_kernel, open_kernel_drop
from .metrics import Metrics
from .overload import OverloadGuard, QueueMetrics, UdpQueueReader
from .peers import PeerDirectory
from .records.recorder import DecisionRecorder
from .reputation import ReputationEngine
from .reputation.explain import explain_pooled
from .reputation.pooled import NumberTraffic
from .routing import SwitchPool
from .screening import Pipeline, SubscriberCheck, build_pipeline
from .screening.peer_check import PeerStages
from .stir.certs import CertificateCache, HttpsFetcher
from .stir.chain import TrustStore, TrustStoreError
from .stir.checker import StirVerifier
from .stir.settings import StirConfig
from .subscribers.api import SubscriberApi
from .subscribers.backend import StoreUnavailable, store_name
from .subscribers.links import LinkSigner, link_secret
from .subscribers.pages import Pages
from .subscribers.service import SubscriberService
from .supervisor import WorkerRole
from .telemarketing.check import Telemarketing
from .telemarketing.zones import ZoneError
from .transport.tcp import TcpEdge
from .transport.udp import UdpEdge, grow_receive_buffer
from .verdict_log import VerdictLog
from .worker_commands import link_commands, serve_node_answers
from .worker_link import SingleWorker, ask_siblings, gathered_metrics, serve_link

log = logging.getLogger("robocall_shield")
TOKEN_ENV = "ROBOCALL_SHIELD_TOKEN"
# config sections a SIGHUP cannot apply: listeners, sockets and state built at start
RESTART_SECTIONS = (
    *("sip", "switches", "routing", "admin", "log", "blocklists", "subscribers"),
    *("peers", "stir", "flood", "cluster", "records", "telemarketing"),
)


class StartupError(Exception):
    """A problem that stops start-up, reported as one line."""


class Worker:
    def __init__(self, cfg: Config, role: WorkerRole | None = None) -> None:
        self.cfg = cfg
        # None: the only worker. Otherwise one of [sip] workers sharing the port.
        self.role = role if role is not None and role.count > 1 else None
        self.primary = self.role is None or self.role.primary
        self.pool = SwitchPool(cfg.switches, cfg.routing)
        self.slot = role.slot if role is not None else ArtefactSlot()
        self.reputation = self._new_reputation(cfg) if cfg.reputation.enabled else None
        self.subscribers: SubscriberService | None = None
        self.subscriber_check: SubscriberCheck | None = None
        if cfg.subscribers.enabled:
            try:
                self.subscribers = SubscriberService.from_config(cfg.subscribers)
            except (OSError, sqlite3.Error, StoreUnavailable) as exc:
                where = store_name(cfg.subscribers)
                raise StartupError(f"cannot open the subscriber store {where}: {exc}") from None
            self.subscriber_check = SubscriberCheck(
                self.subscribers.index, self.subscribers.global_allow
            )
        self.telemarketing: Telemarketing | None = None
        if cfg.telemarketing.enabled:
            try:
                self.telemarketing = Telemarketing(cfg.telemarketing, cfg.peers)
            except ZoneError as exc:
                raise StartupError(f"[telemarketing]: {exc}") from None
        self.peer_service: PeerService | None = None  # [[peers]] actions, RMD, statistics
        if cfg.peers:
            try:
                self.peer_service = PeerService(
                    cfg.peers, cfg.peer_policy, cfg.reputation.short_call_seconds
                )
            except (OSError, sqlite3.Error) as exc:
                where = cfg.peer_policy.store
                raise StartupError(f"cannot open the peer store {where}: {exc}") from None
        self.core = StatelessProxy(
            cfg,
            self._pipeline(cfg),
            self.pool,
            role.nonce if role is not None else secrets.token_hex(4),
            self.reputation,
            timer=time.perf_counter,
        )
        self.metrics = (
            StatsMetrics(self.pool, self.peer_service)  # also feeds the peer statistics
            if self.peer_service is not None
            else Metrics(self.pool, peers=PeerDirectory(cfg.peers))
        )
        self.certs: CertificateCache | None = None
        if cfg.stir.enabled:
            self.core.stir = self._stir(cfg.stir)
        self.metrics.watch_reputation(lambda: self.reputation)
        self.metrics.watch_flood(lambda: self.core.flood)
        self.kernel: KernelDropper | None = None  # [flood] kernel_drop, opened at start
        if self.subscribers is not None and self.primary:  # one count, not one per worker
            self.metrics.watch_subscribers(self.subscribers)
        self.overload = OverloadGuard(cfg.sip.overload_lag, cfg.sip.overload_backlog)
        if self.role is None:
            self.metrics.registry.register(SingleWorker())
        self.lists = BlocklistLoader(cfg.blocklists, self.slot, self.metrics.registry)
        try:
            self.verdicts = VerdictLog(cfg.log.verdict_log)
        except OSError as exc:
            raise StartupError(
                f"cannot open verdict log {cfg.log.verdict_log}: {exc.strerror}"
            ) from None
        self.records: DecisionRecorder | None = None
        if cfg.records.enabled:
            try:
                self.records = DecisionRecorder(cfg.records)
            except OSError as exc:
                raise StartupError(
                    f"cannot open the decision records in {cfg.records.dir}: {exc.strerror or exc}"
                ) from None
            self.metrics.registry.register(self.records)
        self.udp: UdpEdge | None = None
        self.ping_udp: UdpEdge | None = None
        self.own_udp: UdpEdge | None = None  # [sip] worker_port_base
        self.udp_queue: UdpQueueReader | None = None
        self.tcp: TcpEdge | None = None
        self.tls: TcpEdge | None = None  # [sip] tls_port
        self._closers: list[asyncio.BaseTransport | asyncio.AbstractServer] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._jobs: set[asyncio.Task[object]] = set()
        self._started = False
        self.draining: Drain | None = None  # set on SIGTERM, see drain()
        self.admin: AdminApi | None = None
        self.cluster: ClusterLink | None = None  # [cluster], opened at start

    def dispatch(self, events: list[Event], received_at: float | None = None) -> None:
        for ev in events:
            if isinstance(ev, Send):
                transport = ev.dest.transport
                edge = self.udp if transport == "udp" else self.tcp
                if transport == "tls":
                    edge = self.tls
                if self.own_udp is not None and edge is self.udp and ev.data[:8] != b"SIP/2.0 ":
                    edge = self.own_udp  # requests leave from the port in our Via
                if edge is None or not edge.send(ev.dest, ev.data):
                    self.metrics.send_errors.labels(ev.dest.transport).inc()
            elif isinstance(ev, Screened):
                if ev.repeat:  # logged and recorded at its first copy
                    continue
                self.verdicts.write(ev)
                if self.records is not None:
                    self.records.add(ev, time.time(), self.metrics.peers.name_of(ev.call.source))
            elif isinstance(ev, AwaitCertificate):
                self.background(self._await_certificate(ev, received_at))
            elif isinstance(ev, KernelDrop) and self.kernel is not None:
                self.background(drop_in_kernel(self.kernel, ev))
        if received_at is not None and events:
            self.metrics.transit_seconds.observe(time.monotonic() - received_at)
        if self.draining is not None:
            self.draining.saw(events, time.monotonic())
        self.metrics.record(events)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        sip = self.cfg.sip
        # Outbound calls to switches go over UDP, so UDP always listens.
        shared = self.role is not None  # siblings bind the same port (SO_REUSEPORT)
        udp = self.udp = UdpEdge(self.core, self.dispatch)
        udp.on_receive = self.metrics.receive_counter("udp")
        given = self.role.sockets if self.role is not None else None
        if given is not None:  # bound by the supervisor, read by every worker
            opening = loop.create_datagram_endpoint(lambda: udp, sock=given.udp)
        else:
            opening = loop.create_datagram_endpoint(
                lambda: udp, local_addr=(sip.host, sip.port), reuse_port=shared or None
            )
        await self._listen("udp", opening)
        self.udp_queue = None
        if udp.transport is not None:
            sock = udp.transport.get_extra_info("socket")
            if sip.udp_receive_buffer:
                grow_receive_buffer(sock, sip.udp_receive_buffer)
            self.udp_queue = UdpQueueReader(sock)
            self.metrics.registry.register(QueueMetrics(self.udp_queue))
        self.tcp = TcpEdge(self.core, self.dispatch, sip.limits)
        self.tcp.on_receive = self.metrics.receive_counter("tcp")
        tcp, closed = self.tcp, self.metrics.tcp_closed
        tcp.on_close = lambda reason: closed.labels(reason).inc()
        self.metrics.watch_tcp(lambda: len(tcp.connections), lambda: tcp.buffered)
        if given is not None and given.tcp is not None:
            await self._listen("tcp", loop.create_server(self.tcp.protocol, sock=given.tcp))
        elif "tcp" in sip.transports:
            await self._listen(
                "tcp",
                loop.create_server(self.tcp.protocol, sip.host, sip.port, reuse_port=shared),
            )
        if sip.tls_port:
            await self._listen_tls(loop, shared)
        if self.role is not None and sip.worker_port_base:
            await self._open_worker_port(loop, sip.worker_port_base + self.role.index)
        elif shared and self.cfg.routing.health_checks:
            await self._open_ping_socket(loop)
        if self.cfg.blocklists.dir:
            if self.slot.current is not None:
                self.lists.adopt()  # loaded by the supervisor before the fork
            else:
                await self.lists.reload("start-up")  # a failure is logged; calls still flow
            self._tasks.append(loop.create_task(self.lists.watch()))
        if self.telemarketing is not None:  # a failed DNC load is logged; calls still flow
            await self.telemarketing.start(self.metrics.registry)
            self._tasks.append(loop.create_task(self.telemarketing.watch()))
        if self.role is not None and not self.role.primary:
            link = self.role.link_socket(self.role.index)
            self._closers.append(await serve_link(link, *link_commands(self)))
        if self.subscribers is not None and (
            not self.primary or self.cfg.subscribers.backend != "sqlite"
        ):  # a shared store (PostgreSQL) is written by other nodes too
            self._tasks.append(loop.create_task(loops.follow_subscribers(self)))
        if self.peer_service is not None and not self.primary:  # the admin worker's overrides
            self._tasks.append(loop.create_task(self.peer_service.follow()))
        if self.cfg.admin.enabled and self.primary:
            admin = self.cfg.admin
            token = admin.token or os.environ.get(TOKEN_ENV, "")
            if not token and not ipaddress.ip_address(admin.host).is_loopback:
                raise StartupError(
                    f"the admin API listens on {admin.host} without a token: set [admin] token "
                    f"or {TOKEN_ENV}, or keep it on loopback"
                )
            api = self.admin = AdminApi(
                self.pool,
                self.metrics.registry,
                lambda: self._started and self.draining is None,
                token=token,
                status=self._status,
                actions={"/admin/blocklists/reload": self._admin_reload_lists},
                exposition=self._all_metrics if self.role is not None else None,
            )
            if self.records is not None:
                api.serve_traceback(self.records.directory)
            serve_node_answers(self, api, self._admin_explain)  # /admin/peers, reputation/
            if self.subscribers is not None:
                sub = self.cfg.subscribers
                links = LinkSigner(link_secret(sub.link_secret), self.cfg.public_url, sub.link_ttl)
                SubscriberApi(self.subscribers, links).register(api)
                Pages(self.subscribers, links, self.cfg.subscribers.disputes_per_hour).register(api)
            await self._listen(
                "admin http",
                api.start(self.cfg.admin.host, self.cfg.admin.port, self._admin_tls()),
                self.cfg.admin.host,
                self.cfg.admin.port,
            )
        if self.cfg.routing.health_checks:
            self._tasks.append(loop.create_task(loops.health_checks(self)))
        self._tasks.append(loop.create_task(loops.sweep_idle_connections(self)))
        self._tasks.append(loop.create_task(loops.flush_verdicts(self)))
        if self.records is not None and self.primary:
            self._tasks.append(loop.create_task(loops.sweep_records(self)))
        self._tasks.append(loop.create_task(loops.freeze_long_lived(self)))
        self._tasks.append(loop.create_task(loops.watch_loop_lag(self)))
        if self.cfg.cluster.enabled:
            await self._start_cluster()
        if self.reputation is not None and not sip.record_route:
            log.warning(
                "record_route is off: BYEs bypass the proxy, so reputation cannot see call "
                "durations (short-calls, snowshoe and peer-short-calls stay silent)"
            )
        if self.cfg.redress.url.startswith(("http://127.", "http://[::1]")):
            log.warning(
                "the redress page %s is on loopback: set [subscribers] public_url to where "
                "blocked callers can reach it",
                self.cfg.redress.url,
            )
        if not self.cfg.peers:
            log.warning(
                "no [[peers]] declared: requests are taken from any source; declare the "
                "upstream peers so that unknown sources get [sip] unknown_sources"
            )
        if self.cfg.redress.url == PLACEHOLDER_REDRESS_URL:
            log.warning(
                "redress contact is the embedded placeholder %s; set [redress] before "
                "blocking real traffic",
                PLACEHOLDER_REDRESS_URL,
            )
        if self.cfg.flood.enabled and self.cfg.flood.kernel_drop:
            count = self.role.count if self.role is not None else 1
            try:
                self.kernel = await open_kernel_drop(self.cfg, count, self.primary)
            except KernelDropError as exc:
                raise StartupError(f"flood.kernel_drop: {exc}") from None
        self._started = True
        log.info(
            "listening for SIP on %s:%d (%s); switches: %s",
            sip.host,
            sip.port,
            "+".join(sip.transports),
            ", ".join(f"{s.name}={s.host}:{s.port}" for s in self.cfg.switches),
        )

    async def _listen_tls(self, loop: asyncio.AbstractEventLoop, shared: bool) -> None:
        """SIP over TLS: the TCP edge's framing and limits on TLS connections,
        with client certificates required when [sip] tls_peer_ca is set."""
        sip = self.cfg.sip
        server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        client = ssl.create_default_context(cafile=sip.tls_peer_ca or None)
        try:
            server.load_cert_chain(sip.tls_cert, sip.tls_key)
            client.load_cert_chain(sip.tls_cert, sip.tls_key)  # our side of mutual TLS
            if sip.tls_peer_ca:
                server.load_verify_locations(sip.tls_peer_ca)
                server.verify_mode = ssl.CERT_REQUIRED
        except (OSError, ssl.SSLError) as exc:
            raise StartupError(f"cannot load the SIP TLS certificate, key or CA: {exc}") from None
        tls = self.tls = TcpEdge(self.core, self.dispatch, sip.limits, "tls", client)
        tls.on_receive = self.metrics.receive_counter("tls")
        await self._listen(
            "tls",
            loop.create_server(
                tls.protocol,
                sip.host,
                sip.tls_port,
                ssl=server,
                ssl_handshake_timeout=10.0,
                reuse_port=shared,
            ),
            port=sip.tls_port,
        )

    def _admin_tls(self) -> ssl.SSLContext | None:
        admin = self.cfg.admin
        if not admin.tls_cert:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            ctx.load_cert_chain(admin.tls_cert, admin.tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise StartupError(f"cannot load the admin TLS certificate or key: {exc}") from None
        return ctx

    async def _listen(
        self, what: str, opening: object, host: str | None = None, port: int | None = None
    ) -> None:
        host = host or self.cfg.sip.host
        port = port or self.cfg.sip.port
        try:
            result = await opening  # type: ignore[misc]
        except OSError as exc:
            raise StartupError(
                f"cannot listen for {what} on {host}:{port}: {exc.strerror or exc}"
            ) from None
        self._closers.append(result[0] if isinstance(result, tuple) else result)

    def _status(self) -> dict[str, object]:
        """What /healthz shows beside readiness: the loaded lists and rules."""
        out: dict[str, object] = {"blocklists": self.lists.status()}
        if self.telemarketing is not None:
            out["telemarketing"] = self.telemarketing.status()
        return out

    async def _admin_reload_lists(self) -> tuple[int, dict[str, object]]:
        result = await self.lists.reload("admin request")
        status = 422 if result.outcome == "error" else 200
        if result.outcome == "disabled":
            status = 409
        body: dict[str, object] = {
            "outcome": result.outcome,
            "version": result.version,
            "detail": result.detail,
        }
        if self.role is not None:  # every sibling reloads too; each answers for itself
            workers: dict[str, object] = {"0": body.copy()}
            for index, answer in (await ask_siblings(self.role, "reload-lists")).items():
                reply = json.loads(answer) if answer else {"outcome": "unreachable"}
                workers[str(index)] = reply
                if reply.get("outcome") in ("error", "unreachable") and status == 200:
                    status = 422
            body["workers"] = workers
        return status, body

    async def _all_metrics(self) -> bytes:
        assert self.role is not None
        return await gathered_metrics(self.role, self.metrics.registry)

    async def _open_worker_port(self, loop: asyncio.AbstractEventLoop, port: int) -> None:
        """This worker's own port, in its Via and Record-Route: responses and
        in-dialog requests of the calls it screens come back to it, so its
        reputation engine sees their outcomes, and so do its health checks."""
        host = self.cfg.sip.host
        edge = self.own_udp = UdpEdge(self.core, self.dispatch)
        edge.on_receive = self.metrics.receive_counter("udp")
        await self._listen(
            "udp (worker port)",
            loop.create_datagram_endpoint(lambda: edge, local_addr=(host, port)),
            port=port,
        )
        if "tcp" in self.cfg.sip.transports and self.tcp is not None:
            await self._listen(
                "tcp (worker port)", loop.create_server(self.tcp.protocol, host, port), port=port
            )
        self.core.port = self.core.ping_port = port
        self.core.local_ports = frozenset((self.cfg.sip.port, port))

    async def _open_ping_socket(self, loop: asyncio.AbstractEventLoop) -> None:
        """Health checks from a port of this worker's own (see core.ping_port)."""
        edge = self.ping_udp = UdpEdge(self.core, self.dispatch)
        await self._listen(
            "health checks",
            loop.create_datagram_endpoint(lambda: edge, local_addr=(self.cfg.sip.host, 0)),
            port=0,
        )
        if edge.transport is not None:
            self.core.ping_port = int(edge.transport.get_extra_info("sockname")[1])

    def _pipeline(self, cfg: Config) -> Pipeline:
        return build_pipeline(
            cfg.screening, self.slot, cfg.blocklists, self.reputation, self.subscriber_check,
            self.telemarketing.stage if self.telemarketing is not None else None,
            PeerStages(self.peer_service.actions, self.peer_service.mode)
            if self.peer_service is not None else None,
        )  # fmt: skip

    def _stir(self, cfg: StirConfig) -> StirVerifier:
        """The verifier, its certificate cache and fetcher, and their metrics."""
        try:
            trust = TrustStore.from_directory(cfg.trust_dir)
        except TrustStoreError as exc:
            raise StartupError(f"cannot load the STI-CA roots: {exc}") from None
        fetcher = HttpsFetcher(
            timeout=cfg.fetch_timeout,
            allow_private=cfg.allow_private_hosts,
            cafile=cfg.fetch_ca_file or None,
        )
        certs = self.certs = CertificateCache(
            fetcher,
            trust.key_from_response,
            max_entries=cfg.cache_entries,
            default_ttl=cfg.default_ttl,
            max_ttl=cfg.max_ttl,
            min_ttl=min(60.0, cfg.max_ttl),
            negative_ttl=cfg.negative_ttl,
            on_fetch=self.metrics.watch_certificates(lambda: self.certs),
        )
        verifier = StirVerifier(cfg, certs.lookup, certs.prefetch)
        verifier.wall_offset = time.time() - time.monotonic()  # the edges pass monotonic time
        return verifier

    async def _await_certificate(self, ev: AwaitCertificate, received_at: float | None) -> None:
        """Hold an INVITE for its certificate's one shared fetch, at most the
        [stir] budget; then screen it, verified or not."""
        assert self.certs is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.certs.get(ev.url), self.cfg.stir.budget)
        now = time.monotonic()
        self.dispatch(
            self.core.receive_message(ev.request, ev.source, now, waited=True), received_at
        )

    async def _start_cluster(self) -> None:
        """[cluster]: every worker shares its counters; the first worker
        also carries subscriber changes (unless the store itself is shared)
        and blocklist versions for the node."""
        cfg = self.cfg
        own_store = cfg.subscribers.backend == "sqlite"
        carries = self.primary and self.subscribers is not None and own_store
        lists = self.primary and bool(cfg.blocklists.dir)
        slot = self.slot
        link = self.cluster = ClusterLink(
            cfg.cluster,
            self.reputation,
            worker=self.role.index if self.role is not None else None,
            subscribers=self.subscribers if carries else None,
            lists_version=(lambda: slot.current.version if slot.current else None)
            if lists
            else None,
            reload_lists=self._cluster_reload_lists if lists else None,
            cursor_file=Path(cfg.subscribers.data_dir) / "cluster-subscribers.cursor",
        )
        self.metrics.registry.register(link.collector())
        await link.start()

    async def _cluster_reload_lists(self) -> str | None:
        """Another node loaded a different artefact: this node (and its
        workers) load what its own artefact directory holds."""
        await self._admin_reload_lists()
        return self.slot.current.version if self.slot.current else None

    def _new_reputation(self, cfg: Config) -> ReputationEngine:
        engine = ReputationEngine(cfg.reputation, self.slot)
        engine.wall_offset = time.time() - time.monotonic()  # the edges pass monotonic time
        return engine

    def _admin_explain(
        self, rest: str, others: Sequence[NumberTraffic] = ()
    ) -> tuple[int, dict[str, object]]:  # others: the siblings' counters for the number
        if self.reputation is None:
            return 409, {"error": "reputation is disabled ([reputation] enabled = false)"}
        return explain_pooled(self.reputation, rest, others, time.monotonic())

    def reload(self, new: Config) -> list[str]:
        """Apply a re-read config. Screening policy, reputation weights and
        redress take effect at once, keeping the reputation traffic state;
        listeners, switches and admin need a restart. Returns the sections
        that were not applied."""
        needs_restart = [
            name
            for name in RESTART_SECTIONS
            if getattr(new, name) != getattr(self.cfg, name)
        ]
        if not new.reputation.enabled:
            self.reputation = None
        elif self.reputation is None:
            self.reputation = self._new_reputation(new)
        else:
            self.reputation.configure(new.reputation)
        self.core.reputation = self.reputation
        if self.cluster is not None:
            self.cluster.attach(self.reputation)
        if self.peer_service is not None:  # [peer_policy] at once; SIGHUP re-reads the RMD
            self.peer_service.configure(new.peer_policy, new.reputation.short_call_seconds)
        applied = replace(
            self.cfg, screening=new.screening, redress=new.redress, reputation=new.reputation
        )
        self.core.apply_policy(applied, self._pipeline(applied))
        self.cfg = self.core.cfg
        return needs_restart

    def background(self, job: Coroutine[Any, Any, object]) -> None:
        """Run a one-off job on the loop, keeping a reference until it ends."""
        task = asyncio.get_running_loop().create_task(job)
        self._jobs.add(task)
        task.add_done_callback(self._jobs.discard)

    async def drain(self, seconds: float, hurry: asyncio.Event) -> None:
        """SIGTERM: refuse new calls (503 with Retry-After, as when
        overloaded; emergency calls still go on) and turn /readyz 503, while
        responses and in-dialog requests keep flowing, until no call is in
        flight or ``seconds`` pass (see proxy.drain); ``hurry`` ends it."""
        start = time.monotonic()
        drain = self.draining = Drain(seconds, start)
        self.core.admit = 0.0
        self.metrics.overloaded.set(1.0)
        why: str | None = None
        while not hurry.is_set():
            reputation = self.reputation
            why = drain.done(time.monotonic(), len(reputation.calls) if reputation else None)
            if why is not None:
                break
            await asyncio.sleep(0.05)
        log.info("drained in %.2f s: %s", time.monotonic() - start, why or "told again to stop")

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for closer in self._closers:
            closer.close()
        if self.admin is not None:
            self.admin.close_clients()
        for edge in (self.tcp, self.tls):
            if edge is not None:
                edge.close()
        self.lists.close()
        if self.telemarketing is not None:
            self.telemarketing.close()
        if self.certs is not None:
            self.certs.close()
        self.verdicts.close()
        if self.records is not None:
            await asyncio.to_thread(self.records.close)  # writes what is queued
        if self.cluster is not None:
            await self.cluster.close()
        if self.subscribers is not None:
            self.subscribers.close()
        if self.kernel is not None:
            with contextlib.suppress(Exception):  # a failed teardown must not stop the rest
                await self.kernel.close(teardown=self.primary)
