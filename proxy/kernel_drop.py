"""[flood] kernel_drop: abusive source addresses dropped by nftables, so
their datagrams and segments never reach the proxy's sockets.

Everything lives in a table of our own, created at start and deleted at
shutdown, so the host's firewall is never touched::

    table inet robocall_shield {
        set blocked { type ipv4_addr; flags timeout; timeout 300s; }
        chain input {
            type filter hook input priority -10; policy accept;
            meta nfproto ipv4 ip saddr @blocked meta l4proto udp th dport 5060 drop
            meta nfproto ipv4 ip saddr @blocked meta l4proto tcp th dport 5060 drop
        }
    }

An address goes in with a timeout and the kernel removes it when that runs
out. Spoken over netlink with pyroute2 (the optional ``kernel`` extra,
imported lazily), no ``nft`` binary needed. pyroute2 0.9's asynchronous
``sets("add")`` fails on its own reply handling, so the set is created with
the lower-level ``_command`` it wraps. uvloop cannot open netlink
sockets, so the netlink talk runs on a plain asyncio loop in a thread of its
own. IPv4 only: IPv6 sources are limited but never kernel-dropped.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from .config import Config
from .events import KernelDrop

T = TypeVar("T")

TABLE = "robocall_shield"
SET = "blocked"
CHAIN = "input"
PRIORITY = -10  # ahead of the usual filter chains at 0
NFPROTO_INET, NFPROTO_IPV4 = 1, 2
META_NFPROTO, META_L4PROTO = 15, 16
PAYLOAD_NETWORK, PAYLOAD_TRANSPORT = 1, 2
CMP_EQ, CMP_LTE, CMP_GTE = 0, 3, 5
NF_DROP = 0
PROTOCOLS = (17, 6)  # udp, tcp


class KernelDropError(Exception):
    """Kernel drop cannot work here; the message says why, in one line."""


def _pyroute2() -> Any:
    try:
        from pyroute2.nftables import main
    except ImportError:
        raise KernelDropError(
            "[flood] kernel_drop needs pyroute2: pip install 'robocall-shield[kernel]'"
        ) from None
    return main


class KernelDropper:
    """Our nftables table; ``ports`` are the (lowest, highest) SIP port
    ranges whose UDP and TCP traffic from a dropped address is discarded."""

    def __init__(self, ports: tuple[tuple[int, int], ...], table: str = TABLE) -> None:
        self.ports = ports
        self.table = table
        self._nft: Any = None
        self._set: Any = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="kernel-drop")
        self._loop = asyncio.SelectorEventLoop()  # not uvloop's: see the module doc

    async def _call(self, job: Coroutine[Any, Any, T]) -> T:
        """Run ``job`` on our own loop, in our own thread."""
        running = asyncio.get_running_loop()
        return await running.run_in_executor(self._thread, self._loop.run_until_complete, job)

    async def setup(self, default_seconds: int) -> None:
        """(Re)create our table: one left by a process that died is replaced."""
        await self._call(self._setup(default_seconds))

    async def drop(self, host: str, seconds: int) -> bool:
        """Drop ``host`` for ``seconds``; False for an address that is not IPv4."""
        return await self._call(self._drop(host, seconds))

    async def members(self) -> dict[str, float]:
        """Dropped addresses and the seconds each has left."""
        return await self._call(self._members())

    async def close(self, teardown: bool) -> None:
        """Close the socket; with ``teardown``, delete our table first."""
        try:
            await self._call(self._close(teardown))
        finally:
            self._thread.shutdown(wait=True)
            self._loop.close()

    async def _socket(self) -> Any:
        if self._nft is None:
            main = _pyroute2()
            nft = main.AsyncNFTables(nfgen_family=NFPROTO_INET)
            try:
                await nft.setup_endpoint()
            except (OSError, ValueError) as exc:
                nft.close()
                raise KernelDropError(f"cannot open an nftables netlink socket: {exc}") from None
            self._nft = nft
            self._set = main.NFTSet(table=self.table, name=SET, key_type="ipv4_addr")
        return self._nft

    async def _setup(self, default_seconds: int) -> None:
        nft = await self._socket()
        main = _pyroute2()
        from pyroute2.netlink.nfnetlink.nftsocket import NFT_MSG_NEWSET, nft_set_msg

        try:
            await self._delete_table(nft)
            await nft.table("add", name=self.table)
            await nft.chain(
                "add",
                table=self.table,
                name=CHAIN,
                hook="input",
                type="filter",
                priority=PRIORITY,
                policy=1,  # accept: the chain only drops members
            )
            self._set = main.NFTSet(
                table=self.table, name=SET, key_type="ipv4_addr", timeout=default_seconds * 1000
            )
            await nft._command(nft_set_msg, {"add": NFT_MSG_NEWSET}, "add", self._set.as_netlink())
            for proto in PROTOCOLS:
                for low, high in self.ports:
                    await nft.rule(
                        "add", table=self.table, chain=CHAIN, expressions=_rule(proto, low, high)
                    )
        except Exception as exc:  # pyroute2's NetlinkError, or its own errors
            why = _why(exc)
            raise KernelDropError(f"cannot create nftables table {self.table}: {why}") from None

    async def _drop(self, host: str, seconds: int) -> bool:
        try:
            if ipaddress.ip_address(host).version != 4:
                return False
        except ValueError:
            return False
        nft = await self._socket()
        try:
            await nft.set_elems(
                "add", set=self._set, elements=[{"value": host, "timeout": seconds * 1000}]
            )
        except Exception as exc:
            raise KernelDropError(f"cannot add {host} to the drop set: {_why(exc)}") from None
        return True

    async def _members(self) -> dict[str, float]:
        nft = await self._socket()
        elements = await nft.set_elems("get", set=self._set)
        return {str(e.value): (e.expiration or 0) / 1000 for e in elements}

    async def _close(self, teardown: bool) -> None:
        nft, self._nft = self._nft, None
        if nft is None:
            return
        try:
            if teardown:
                await self._delete_table(nft)
        finally:
            nft.close()

    async def _delete_table(self, nft: Any) -> None:
        try:
            await nft.table("del", name=self.table)
        except Exception as exc:  # pyroute2's NetlinkError carries the errno as code
            if _errno(exc) != errno.ENOENT:
                raise


def _rule(proto: int, low: int, high: int) -> list[list[Any]]:
    """meta nfproto ipv4 ip saddr @blocked meta l4proto P th dport LOW-HIGH drop"""
    from pyroute2.nftables.expressions import genex, verdict

    def cmp(op: int, data: bytes) -> Any:
        return genex("cmp", {"sreg": 1, "op": op, "data": {"attrs": [("NFTA_DATA_VALUE", data)]}})

    exprs = [
        genex("meta", {"dreg": 1, "key": META_NFPROTO}),
        cmp(CMP_EQ, bytes([NFPROTO_IPV4])),
        genex("payload", {"dreg": 1, "base": PAYLOAD_NETWORK, "offset": 12, "len": 4}),
        genex("lookup", {"set": SET, "sreg": 1}),
        genex("meta", {"dreg": 1, "key": META_L4PROTO}),
        cmp(CMP_EQ, bytes([proto])),
        genex("payload", {"dreg": 1, "base": PAYLOAD_TRANSPORT, "offset": 2, "len": 2}),
    ]
    if low == high:
        exprs.append(cmp(CMP_EQ, low.to_bytes(2, "big")))
    else:  # big-endian bytes compare in port order
        exprs += [cmp(CMP_GTE, low.to_bytes(2, "big")), cmp(CMP_LTE, high.to_bytes(2, "big"))]
    return [[e] for e in exprs] + [verdict(NF_DROP)]


def _errno(exc: Exception) -> int | None:
    code = getattr(exc, "code", None)
    return code if isinstance(code, int) else getattr(exc, "errno", None)


def _why(exc: Exception) -> str:
    if _errno(exc) == errno.EPERM:
        return "operation not permitted (needs root or CAP_NET_ADMIN)"
    return str(exc) or type(exc).__name__


async def open_kernel_drop(cfg: Config, workers: int, primary: bool) -> KernelDropper:
    """[flood] kernel_drop for one worker: the first (re)creates our table
    (deleted again at stop); siblings only add addresses to it. Covers the
    SIP port and, with [sip] worker_port_base, the workers' own ports."""
    sip = cfg.sip
    ports = [(sip.port, sip.port)]
    if sip.worker_port_base:
        ports.append((sip.worker_port_base, sip.worker_port_base + workers - 1))
    dropper = KernelDropper(tuple(ports))
    if primary:
        try:
            await dropper.setup(cfg.flood.kernel_drop_seconds)
        except KernelDropError:
            await dropper.close(teardown=False)
            raise
    return dropper


async def drop_in_kernel(dropper: KernelDropper, ev: KernelDrop) -> None:
    """Add a flooding source; a failure is logged (the proxy still limits it)."""
    log = logging.getLogger("robocall_shield.flood")
    try:
        if await dropper.drop(ev.host, ev.seconds):
            log.warning("flood: %s dropped in the kernel for %d s", ev.host, ev.seconds)
    except KernelDropError as exc:
        log.error("flood: %s", exc)
