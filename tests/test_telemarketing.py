"""The telemarketing check through the proxy core, and wired into a worker
on loopback: calling hours at the callee, the National DNC list, only for
the listed trunks, never for emergency calls, and observe mode."""

from __future__ import annotations

import asyncio
import datetime
import json
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from blocklists.build import build
from blocklists.sources import parse_source
from blocklists.store import Artefact
from proxy.config import Config, parse_config
from proxy.core import StatelessProxy
from proxy.events import Address, Event, Screened, Send
from proxy.routing import SwitchPool
from proxy.screening import Action, build_pipeline
from proxy.server import Worker
from proxy.sip import SipRequest, SipResponse, parse_datagram
from proxy.telemarketing.check import Telemarketing
from proxy.telemarketing.zones import ZoneTable
from tests.conftest import make_config
from tests.sipmsg import request
from tests.test_server import Peer, free_port

TM = Address("198.51.100.10", 5060, "udp")  # the telemarketer's trunk
CARRIER = Address("203.0.113.5", 5060, "udp")  # an ordinary upstream carrier
SWITCH = Address("192.0.2.20", 5080, "udp")
PEERS = [
    {"name": "tm-dialer", "addresses": ["198.51.100.0/28"]},
    {"name": "carrier-a", "addresses": ["203.0.113.0/28"]},
]
CHICAGO = "sip:+13125550187@192.0.2.5;user=phone"  # area code 312
NOW = 5000.0  # the monotonic `now` the edges would pass


@pytest.fixture(scope="module")
def zones() -> ZoneTable:
    return ZoneTable.build()


def local(zone: str, hour: int, minute: int = 0) -> float:
    return datetime.datetime(2025, 7, 1, hour, minute, tzinfo=ZoneInfo(zone)).timestamp()


def tm_core(
    zones: ZoneTable, wall: float, dnc: Artefact | None = None, **section: Any
) -> StatelessProxy:
    """A core with the trunk's telemarketing stage; its clock reads ``wall``
    when the edges pass NOW."""
    cfg = make_config(peers=PEERS, telemarketing={"trunks": ["tm-dialer"], **section})
    tm = Telemarketing(cfg.telemarketing, cfg.peers, zones)
    tm.check.wall_offset = wall - NOW
    tm.slot.current = dnc
    pipeline = build_pipeline(cfg.screening, telemarketing=tm.stage)
    return StatelessProxy(cfg, pipeline, SwitchPool(cfg.switches, cfg.routing), "t")


def call(
    core: StatelessProxy, source: Address, ruri: str = CHICAGO, tag: str = "1"
) -> tuple[Screened, SipRequest | SipResponse]:
    events: list[Event] = core.receive_datagram(
        request(ruri=ruri, call_id=f"tm-{tag}", via_host=f"{source.host}:5060"), source, NOW
    )
    (screened,) = [e for e in events if isinstance(e, Screened)]
    (sent,) = [e for e in events if isinstance(e, Send)]
    msg = parse_datagram(sent.data)
    assert msg is not None
    if isinstance(msg, SipRequest):
        assert sent.dest == SWITCH
    return screened, msg


def blocked_with(screened: Screened, msg: SipRequest | SipResponse, *reasons: str) -> None:
    assert isinstance(msg, SipResponse) and msg.status == 603
    assert msg.header("reason") is not None and "603" in (msg.header("reason") or "")
    assert screened.action is Action.BLOCK
    assert screened.screening.decided_by == "telemarketing"
    assert screened.screening.verdict.reasons == reasons


@pytest.fixture
def dnc(tmp_path: Path) -> Any:
    src = tmp_path / "registry.txt"
    src.write_text("3125550187\n")
    build([parse_source(f"dnc:{src}")], tmp_path / "dnc")
    art = Artefact.load(tmp_path / "dnc")
    yield art
    art.close()


def test_a_telemarketing_call_at_22_callee_time_is_blocked(zones: ZoneTable) -> None:
    core = tm_core(zones, local("America/Chicago", 22))
    blocked_with(*call(core, TM), "tsr-calling-hours")


