"""GET /admin/peers, /admin/peers/<name>, POST /admin/peers/<name>/action and
GET /admin/peers/<name>/audit: the token, validation, the audit trail, the
override surviving a restart, a sibling following it, the store failing,
and the RMD import's state; then a live worker on loopback."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from proxy.admin import AdminApi, Response
from proxy.config import parse_config
from proxy.gateway.actions import Setting
from proxy.gateway.admin import PeerAdmin
from proxy.gateway.service import PeerService
from proxy.gateway.settings import PeerPolicyConfig
from proxy.peers import PeerConfig
from proxy.routing import SwitchPool
from proxy.server import Worker
from tests.sipmsg import request
from tests.test_peers_rmd import HEADER, row
from tests.test_server import free_port, loopback_config, open_peer

TOKEN = "peers-admin-token-0123456789"
AUTH = {"authorization": f"Bearer {TOKEN}"}
PEERS = (
    PeerConfig("gateway-x", ("203.0.113.64/28",), frn="0000000101"),
    PeerConfig("carrier-a", ("198.51.100.0/28",), frn="0000000999", action="label"),
)


def service(tmp_path: Path, **policy: Any) -> PeerService:
    settings = {"store": str(tmp_path / "data" / "peers.sqlite3"), **policy}
    return PeerService(PEERS, PeerPolicyConfig(**settings), wall=lambda: 1_750_000_000.0)


def admin(svc: PeerService) -> AdminApi:
    cfg = parse_config({})
    pool = SwitchPool(cfg.switches, cfg.routing)
    api = AdminApi(pool, CollectorRegistry(), lambda: True, token=TOKEN)
    PeerAdmin(svc, clock=lambda: 1000.0).register(api)
    return api


async def ask(
    api: AdminApi, method: str, target: str, body: object = None, *,
    headers: dict[str, str] | None = None, raw: bytes | None = None,
) -> tuple[int, Any]:  # fmt: skip
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else b"")
    sent = {"content-type": "application/json", **AUTH, **(headers or {})}
    sent["content-length"] = str(len(data))

    async def read_body(n: int) -> bytes:
        return data[:n]

    resp: Response = await api.dispatch(method, target, sent, read_body, client="192.0.2.99")
    return resp.status, json.loads(resp.body)


async def test_every_route_wants_the_token(tmp_path: Path) -> None:
    api = admin(service(tmp_path))
    for method, target in (
        ("GET", "/admin/peers"),
        ("GET", "/admin/peers/gateway-x"),
        ("POST", "/admin/peers/gateway-x/action"),
        ("GET", "/admin/peers/gateway-x/audit"),
    ):
        for headers in ({"authorization": ""}, {"authorization": "Bearer wrong-token-0000000"}):
            status, body = await ask(api, method, target, {"action": "block"}, headers=headers)
            assert (status, body) == (401, {"error": "missing or wrong bearer token"})


async def test_listing_shows_standing_actions_and_stats(tmp_path: Path) -> None:
    svc = service(tmp_path)
    status, body = await ask(admin(svc), "GET", "/admin/peers")
    assert status == 200 and body["mode"] == "enforce"
    assert [p["name"] for p in body["peers"]] == ["gateway-x", "carrier-a", "unknown"]
    gw, carrier, unknown = body["peers"]
    assert gw["rmd_standing"]["status"] == "not-loaded"
    assert gw["effective"] == {
        "action": "observe", "throttle_cps": None, "because": "configured in [[peers]]",
    }  # fmt: skip
    assert carrier["configured"]["action"] == carrier["effective"]["action"] == "label"
    assert unknown == {"name": "unknown", "declared": False, "throttled_calls": 0,
                       "stats": unknown["stats"]}  # fmt: skip
    assert set(gw["stats"]) == {"5m", "1h", "24h"}
    assert gw["stats"]["1h"]["calls"] == 0 and gw["stats"]["1h"]["asr"] is None
    assert body["rmd"] == {"file": None, "error": None, "loaded": False}
    status, one = await ask(admin(svc), "GET", "/admin/peers/carrier-a")
    assert status == 200 and one["effective"]["action"] == "label"
    status, missing = await ask(admin(svc), "GET", "/admin/peers/nobody")
    assert status == 404 and "no peer 'nobody'" in missing["error"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"action": "drop", "reason": "x"}, "action: expected one of observe, label, throttle, "
                                            "block, clear, got 'drop'"),
        ({"reason": "x"}, "action: expected one of"),
        ({"action": "throttle", "reason": "x"}, "throttle_cps: expected a number above 0"),
        ({"action": "throttle", "throttle_cps": 0, "reason": "x"}, "throttle_cps: expected"),
        ({"action": "throttle", "throttle_cps": True, "reason": "x"}, "throttle_cps: expected"),
        ({"action": "block", "throttle_cps": 5, "reason": "x"},
         "throttle_cps applies only to the action throttle, not block"),
        ({"action": "block"}, "reason: required"),
        ({"action": "block", "reason": "  "}, "reason: required"),
        ({"action": "block", "reason": "a\nb"}, "reason: at most 500 printable characters"),
        ({"action": "block", "reason": "x", "operator": 7}, "operator: a name of at most 64"),
        ({"action": "block", "reason": "x", "who": "me"}, "unknown field 'who'"),
        (["block"], "expected a JSON object"),
    ],
)  # fmt: skip
async def test_bad_changes_get_400_and_change_nothing(
    tmp_path: Path, body: object, message: str
) -> None:
    svc = service(tmp_path)
    api = admin(svc)
    status, answer = await ask(api, "POST", "/admin/peers/gateway-x/action", body)
    assert status == 400 and answer["error"].startswith(message), answer
    assert svc.actions.views["gateway-x"].effective.action == "observe"
    assert svc.store.audit("gateway-x") == []


async def test_other_bad_requests(tmp_path: Path) -> None:
    api = admin(service(tmp_path))
    status, answer = await ask(api, "POST", "/admin/peers/gateway-x/action", raw=b"{nope")
    assert status == 400 and answer["error"].startswith("body is not valid JSON")
    status, answer = await ask(
        api, "POST", "/admin/peers/gateway-x/action", {"action": "block", "reason": "x"},
        headers={"content-type": "text/plain"},
    )  # fmt: skip
    assert (status, answer["error"]) == (400, "send the body as application/json")
    status, answer = await ask(api, "POST", "/admin/peers/unknown/action", {"action": "block"})
    assert status == 400 and "[sip] unknown_sources" in answer["error"]
    status, answer = await ask(api, "POST", "/admin/peers/nobody/action", {"action": "block"})
    assert status == 404
    status, answer = await ask(api, "GET", "/admin/peers/gateway-x/audit?limit=0")
    assert (status, answer["field"]) == (400, "limit")


async def test_changes_are_applied_audited_and_survive_a_restart(tmp_path: Path) -> None:
    svc = service(tmp_path)
    api = admin(svc)
    change = {"action": "throttle", "throttle_cps": 2, "reason": "FTC letter 2025-17",
              "operator": "alice"}  # fmt: skip
    status, answer = await ask(api, "POST", "/admin/peers/gateway-x/action", change)
    assert status == 200
    assert answer["effective"]["action"] == "throttle" and answer["effective"]["throttle_cps"] == 2
    assert answer["override"]["reason"] == "FTC letter 2025-17"
    assert svc.actions.enforced["gateway-x"].throttle_cps == 2.0
    status, answer = await ask(
        api, "POST", "/admin/peers/gateway-x/action",
        {"action": "block", "reason": "no mitigation after 10 days"},
    )  # fmt: skip
    assert status == 200 and svc.actions.enforced["gateway-x"].action == "block"
    status, audit = await ask(api, "GET", "/admin/peers/gateway-x/audit")
    assert status == 200
    newest, first = audit["audit"]
    assert first == {
        "id": first["id"], "at": 1_750_000_000.0, "peer": "gateway-x", "actor": "alice",
        "client": "192.0.2.99", "kind": "set",
        "old": {"action": "observe", "throttle_cps": 0.0},
        "new": {"action": "throttle", "throttle_cps": 2.0},
        "effective": "throttle 2/s", "reason": "FTC letter 2025-17",
    }  # fmt: skip
    assert newest["actor"] == "admin-token" and newest["old"]["action"] == "throttle"
    assert newest["new"]["action"] == "block" and newest["id"] > first["id"]

    # a restart: a new service on the same store keeps the override in force
    again = service(tmp_path)
    view = again.actions.views["gateway-x"]
    assert view.effective.action == "block" and view.override is not None
    assert view.override.reason == "no mitigation after 10 days"
    status, answer = await ask(
        admin(again), "POST", "/admin/peers/gateway-x/action", {"action": "clear", "reason": "ok"}
    )
    assert status == 200 and answer["override"] is None
    assert answer["effective"]["action"] == "observe"
    third = service(tmp_path)
    assert third.actions.views["gateway-x"].override is None
    assert [r.kind for r in third.store.audit("gateway-x")] == ["clear", "set", "set"]
    assert len(third.store.audit("gateway-x", limit=1)) == 1


async def test_a_sibling_worker_follows_the_store(tmp_path: Path) -> None:
    primary, sibling = service(tmp_path), service(tmp_path)
    assert not await sibling.catch_up()
    await primary.change("carrier-a", None, "vetted again", "bob", "127.0.0.1")
    await primary.change("gateway-x", None, "noop clear", "bob", "127.0.0.1")
    await primary.change("gateway-x", Setting("block"), "campaign", "bob", "127.0.0.1")
    assert await sibling.catch_up()
    assert sibling.actions.enforced["gateway-x"].action == "block"
    assert not await sibling.catch_up()


async def test_a_store_that_cannot_write_answers_503_and_changes_nothing(tmp_path: Path) -> None:
    svc = service(tmp_path)
    api = admin(svc)
    broken = tmp_path / "a-directory"
    broken.mkdir()
    svc.store.path = broken  # sqlite cannot open a directory as a database
    status, answer = await ask(
        api, "POST", "/admin/peers/gateway-x/action", {"action": "block", "reason": "x"}
    )
    assert status == 503 and "unavailable" in answer["error"]
    assert svc.actions.views["gateway-x"].effective.action == "observe"
    status, _ = await ask(api, "GET", "/admin/peers/gateway-x/audit")
    assert status == 503


async def test_the_rmd_import_state_and_a_failed_reload(tmp_path: Path) -> None:
    rmd = tmp_path / "rmd.csv"
    rmd.write_text("\n".join([HEADER, row("RMD0000001", "0000000101"), "RMD0000002,x,y"]) + "\n")
    svc = service(tmp_path, rmd_file=str(rmd), missing_from_rmd="block")
    assert svc.actions.views["carrier-a"].effective.action == "block"  # FRN ...999 missing
    assert svc.actions.views["gateway-x"].standing.status == "mitigating"
    api = admin(svc)
    status, body = await ask(api, "GET", "/admin/peers")
    assert body["rmd"] == {
        "file": str(rmd), "error": None, "loaded": True, "path": str(rmd),
        "loaded_at": 1_750_000_000.0, "filings": 1, "problem_count": 1, "skipped": 1,
        "problems": [{"line": 5, "message": "expected 23 fields, found 3", "skipped": True}],
    }  # fmt: skip
    carrier = body["peers"][1]
    assert carrier["rmd_standing"]["status"] == "missing"
    assert carrier["effective"]["because"].startswith("[peer_policy] for a peer missing")
    rmd.unlink()
    await svc.reload("test")
    status, body = await ask(api, "GET", "/admin/peers")
    assert status == 200
    assert body["rmd"]["error"] == f"cannot read the RMD export {rmd}: No such file or directory"
    assert body["rmd"]["loaded"] and body["rmd"]["filings"] == 1, "the old data stays"
    assert svc.actions.views["carrier-a"].effective.action == "block"


async def test_a_live_worker_serves_counts_and_keeps_an_override_across_restarts(
    tmp_path: Path,
) -> None:
    switch, switch_port = await open_peer()
    caller, caller_port = await open_peer()
    sip_port, admin_port = free_port(), free_port()
    cfg = loopback_config(tmp_path, sip_port, admin_port, switch_port, TOKEN)
    assert caller.transport is not None and switch.transport is not None

    def invite(n: int) -> bytes:
        return request(
            ruri=f"sip:+13125550187@127.0.0.1:{sip_port}", via_host=f"127.0.0.1:{caller_port}",
            call_id=f"live-{n}@127.0.0.1", branch=f"z9hG4bK-live-{n}",
        )  # fmt: skip

    try:
        for generation in range(2):
            worker = Worker(cfg)
            await worker.start()
            try:
                if generation == 0:
                    caller.transport.sendto(invite(0), ("127.0.0.1", sip_port))
                    await switch.get()  # forwarded
                    status, body = await http(admin_port, "GET", "/admin/peers/loopback-trunk")
                    assert status == 200 and body["stats"]["5m"]["calls"] == 1
                    status, text = await http_text(admin_port, "/metrics")
                    assert 'rs_peer_window_calls{peer="loopback-trunk",window="5m"} 1.0' in text
                    assert 'rs_peer_action{action="observe",peer="loopback-trunk"} 1.0' in text
                    status, body = await http(
                        admin_port, "POST", "/admin/peers/loopback-trunk/action",
                        {"action": "block", "reason": "test campaign"},
                    )  # fmt: skip
                    assert status == 200 and body["effective"]["action"] == "block"
                caller.transport.sendto(invite(10 + generation), ("127.0.0.1", sip_port))
                data, _ = await caller.get()  # answered by the proxy, in both lives
                assert data.startswith(b"SIP/2.0 603 Network Blocked")
            finally:
                await worker.stop()
    finally:
        caller.transport.close()
        switch.transport.close()


async def http(port: int, method: str, target: str, body: object = None) -> tuple[int, Any]:
    status, text = await http_text(port, target, method, body)
    return status, json.loads(text)


async def http_text(
    port: int, target: str, method: str = "GET", body: object = None
) -> tuple[int, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    data = json.dumps(body).encode() if body is not None else b""
    writer.write(
        f"{method} {target} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n".encode()
        + data
    )
    raw = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, rest = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), rest.decode()
