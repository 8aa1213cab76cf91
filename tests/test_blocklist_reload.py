"""The proxy side of the blocklists: the list checks through the proxy core
(no sockets), zero false blocks at a million numbers, then hot reload of
artefacts on a live Worker on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from blocklists.build import BuildResult, build
from blocklists.slot import ArtefactSlot
from blocklists.sources import FTC_COLUMNS, parse_source
from blocklists.store import Artefact
from proxy.config import parse_config
from proxy.core import StatelessProxy
from proxy.events import Address, Event, Screened, Send
from proxy.routing import SwitchPool
from proxy.screening import Action, build_pipeline
from proxy.screening.list_checks import BlocklistCheck
from proxy.server import Worker
from proxy.serving import reload_from_file as _reload
from proxy.sip import SipRequest, SipResponse, parse_datagram
from proxy.sip.identity import CallFacts
from tests.conftest import make_config
from tests.sipmsg import request
from tests.test_server import free_port

PEER = Address("198.51.100.10", 5060, "udp")
SWITCH = Address("192.0.2.20", 5080, "udp")
HEADER = ",".join(FTC_COLUMNS)
TOKEN = "test-token-0123456789abcdef"
X, Y, Z = "+12025550123", "+12025550124", "+12025550125"


def ftc(number: str, robo: str) -> str:
    return f"{number},2025-03-03 00:00:00,2025-03-01 10:00:00,Austin,Texas,512,Other,{robo}"


def make_lists(out: Path, **content: str) -> BuildResult:
    """One source file per kind (ftc=..., block=...), built into ``out``."""
    src = out.parent / f"src-{next(_serial)}"
    src.mkdir()
    specs = []
    for kind, text in content.items():
        (src / kind).write_text(text + "\n")
        specs.append(parse_source(f"{kind}:{src / kind}"))
    return build(specs, out)


_serial = count()


# -- the list checks through the proxy core --------------------------------


@pytest.fixture
def artefact(tmp_path: Path) -> Iterator[Artefact]:
    out = tmp_path / "out"
    make_lists(
        out,
        ftc="\n".join([
            HEADER, ftc("2125550142", "N"), ftc("2125550142", "N"), ftc("2125550142", "Y"),
            ftc("2125550199", ""), ftc("2125550143", "N"),
        ]),
        list="2125550143\n2125550150\n",
        block="+12125550160\n+12125550170\n2125550143\n",  # 0170 is also allowed
        allow="2125550170\n",
        dno="8005550180\n",
        prefix="+1900 block\n+1900555 label\n+19005551 allow\n",
    )  # fmt: skip
    art = Artefact.load(out)
    yield art
    art.close()


def list_core(art: Artefact | None, **sections: object) -> StatelessProxy:
    cfg = make_config(**sections)
    slot = ArtefactSlot()
    slot.current = art
    return StatelessProxy(
        cfg,
        build_pipeline(cfg.screening, slot, cfg.blocklists),
        SwitchPool(cfg.switches, cfg.routing),
        "t",
    )


def screen(
    core: StatelessProxy, caller: str, ruri: str = "sip:+13125550187@192.0.2.5;user=phone"
) -> tuple[Screened, SipRequest | SipResponse]:
    events: list[Event] = core.receive_datagram(
        request(caller=caller, ruri=ruri, call_id=f"{caller}-{ruri}"), PEER, 0.0
    )
    screened = [e for e in events if isinstance(e, Screened)]
    sends = [e for e in events if isinstance(e, Send)]
    assert len(screened) == 1 and len(sends) == 1, events
    msg = parse_datagram(sends[0].data)
    assert isinstance(msg, SipResponse) or sends[0].dest == SWITCH
    return screened[0], msg  # type: ignore[return-value]


def verdict_header(msg: SipRequest | SipResponse) -> str | None:
    assert isinstance(msg, SipRequest), f"expected a forwarded request, got {msg}"
    return msg.header("x-robocall-verdict")


@pytest.mark.parametrize(
    ("caller", "decided_by", "reasons"),
    [
        ("+12125550160", "blocklist", ("operator-blocklist",)),
        ("+12125550143", "blocklist", ("operator-blocklist",)),  # block beats list and FTC
        ("+12125550150", "blocklist", ("blocklist",)),
        ("+18005550180", "dno", ("dno-spoofed",)),
        ("+11005550100", "invalid_number", ("invalid-number",)),
        ("+14115550100", "invalid_number", ("invalid-number",)),
        ("212555014", "invalid_number", ("invalid-number",)),
        ("+19004440100", "prefix_rule", ("prefix-rule",)),
    ],
)
def test_blocking_checks_answer_603_with_their_reason(
    artefact: Artefact, caller: str, decided_by: str, reasons: tuple[str, ...]
) -> None:
    screened, msg = screen(list_core(artefact), caller)
    assert isinstance(msg, SipResponse) and msg.status == 603
    assert screened.action is Action.BLOCK and screened.screening.decided_by == decided_by
    assert screened.screening.verdict.reasons == reasons


def test_ftc_only_entries_label_by_default_and_block_when_configured(artefact: Artefact) -> None:
    core = list_core(artefact)
    _, msg = screen(core, "+12125550142")  # 3 complaints, one a robocall
    assert verdict_header(msg) == "label; score=75; reasons=ftc-complaints,ftc-robocall"
    assert isinstance(msg, SipRequest) and msg.from_.display == "SCAM LIKELY"
    screened, msg = screen(core, "+12125550199")  # 1 complaint, no robocall flag
    assert verdict_header(msg) == "label; score=65; reasons=ftc-complaints"
    assert screened.action is Action.LABEL and screened.screening.decided_by == "blocklist"
    _, msg = screen(core, "+19005550100")
    assert verdict_header(msg) == "label; score=70; reasons=prefix-rule"
    screened, msg = screen(list_core(artefact, blocklists={"ftc_action": "block"}), "+12125550142")
    assert isinstance(msg, SipResponse) and msg.status == 603
    assert screened.screening.verdict.reasons == ("ftc-complaints", "ftc-robocall")


def test_allow_list_prefix_exception_and_clean_callers_pass(artefact: Artefact) -> None:
    core = list_core(artefact)
    screened, msg = screen(core, "+12125550170")  # on the operator block list too
    assert verdict_header(msg) is None and screened.screening.decided_by == "blocklist_allow"
    assert screened.screening.verdict.reasons == ("operator-allowlist",)
    for caller in ("+19005551234", "+12125550141", "+442079460958"):  # allow exception, unlisted
        screened, msg = screen(core, caller)
        assert verdict_header(msg) is None and screened.screening.decided_by is None, caller
    screened, msg = screen(list_core(None), "+12125550160")  # no artefact loaded yet
    assert verdict_header(msg) is None and screened.action is Action.PASS


def test_observe_mode_records_the_verdict_and_passes(artefact: Artefact) -> None:
    core = list_core(artefact, screening={"modes": {"dno": "observe"}})
    screened, msg = screen(core, "+18005550180")
    assert verdict_header(msg) is None and screened.action is Action.PASS
    assert [(n, v.reasons) for n, v in screened.screening.observed] == [("dno", ("dno-spoofed",))]
    assert screen(core, "+12125550160")[1].status == 603  # type: ignore[union-attr]  # others enforce


def test_emergency_beats_every_list(artefact: Artefact) -> None:
    core = list_core(artefact)
    for caller in ("+12125550160", "+18005550180", "+11005550100", "+19004440100", "+12125550142"):
        for ruri in ("sip:911@192.0.2.5", "tel:933", "urn:service:sos"):
            screened, msg = screen(core, caller, ruri)
            assert verdict_header(msg) is None and screened.screening.decided_by == "emergency"


# -- zero false blocks ----------------------------------------------------


def random_nanp(rng: np.random.Generator, n: int) -> np.ndarray:
    npa = rng.integers(200, 1000, n)
    npa = npa[npa % 100 != 11]
    nxx = rng.integers(200, 1000, len(npa))
    line = rng.integers(0, 10000, len(npa))
    keys = 10_000_000_000 + npa * 10_000_000 + nxx * 10_000 + line
    return rng.permutation(np.unique(keys))


def test_a_million_unlisted_numbers_are_never_blocked(tmp_path: Path) -> None:
    n = 1_000_000
    keys = random_nanp(np.random.default_rng(20250303), 2_150_000)
    assert len(keys) >= 2 * n
    listed, others = keys[:n], keys[n : 2 * n]
    path = tmp_path / "big.txt"
    path.write_text("\n".join(map(str, (listed - 10_000_000_000).tolist())) + "\n")
    result = build([parse_source(f"list:{path}")], tmp_path / "out", 0.001)
    assert result.manifest["counts"]["numbers"] == n
    art = Artefact.load(tmp_path / "out")
    bloom, lookup = art.bloom, art.lookup
    maybe = [k for k in others.tolist() if k in bloom]
    assert 0.0002 * n <= len(maybe) <= 0.005 * n
    assert not any(lookup(k) for k in others.tolist())
    assert art.bloom_false_positives == len(maybe)
    assert all(lookup(k) is not None for k in listed[:2000].tolist())  # the list does work
    slot = ArtefactSlot()
    slot.current = art
    check = BlocklistCheck(slot, "block")
    for k in maybe[:3000]:  # every Bloom-positive one (about 1,000)
        facts = CallFacts(
            method="INVITE", call_id="c", source="198.51.100.10", caller=f"+{k}", caller_key=k,
            caller_display=None, asserted=False, anonymous=False, privacy_id=False,
            callee="+13125550187", callee_key=13125550187, emergency_urn=False, identity=None,
        )  # fmt: skip
        assert check.check(facts) is None
    hit = check.check(dataclasses.replace(facts, caller_key=int(listed[0])))
    assert hit is not None and hit.action is Action.BLOCK


# -- hot reload on a live worker ------------------------------------------


class Inbox(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.queue.put_nowait(data)


async def inbox() -> tuple[Inbox, int]:
    transport, proto = await asyncio.get_running_loop().create_datagram_endpoint(
        Inbox, local_addr=("127.0.0.1", 0)
    )
    return proto, int(transport.get_extra_info("sockname")[1])


@dataclass
class Live:
    worker: Worker
    switch: Inbox
    caller: Inbox
    caller_port: int
    sip: int
    admin: int
    lists: Path
    config: dict[str, Any]
    calls: Iterator[int] = field(default_factory=count)

    async def call(self, number: str) -> int | str:
        """Send an INVITE from ``number``: the caller's response status if the
        proxy answers (603), or "forwarded" if the switch receives it."""
        n = next(self.calls)
        assert self.caller.transport is not None
        self.caller.transport.sendto(
            request(
                caller=number,
                ruri=f"sip:+13125550187@127.0.0.1:{self.sip}",
                via_host=f"127.0.0.1:{self.caller_port}",
                branch=f"z9hG4bK-live-{n}",
                call_id=f"live-{n}",
            ),
            ("127.0.0.1", self.sip),
        )
        for _ in range(300):
            if not self.caller.queue.empty():
                resp = parse_datagram(self.caller.queue.get_nowait())
                assert isinstance(resp, SipResponse) and resp.call_id == f"live-{n}"
                return resp.status
            if not self.switch.queue.empty():
                fwd = parse_datagram(self.switch.queue.get_nowait())
                assert isinstance(fwd, SipRequest) and fwd.call_id == f"live-{n}"
                return "forwarded"
            await asyncio.sleep(0.01)
        raise AssertionError(f"INVITE from {number} got no answer and was not forwarded")

    async def http(
        self, path: str, method: str = "GET", token: str | None = None
    ) -> tuple[int, Any]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.admin)
        auth = f"Authorization: Bearer {token}\r\n" if token is not None else ""
        writer.write(f"{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}\r\n".encode())
        data = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        head, _, body = data.partition(b"\r\n\r\n")
        text = body.decode()
        return int(head.split()[1]), json.loads(text) if text.startswith("{") else text

    async def reload(self, token: str | None = TOKEN) -> tuple[int, Any]:
        return await self.http("/admin/blocklists/reload", "POST", token)

    async def status(self) -> dict[str, Any]:
        code, body = await self.http("/healthz")
        assert code == 200
        return body["blocklists"]  # type: ignore[no-any-return]

    async def metrics(self) -> str:
        code, body = await self.http("/metrics")
        assert code == 200
        return body  # type: ignore[no-any-return]

    async def until(self, what: str, ok: Any, timeout: float = 5.0) -> None:
        for _ in range(int(timeout / 0.02)):
            if ok():
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"timed out waiting for {what}")


@contextlib.asynccontextmanager
async def running(
    tmp_path: Path, *, watch: float = 0.0, token: str = TOKEN, with_dir: bool = True, **first: str
) -> AsyncIterator[Live]:
    """A worker on free loopback ports; ``first`` lists are built before start."""
    switch, switch_port = await inbox()
    caller, caller_port = await inbox()
    lists = tmp_path / f"lists-{next(_serial)}"
    lists.mkdir()
    if first:
        make_lists(lists, **first)
    config = {
        "sip": {"host": "127.0.0.1", "port": free_port(), "transports": ["udp"]},
        "switches": [{"name": "sw", "host": "127.0.0.1", "port": switch_port}],
        "routing": {"health_checks": False},
        "admin": {"host": "127.0.0.1", "port": free_port(), "token": token},
        "log": {"verdict_log": ""},
        "blocklists": {"dir": str(lists) if with_dir else "", "watch_interval": watch},
    }
    worker = Worker(parse_config(config))
    await worker.start()
    live = Live(
        worker,
        switch,
        caller,
        caller_port,
        config["sip"]["port"],
        config["admin"]["port"],
        lists,
        config,
    )  # type: ignore[index]
    try:
        yield live
    finally:
        await worker.stop()
        for proto in (switch, caller):
            assert proto.transport is not None
            proto.transport.close()


def version(live: Live) -> str | None:
    art = live.worker.slot.current
    return art.version if art else None


async def test_manifest_watcher_swaps_in_a_new_build(tmp_path: Path) -> None:
    async with running(tmp_path, watch=0.2, block=X) as live:
        a = version(live)
        assert a is not None and await live.call(X) == 603 and await live.call(Y) == "forwarded"
        b = make_lists(live.lists, block=f"{Y}\n{Z}", allow=X).version
        await live.until("the watcher to load B", lambda: version(live) == b)
        assert (
            await live.call(X) == "forwarded"
            and await live.call(Y) == 603
            and await live.call(Z) == 603
        )
        status = await live.status()
        assert (
            status["version"] == b
            and status["counts"]["numbers"] == 2
            and status["counts"]["allow"] == 1
        )
        assert 0 <= status["age_seconds"] < 60 and "last_error" not in status
        await asyncio.sleep(0.5)  # an unchanged manifest is not reloaded again
        metrics = await live.metrics()
        assert f'rs_blocklist_info{{version="{b}"}} 1.0' in metrics
        assert 'rs_blocklist_reloads_total{outcome="loaded"} 2.0' in metrics
        assert 'rs_blocklist_reloads_total{outcome="unchanged"} 0.0' in metrics
        assert 'rs_blocklist_reloads_total{outcome="error"} 0.0' in metrics
        assert 'rs_blocklist_entries{kind="numbers"} 2.0' in metrics
        assert 'rs_blocklist_entries{kind="allow"} 1.0' in metrics
        assert 'rs_blocklist_entries{kind="prefix_rules"} 0.0' in metrics
        assert "rs_blocklist_age_seconds " in metrics


def tamper(lists: Path, how: str) -> None:
    manifest = json.loads((lists / "manifest.json").read_text())
    if how == "file":
        target = lists / manifest["version"] / "keys.u64"
        target.write_bytes(b"\xff" * 8 + target.read_bytes()[8:])
    else:  # the manifest records a checksum the file does not have
        manifest["files"]["bloom.bin"]["sha256"] = "0" * 64
        (lists / "manifest.json").write_text(json.dumps(manifest))


async def test_admin_reload_token_and_a_broken_build_keeps_the_old_artefact(tmp_path: Path) -> None:
    async with running(tmp_path, block=X) as live:  # no watcher: only POST reloads
        a = version(live)
        assert (await live.reload(None))[0] == 401
        assert (await live.reload("wrong-token-0123456789"))[0] == 401
        assert (await live.http("/admin/blocklists/reload"))[0] == 405
        assert await live.reload() == (200, {"outcome": "unchanged", "version": a, "detail": ""})
        b = make_lists(live.lists, block=Y).version
        assert await live.call(X) == 603  # B is built but not loaded yet
        assert await live.reload() == (200, {"outcome": "loaded", "version": b, "detail": ""})
        assert await live.call(X) == "forwarded" and await live.call(Y) == 603
        for n, how in enumerate(("file", "manifest"), 1):
            make_lists(live.lists, block=f"{X}\n{Y}\n{Z}")
            tamper(live.lists, how)
            code, body = await live.reload()
            assert code == 422 and body["outcome"] == "error" and body["version"] == b
            assert "sha256 does not match" in body["detail"]
            assert version(live) == b
            assert await live.call(X) == "forwarded" and await live.call(Y) == 603
            assert await live.call(Z) == "forwarded"
            status = await live.status()
            assert status["version"] == b and status["last_error"] == body["detail"]
            metrics = await live.metrics()
            assert f'rs_blocklist_reloads_total{{outcome="error"}} {n}.0' in metrics
            assert f'rs_blocklist_info{{version="{b}"}} 1.0' in metrics
            assert 'rs_blocklist_entries{kind="numbers"} 1.0' in metrics
        c = make_lists(live.lists, block=Z).version
        assert (await live.reload())[1]["outcome"] == "loaded" and version(live) == c
        assert "last_error" not in await live.status()
        assert await live.call(Y) == "forwarded" and await live.call(Z) == 603


async def test_watcher_rejects_a_broken_build_and_keeps_blocking(tmp_path: Path) -> None:
    async with running(tmp_path, watch=0.2, block=X) as live:
        a = version(live)
        make_lists(live.lists, block=Y)
        tamper(live.lists, "file")  # before the loop runs again: the watcher sees it broken
        await live.until("the watcher to report the error", lambda: live.worker.slot.last_error)
        assert (
            version(live) == a and await live.call(X) == 603 and await live.call(Y) == "forwarded"
        )
        status = await live.status()
        assert status["version"] == a and "keys.u64: sha256 does not match" in status["last_error"]
        await asyncio.sleep(0.5)  # the broken manifest is not retried in a loop
        assert 'rs_blocklist_reloads_total{outcome="error"} 1.0' in await live.metrics()
        b = make_lists(live.lists, block=Y).version
        await live.until("the watcher to load the fixed build", lambda: version(live) == b)
        assert "last_error" not in await live.status() and await live.call(Y) == 603


async def test_start_without_artefact_passes_calls_and_sighup_loads_one(tmp_path: Path) -> None:
    async with running(tmp_path) as live:
        status = await live.status()
        assert "version" not in status and "manifest.json" in status["last_error"]
        assert await live.call(X) == "forwarded"
        assert 'rs_blocklist_entries{kind="numbers"} 0.0' in await live.metrics()
        a = make_lists(live.lists, block=X).version
        cfg = live.config
        toml = tmp_path / "proxy.toml"
        toml.write_text(
            f'[sip]\nhost = "127.0.0.1"\nport = {cfg["sip"]["port"]}\ntransports = ["udp"]\n'
            f'[[switches]]\nname = "sw"\nhost = "127.0.0.1"\nport = {cfg["switches"][0]["port"]}\n'
            f"[routing]\nhealth_checks = false\n"
            f'[admin]\nhost = "127.0.0.1"\nport = {cfg["admin"]["port"]}\ntoken = "{TOKEN}"\n'
            f'[log]\nverdict_log = ""\n'
            f'[blocklists]\ndir = "{live.lists}"\nwatch_interval = 0.0\n'
        )
        _reload(live.worker, str(toml))  # what SIGHUP does
        await live.until("SIGHUP to load the artefact", lambda: version(live) == a)
        assert await live.call(X) == 603 and "last_error" not in await live.status()


async def test_reload_endpoint_without_token_or_without_dir(tmp_path: Path) -> None:
    async with running(tmp_path, token="", block=X) as live:
        code, body = await live.reload(TOKEN)
        assert code == 403 and "token" in body["error"]
        assert await live.call(X) == 603  # the artefact loaded at start-up is used
    async with running(tmp_path, with_dir=False) as live:
        assert await live.reload() == (
            409,
            {"outcome": "disabled", "version": None, "detail": "no [blocklists] dir configured"},
        )
        assert await live.status() == {"dir": None}
        assert await live.call(X) == "forwarded"


async def test_admin_reads_a_small_body_and_refuses_a_large_one() -> None:
    from prometheus_client import CollectorRegistry

    from proxy.admin import AdminApi
    from proxy.config import RoutingConfig, SwitchConfig
    from proxy.routing import SwitchPool

    api = AdminApi(
        SwitchPool((SwitchConfig(),), RoutingConfig()), CollectorRegistry(), lambda: True
    )
    server = await api.start("127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        for length, expected in ((10, b"HTTP/1.1 405"), (10_000_000, b"HTTP/1.1 413")):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                f"POST /healthz HTTP/1.1\r\nContent-Length: {length}\r\n\r\n".encode() + b"x" * 10
            )
            head = await asyncio.wait_for(reader.readline(), 5)
            assert head.startswith(expected), head
            writer.close()
    finally:
        server.close()