def test_the_same_call_from_another_peer_passes(zones: ZoneTable) -> None:
    screened, msg = call(tm_core(zones, local("America/Chicago", 22)), CARRIER)
    assert isinstance(msg, SipRequest) and screened.action is Action.PASS
    assert screened.screening.decided_by is None


@pytest.mark.parametrize(
    ("hour", "minute", "ok"), [(7, 59, False), (8, 0, True), (20, 59, True), (21, 0, False)]
)
def test_the_window_is_the_callee_s_not_the_proxy_s(
    zones: ZoneTable, hour: int, minute: int, ok: bool
) -> None:
    """At 20:30 in Chicago it is 21:30 in New York: the Chicago callee may be
    called, the New York one may not."""
    wall = local("America/Chicago", hour, minute)
    screened, msg = call(tm_core(zones, wall), TM)
    assert isinstance(msg, SipRequest) is ok and (screened.action is Action.PASS) is ok
    ny = call(tm_core(zones, local("America/Chicago", 20, 30)), TM, "sip:+12125550142@x", "ny")
    blocked_with(*ny, "tsr-calling-hours")


def test_dnd_hours_and_an_explicit_window_have_their_own_reasons(zones: ZoneTable) -> None:
    at_1730 = local("America/Chicago", 17, 30)
    assert isinstance(call(tm_core(zones, at_1730), TM)[1], SipRequest)  # TSR: fine
    blocked_with(*call(tm_core(zones, at_1730, hours="dnd"), TM), "dnd-calling-hours")
    own = tm_core(zones, at_1730, start="10:00", end="17:30")
    blocked_with(*call(own, TM), "calling-hours")


def test_a_callee_on_the_national_dnc_list_is_blocked(zones: ZoneTable, dnc: Artefact) -> None:
    noon = local("America/Chicago", 12)
    blocked_with(*call(tm_core(zones, noon, dnc), TM), "national-dnc")
    other = call(tm_core(zones, noon, dnc), TM, "sip:+13125550188@x", "other")
    assert isinstance(other[1], SipRequest)  # not listed, within hours
    late = tm_core(zones, local("America/Chicago", 22), dnc)
    blocked_with(*call(late, TM), "national-dnc", "tsr-calling-hours")
    screened, msg = call(tm_core(zones, noon, dnc), CARRIER)
    assert isinstance(msg, SipRequest) and screened.action is Action.PASS


def test_observe_mode_only_records_the_verdict(zones: ZoneTable, dnc: Artefact) -> None:
    core = tm_core(zones, local("America/Chicago", 22), dnc, mode="observe")
    screened, msg = call(core, TM)
    assert isinstance(msg, SipRequest) and screened.action is Action.PASS
    ((name, verdict),) = screened.screening.observed
    assert name == "telemarketing" and verdict.action is Action.BLOCK
    assert verdict.reasons == ("national-dnc", "tsr-calling-hours")


def test_emergency_calls_are_never_affected(zones: ZoneTable, dnc: Artefact) -> None:
    core = tm_core(zones, local("America/Chicago", 3), dnc)
    screened, msg = call(core, TM, "sip:911@192.0.2.5", "911")
    assert isinstance(msg, SipRequest) and screened.screening.decided_by == "emergency"


def test_an_unplaced_callee_is_held_to_the_continental_overlap(zones: ZoneTable) -> None:
    toll_free = "sip:+18005550100@192.0.2.5"
    at_2130 = tm_core(zones, local("America/New_York", 21, 30))  # 18:30 in Los Angeles
    blocked_with(*call(at_2130, TM, toll_free, "tf"), "tsr-calling-hours")
    at_1200 = tm_core(zones, local("America/New_York", 12))
    assert isinstance(call(at_1200, TM, toll_free, "tf2")[1], SipRequest)


# -- wired into a worker on loopback ---------------------------------------


async def bind(host: str) -> Peer:
    loop = asyncio.get_running_loop()
    _, peer = await loop.create_datagram_endpoint(Peer, local_addr=(host, 0))
    return peer


def worker_config(tmp_path: Path, sip_port: int, switch_port: int) -> Config:
    return parse_config(
        {
            "sip": {"host": "127.0.0.1", "port": sip_port},
            "switches": [{"name": "sw", "host": "127.0.0.1", "port": switch_port}],
            "peers": [
                {"name": "tm-dialer", "addresses": ["127.0.0.2/32"]},
                {"name": "carrier-a", "addresses": ["127.0.0.3/32"]},
            ],
            "routing": {"health_checks": False},
            "admin": {"enabled": False},
            "subscribers": {"enabled": False},
            "reputation": {"enabled": False},
            "log": {"verdict_log": str(tmp_path / "verdicts.jsonl")},
            # a window of the whole day: this test is about the list, not the clock
            "telemarketing": {
                "trunks": ["tm-dialer"],
                "start": "00:00",
                "end": "24:00",
                "dnc_dir": str(tmp_path / "dnc"),
                "watch_interval": 0.05,
            },
        }
    )


async def test_a_worker_loads_the_list_at_start_and_follows_new_builds(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("3125550187\n")
    build([parse_source(f"dnc:{tmp_path / 'a.txt'}")], tmp_path / "dnc")
    switch = await bind("127.0.0.1")
    assert switch.transport is not None
    sip_port = free_port()
    worker = Worker(
        worker_config(tmp_path, sip_port, switch.transport.get_extra_info("sockname")[1])
    )
    tm, carrier = await bind("127.0.0.2"), await bind("127.0.0.3")
    serial = iter(range(100))

    async def outcome(peer: Peer, callee: str) -> str:
        assert peer.transport is not None
        host, port = peer.transport.get_extra_info("sockname")
        invite = request(
            ruri=f"sip:{callee}@127.0.0.1:{sip_port}",
            via_host=f"{host}:{port}",
            call_id=f"w-{next(serial)}",
        )
        peer.transport.sendto(invite, ("127.0.0.1", sip_port))
        answers = {asyncio.ensure_future(peer.get()), asyncio.ensure_future(switch.get())}
        done, pending = await asyncio.wait(answers, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        data, _ = done.pop().result()
        return "forwarded" if data.startswith(b"INVITE") else data.split(b"\r\n", 1)[0].decode()

    await worker.start()
    try:
        assert await outcome(tm, "+13125550187") == "SIP/2.0 603 Network Blocked"
        assert await outcome(tm, "+13125550188") == "forwarded"
        assert await outcome(carrier, "+13125550187") == "forwarded"
        assert worker.metrics.registry.get_sample_value("rs_dnc_numbers") == 1

        (tmp_path / "b.txt").write_text("3125550187\n3125550188\n")
        build([parse_source(f"dnc:{tmp_path / 'b.txt'}")], tmp_path / "dnc")
        for _ in range(100):  # the watcher looks every 0.05 s
            if worker.metrics.registry.get_sample_value("rs_dnc_numbers") == 2:
                break
            await asyncio.sleep(0.05)
        assert await outcome(tm, "+13125550188") == "SIP/2.0 603 Network Blocked"
        worker.verdicts.flush()
        log = tmp_path / "verdicts.jsonl"
        blocked: list[dict[str, Any]] = []
        for _ in range(100):  # the verdict log is written by a thread
            lines = log.read_text().splitlines() if log.exists() else []
            blocked = [r for r in map(json.loads, lines) if r["action"] == "block"]
            if len(blocked) == 2:
                break
            await asyncio.sleep(0.02)
        assert len(blocked) == 2 and all(r["reasons"] == ["national-dnc"] for r in blocked)
        assert all(r["decided_by"] == "telemarketing" for r in blocked)
        health = worker._status()["telemarketing"]  # what /healthz shows
        assert isinstance(health, dict) and health["trunks"] == ["tm-dialer"]
        assert health["dnc"]["numbers"] == 2 and health["dnc"]["version"]
    finally:
        await worker.stop()
        for peer in (switch, tm, carrier):
            assert peer.transport is not None
            peer.transport.close()
