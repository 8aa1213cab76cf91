"""The subscriber API, the redress and self-service pages, and the answers
callers get over SIP, on a worker listening on loopback with a bearer token
and a data directory of its own. Also ``LiveWorker``: the same worker on a
background thread, for blocking clients (the fuzz and browser tests)."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlencode, urlsplit

import pytest
from prometheus_client import CollectorRegistry

from proxy.admin import AdminApi
from proxy.config import Config, parse_config
from proxy.routing import SwitchPool
from proxy.server import StartupError, Worker
from proxy.sip import SipRequest, parse_datagram
from proxy.subscribers.api import MAX_CHANGES, SubscriberApi
from proxy.subscribers.links import LinkSigner
from proxy.subscribers.openapi import openapi_document
from proxy.subscribers.pages import Pages
from proxy.subscribers.service import SubscriberService
from tests.sipmsg import request
from tests.test_server import Peer, free_port, open_peer

TOKEN = "test-token-0123456789abcdef"
LINK_SECRET = "link-secret-0123456789abcdef"
ALICE = "+13125550187"
BOB = "+16465550199"
CALLER = "+12125550142"
SPAMMER = "+12125550166"  # on the static block list
HEADER = "number,opted_in,policy,reject_anonymous,allow,block"
T = TypeVar("T")


def worker_config(
    tmp_path: Path, switch_port: int, *, token: str = TOKEN, **sections: Any
) -> Config:
    data: dict[str, Any] = {
        "sip": {"host": "127.0.0.1", "port": free_port()},
        "switches": [{"name": "sw", "host": "127.0.0.1", "port": switch_port}],
        "routing": {"health_checks": False},
        "admin": {"host": "127.0.0.1", "port": free_port(), "token": token},
        "log": {"verdict_log": ""},
        "screening": {"block": [SPAMMER]},
        "subscribers": {"data_dir": str(tmp_path / "data"), "link_secret": LINK_SECRET},
    }
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values}
    if not token:
        del data["admin"]["token"]
    return parse_config(data)


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode()

    def json(self) -> Any:
        assert self.headers["content-type"] == "application/json", self.headers
        return json.loads(self.body)


def parse_reply(data: bytes) -> Reply:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    assert int(headers["content-length"]) == len(body)
    return Reply(int(lines[0].split()[1]), headers, body)


async def http(
    port: int,
    method: str,
    path: str,
    body: bytes | str | dict[str, Any] | list[Any] = b"",
    *,
    token: str | None = TOKEN,
    ctype: str | None = None,
    headers: tuple[str, ...] = (),
) -> Reply:
    """One request on its own connection; a dict or list body goes as JSON."""
    if isinstance(body, dict | list):
        body, ctype = json.dumps(body).encode(), ctype or "application/json"
    elif isinstance(body, str):
        body = body.encode()
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *headers]
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    if ctype is not None:
        lines.append(f"Content-Type: {ctype}")
    if body:
        lines.append(f"Content-Length: {len(body)}")
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return parse_reply(data)


class Live:
    def __init__(self, worker: Worker, switch: Peer) -> None:
        self.worker = worker
        self.switch = switch
        self.admin = worker.cfg.admin.port
        self.sip = worker.cfg.sip.port

    @property
    def service(self) -> SubscriberService:
        assert self.worker.subscribers is not None
        return self.worker.subscribers

    async def api(self, method: str, path: str, body: Any = b"", **kw: Any) -> Reply:
        return await http(self.admin, method, f"/api/v1{path}", body, **kw)

    async def page(self, method: str, path: str, form: dict[str, str] | None = None) -> Reply:
        if form is None:
            return await http(self.admin, method, path, token=None)
        return await http(
            self.admin, method, path, urlencode(form), token=None,
            ctype="application/x-www-form-urlencoded",
        )  # fmt: skip

    async def call(
        self, caller: str, callee: str, extra: tuple[str, ...] = (), call_id: str = "c1"
    ) -> bytes:
        """Send an INVITE; what the caller gets back (a final answer from the
        proxy), or b"" when the INVITE went on to the switch."""
        peer, port = await open_peer()
        assert peer.transport is not None
        invite = request(
            ruri=f"sip:{callee}@127.0.0.1:{self.sip};user=phone",
            caller=caller,
            via_host=f"127.0.0.1:{port}",
            call_id=call_id,
            extra=extra,
        )
        peer.transport.sendto(invite, ("127.0.0.1", self.sip))
        answered = asyncio.ensure_future(peer.get())
        forwarded = asyncio.ensure_future(self.switch.get())
        done, pending = await asyncio.wait(
            [answered, forwarded], timeout=3, return_when=asyncio.FIRST_COMPLETED
        )
        for task in pending:
            task.cancel()
        peer.transport.close()
        assert done, "neither the caller nor the switch heard anything"
        if forwarded in done:
            fwd = parse_datagram(forwarded.result()[0])
            assert isinstance(fwd, SipRequest) and fwd.call_id == call_id
            assert answered not in done, "both the switch and the caller got something"
            return b""
        return answered.result()[0]


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[Live]:
    switch, switch_port = await open_peer()
    worker = Worker(worker_config(tmp_path, switch_port, subscribers={"disputes_per_hour": 3}))
    await worker.start()
    yield Live(worker, switch)
    await worker.stop()
    assert switch.transport is not None
    switch.transport.close()


def found(pattern: str, text: str) -> str | None:
    """The first group of ``pattern`` in ``text``; the pattern must match."""
    m = re.search(pattern, text)
    assert m is not None, f"{pattern!r} not in the page"
    return m[1]


def form_of(page: str) -> dict[str, Any]:
    """The controls of the self-service form, as a browser would submit them."""
    out: dict[str, Any] = {"t": found(r"name=t value='([^']*)'", page)}
    for name in ("opted_in", "reject_anonymous"):
        out[name] = found(rf"name={name} id={name}( checked)?>", page) is not None
    out["policy"] = found(r"<option value=([\w-]+) selected>", page)
    for name in ("allow", "block"):
        out[name] = found(rf"<textarea name={name} [^>]*>([^<]*)</textarea>", page)
    return out


def metric(text: str, name: str) -> float:
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert m is not None, f"{name} not in the metrics"
    return float(m[1])


# -- subscribers: CRUD --------------------------------------------------------


async def test_create_read_replace_patch_delete(live: Live) -> None:
    r = await live.api("PUT", "/subscribers/3125550187", {"opted_in": True, "policy": "off"})
    assert r.status == 201
    created = {
        "number": ALICE,
        "opted_in": True,
        "policy": "off",
        "reject_anonymous": False,
        "allow": [],
        "block": [],
    }
    assert r.json() == created
    for form in (ALICE, "3125550187", "1-312-555-0187", quote("(312) 555-0187")):
        r = await live.api("GET", f"/subscribers/{form}")
        assert (r.status, r.json()) == (200, created), form

    # a PUT replaces: absent fields take their defaults
    r = await live.api(
        "PUT", f"/subscribers/{ALICE}", {"reject_anonymous": True, "block": ["+1900*"]}
    )
    assert r.status == 200
    assert r.json() == {**created, "opted_in": False, "policy": "label",
                        "reject_anonymous": True, "block": ["+1900*"]}  # fmt: skip

    # PATCH changes only what it names
    r = await live.api("PATCH", f"/subscribers/{ALICE}", {"policy": "block-all-suspected"})
    assert r.status == 200
    assert r.json() == {**created, "opted_in": False, "policy": "block-all-suspected",
                        "reject_anonymous": True, "block": ["+1900*"]}  # fmt: skip
    assert (await live.api("GET", f"/subscribers/{ALICE}")).json() == r.json()

    r = await live.api("DELETE", f"/subscribers/{ALICE}")
    assert (r.status, r.body) == (204, b"")
    for method in ("GET", "DELETE"):
        r = await live.api(method, f"/subscribers/{ALICE}")
        assert r.status == 404 and r.json()["field"] == "number", method
    r = await live.api("PATCH", f"/subscribers/{ALICE}", {"opted_in": True})
    assert r.status == 404 and r.json()["field"] == "number"
    assert live.service.get(13125550187) is None


async def test_bad_requests_name_the_field_and_change_nothing(live: Live) -> None:
    await live.api("PUT", f"/subscribers/{ALICE}", {"opted_in": True})
    for method, path, body, kw, field in [
        ("GET", "/subscribers/12345", b"", {}, "number"),
        ("PUT", "/subscribers/not-a-number", {}, {}, "number"),
        ("PUT", f"/subscribers/{BOB}", {"policy": "block-everything"}, {}, "policy"),
        ("PUT", f"/subscribers/{BOB}", {"nickname": "bob"}, {}, "nickname"),
        ("PUT", f"/subscribers/{BOB}", {"allow": ["+12125550142", "junk"]}, {}, "allow[1]"),
        ("PUT", f"/subscribers/{BOB}", {"number": ALICE}, {}, "number"),
        ("PUT", f"/subscribers/{BOB}", ["opted_in"], {}, "body"),
        ("PUT", f"/subscribers/{BOB}", '{"opted_in": tru', {"ctype": "application/json"}, "body"),
        ("PUT", f"/subscribers/{BOB}", '{"opted_in": true}', {"ctype": "text/plain"}, "body"),
        ("PATCH", f"/subscribers/{ALICE}", {"opted_in": "yes"}, {}, "opted_in"),
        ("PATCH", f"/subscribers/{ALICE}", {"block": "+12125550142"}, {}, "block"),
        ("PATCH", f"/subscribers/{ALICE}", 7, {"ctype": "application/json"}, "body"),
    ]:
        payload = str(body) if isinstance(body, int) else body
        r = await live.api(method, path, payload, **kw)
        assert r.status == 400, (method, path, body, r.text)
        assert r.json()["field"] == field, (method, path, body, r.text)
        assert r.json()["error"]
    assert live.service.get(16465550199) is None
    r = await live.api("GET", f"/subscribers/{ALICE}")
    assert r.json()["opted_in"] is True and r.json()["policy"] == "label"
    assert len((await live.api("GET", f"/subscribers/{ALICE}/audit")).json()["changes"]) == 5


async def test_list_entries_added_and_removed(live: Live) -> None:
    await live.api("PUT", f"/subscribers/{ALICE}", {"opted_in": True})
    base = f"/subscribers/{ALICE}/lists"
    r = await live.api("PUT", f"{base}/block/2125550166")
    assert (r.status, r.json()["block"]) == (200, [SPAMMER])
    r = await live.api("PUT", f"{base}/block/{quote('+12125550166')}")  # again: no change
    assert (r.status, r.json()["block"]) == (200, [SPAMMER])
    r = await live.api("PUT", f"{base}/allow/{quote('+1900*')}")
    assert (r.status, r.json()["allow"], r.json()["block"]) == (200, ["+1900*"], [SPAMMER])
    r = await live.api("PUT", f"{base}/allow/{CALLER}")
    assert r.json()["allow"] == [CALLER, "+1900*"]
    assert live.service.store.get(13125550187) == live.service.get(13125550187)

    r = await live.api("DELETE", f"{base}/allow/{quote('+1900*')}")
    assert (r.status, r.json()["allow"]) == (200, [CALLER])
    r = await live.api("DELETE", f"{base}/allow/{quote('+1900*')}")
    assert (r.status, r.json()["field"]) == (404, "entry")
    r = await live.api("DELETE", f"{base}/block/{SPAMMER}")
    assert (r.status, r.json()["block"]) == (200, [])

    for method, path, status, field in [
        ("PUT", f"{base}/greylist/{CALLER}", 404, "list"),
        ("PUT", f"{base}/allow/junk", 400, "entry"),
        ("PUT", f"{base}/allow/{quote('1900*')}", 400, "entry"),
        ("PUT", f"/subscribers/{BOB}/lists/allow/{CALLER}", 404, "number"),
        ("DELETE", f"/subscribers/{BOB}/lists/allow/{CALLER}", 404, "number"),
        ("PUT", f"/subscribers/nope/lists/allow/{CALLER}", 400, "number"),
    ]:
        r = await live.api(method, path)
        assert (r.status, r.json()["field"]) == (status, field), (method, path, r.text)
    assert (await live.api("GET", f"/subscribers/{ALICE}")).json()["allow"] == [CALLER]


async def test_a_full_list_refuses_one_more_entry(live: Live) -> None:
    full = [f"+1212555{i:04d}" for i in range(1000)]
    r = await live.api("PUT", f"/subscribers/{ALICE}", {"allow": full})
    assert r.status == 201 and len(r.json()["allow"]) == 1000
    r = await live.api("PUT", f"/subscribers/{ALICE}/lists/allow/{BOB}")
    assert r.status == 422 and r.json()["field"] == "allow" and "full" in r.json()["error"]
    r = await live.api("PUT", f"/subscribers/{ALICE}/lists/allow/{full[7]}")  # already there
    assert r.status == 200 and len(r.json()["allow"]) == 1000
    r = await live.api("PUT", f"/subscribers/{ALICE}/lists/block/{BOB}")  # the other list
    assert r.status == 200 and r.json()["block"] == [BOB]
    r = await live.api("PUT", f"/subscribers/{ALICE}", {"allow": [*full, BOB]})
    assert r.status == 400 and r.json()["field"] == "allow"
    assert len(live.service.get(13125550187).allow) == 1000  # type: ignore[union-attr]


async def test_audit_names_the_actor(live: Live) -> None:
    await live.api("PUT", f"/subscribers/{ALICE}", {"opted_in": True})
    await live.api(
        "PATCH", f"/subscribers/{ALICE}", {"policy": "off"}, headers=("X-Actor: jane@carrier",)
    )
    await live.api("PUT", f"/subscribers/{ALICE}/lists/block/{CALLER}")
    r = await live.api("GET", f"/subscribers/{ALICE}/audit")
    assert r.status == 200 and r.json()["number"] == ALICE
    changes = r.json()["changes"]
    assert [(c["actor"], c["field"], c["old"], c["new"]) for c in changes[:2]] == [
        ("api", "block", "", CALLER),
        ("api:jane@carrier", "policy", "label", "off"),
    ]
    assert len(changes) == 7 and all(isinstance(c["at"], float) for c in changes)
    await live.api("DELETE", f"/subscribers/{ALICE}")
    r = await live.api("GET", f"/subscribers/{ALICE}/audit")
    assert len(r.json()["changes"]) == 12  # the trail stays after a delete
    r = await live.api("GET", "/subscribers/oops/audit")
    assert (r.status, r.json()["field"]) == (400, "number")


# -- CSV, stats, links ---------------------------------------------------------


async def test_csv_export_and_import(live: Live) -> None:
    await live.api("PUT", f"/subscribers/{ALICE}", {"opted_in": True, "block": ["+1900*"]})
    r = await live.api("GET", "/subscribers.csv")
    assert r.status == 200 and r.headers["content-type"] == "text/csv; charset=utf-8"
    exported = r.text
    assert exported == f"{HEADER}\n{ALICE},true,label,false,,+1900*\n"

    good = f"{HEADER}\n{BOB},true,block-all-suspected,true,{CALLER},\n{ALICE},false,off,false,,\n"
    r = await live.api("POST", "/subscribers.csv", good, ctype="application/json")
    assert (r.status, r.json()["field"]) == (415, "content-type")
    bad = good + f"{CALLER},true,label,false,,\n{SPAMMER},true,label,perhaps,,\n"
    r = await live.api("POST", "/subscribers.csv", bad, ctype="text/csv")
    assert r.status == 400 and r.json()["field"] == "csv line 5: reject_anonymous"
    r = await live.api("POST", "/subscribers.csv", b"\xff\xfe" + good.encode(), ctype="text/csv")
    assert (r.status, r.json()["field"]) == (400, "csv")
    assert (await live.api("GET", "/subscribers.csv")).text == exported  # nothing stored
    assert (await live.api("GET", f"/subscribers/{BOB}")).status == 404

    r = await live.api("POST", "/subscribers.csv", "\ufeff" + good, ctype="text/csv; charset=utf-8")
    assert (r.status, r.json()) == (200, {"created": 1, "updated": 1})
    r = await live.api("GET", f"/subscribers/{BOB}")
    assert r.json() == {"number": BOB, "opted_in": True, "policy": "block-all-suspected",
                        "reject_anonymous": True, "allow": [CALLER], "block": []}  # fmt: skip
    exported = (await live.api("GET", "/subscribers.csv")).text
    for number in (ALICE, BOB):
        assert (await live.api("DELETE", f"/subscribers/{number}")).status == 204
    r = await live.api("POST", "/subscribers.csv", exported, ctype="text/csv")
    assert (r.status, r.json()) == (200, {"created": 2, "updated": 0})
    assert (await live.api("GET", "/subscribers.csv")).text == exported


async def announce(
    live: Live, method: str, path: str, ctype: str, length: int, token: str | None = TOKEN
) -> Reply:
    """A request head announcing a body that is never sent: the answer must
    not wait for it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", live.admin)
    auth = f"Authorization: Bearer {token}\r\n" if token is not None else ""
    writer.write(
        f"{method} /api/v1{path} HTTP/1.1\r\n{auth}Content-Type: {ctype}\r\n"
        f"Content-Length: {length}\r\n\r\n".encode()
    )
    r = parse_reply(await asyncio.wait_for(reader.read(), 5))
    writer.close()
    return r


async def test_csv_import_over_its_limit_is_413(live: Live) -> None:
    r = await announce(live, "POST", "/subscribers.csv", "text/csv", (64 << 20) + 1)
    assert r.status == 413


@pytest.mark.parametrize(
    "text",
    [
        f"{HEADER}\r{ALICE},true,off,false,,\r",  # classic Mac line ends
        f"{HEADER}\n{ALICE},true,off,false,{'x' * 200_000},\n",
    ],
    ids=["cr-line-ends", "huge-field"],
)
async def test_csv_the_csv_module_cannot_read_is_a_400(live: Live, text: str) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", live.admin)
    body = text.encode()
    writer.write(
        f"POST /api/v1/subscribers.csv HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Type: text/csv\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert data, "the connection closed without an HTTP response"
    r = parse_reply(data)
    assert r.status == 400 and r.json()["field"].startswith("csv")
    assert live.service.get(13125550187) is None


async def test_stats_count_subscribers_per_policy(live: Live) -> None:
    await live.api("PUT", f"/subscribers/{ALICE}", {"opted_in": True, "policy": "off"})
    await live.api("PUT", f"/subscribers/{BOB}", {"opted_in": True, "policy": "off"})
    await live.api("PUT", f"/subscribers/{CALLER}", {"policy": "off"})
    await live.api("PATCH", f"/subscribers/{BOB}", {"policy": "block-high-confidence"})
    r = await live.api("GET", "/subscribers/stats")
    assert (r.status, r.json()) == (200, {"by_policy": {
        "off": 1, "label": 0, "block-high-confidence": 1, "block-all-suspected": 0,
        "not-opted-in": 1,
    }})  # fmt: skip


async def test_self_service_link(live: Live) -> None:
    await live.api("PUT", f"/subscribers/{ALICE}", {})
    before = int(time.time())
    r = await live.api("POST", f"/subscribers/{ALICE}/self-service-link")
    assert r.status == 200
    url, expires = r.json()["url"], r.json()["expires_at"]
    assert url.startswith(f"http://127.0.0.1:{live.admin}/self-service?t=13125550187.")
    assert before + 3600 <= expires <= int(time.time()) + 3600
    page = await live.page("GET", urlsplit(url).path + "?" + urlsplit(url).query)
    assert page.status == 200 and ALICE in page.text
    r = await live.api("POST", f"/subscribers/{BOB}/self-service-link")
    assert (r.status, r.json()["field"]) == (404, "number")


# -- disputes -------------------------------------------------------------


async def file_dispute(live: Live, number: str = SPAMMER, **fields: str) -> int:
    form = {"number": number, "contact": "ann@example.com", "description": "my pharmacy"}
    r = await live.page("POST", "/redress", {**form, **fields})
    assert r.status == 200, r.text
    m = re.search(r"Your dispute number is <strong>(\d+)</strong>", r.text)
    assert m is not None, r.text
    return int(m[1])


async def test_disputes_list_read_and_resolve(live: Live) -> None:
    first = await file_dispute(live, called=ALICE)
    second = await file_dispute(live, CALLER, contact="+12125550142", description="hello")
    r = await live.api("GET", "/disputes")
    assert r.status == 200 and [d["id"] for d in r.json()["disputes"]] == [second, first]
    r = await live.api("GET", f"/disputes/{first}")
    d = r.json()
    assert r.status == 200 and (d["id"], d["number"], d["status"]) == (first, SPAMMER, "open")
    assert d["contact"] == "ann@example.com" and d["source"] == "127.0.0.1"
    assert d["description"] == f"[called {ALICE}] my pharmacy"

    for body, field in [
        ({"decision": "maybe"}, "decision"),
        ({}, "decision"),
        ({"decision": "allow"}, "scope"),
        ({"decision": "allow", "scope": "somewhere"}, "scope"),
        ({"decision": "allow", "scope": 5}, "scope"),
        ({"decision": "reject", "scope": "global"}, "scope"),
        ({"decision": "reject", "note": "x" * 2001}, "note"),
        ({"decision": "reject", "note": 5}, "note"),
        ({"decision": "reject", "colour": "red"}, "colour"),
        (["reject"], "body"),
    ]:
        r = await live.api("POST", f"/disputes/{first}/resolve", body)
        assert (r.status, r.json()["field"]) == (400, field), (body, r.text)
    for bad in ("abc", "-1", "1" * 13):
        r = await live.api("GET", f"/disputes/{bad}")
        assert (r.status, r.json()["field"]) == (400, "id"), bad
        r = await live.api("POST", f"/disputes/{bad}/resolve", {"decision": "reject"})
        assert (r.status, r.json()["field"]) == (400, "id"), bad
    r = await live.api("GET", "/disputes?status=closed")
    assert (r.status, r.json()["field"]) == (400, "status")
    assert (await live.api("GET", "/disputes/999")).status == 404
    r = await live.api("POST", "/disputes/999/resolve", {"decision": "reject"})
    assert (r.status, r.json()["field"]) == (404, "id")
    assert (await live.api("GET", f"/disputes/{first}")).json()["status"] == "open"

    r = await live.api(
        "POST", f"/disputes/{first}/resolve", {"decision": "allow", "scope": "3125550187"},
        headers=("X-Actor: ops-1",),
    )  # fmt: skip
    assert r.status == 200
    assert (r.json()["status"], r.json()["scope"], r.json()["resolved_by"]) == (
        "allowed", ALICE, "api:ops-1",
    )  # fmt: skip
    assert (await live.api("GET", f"/subscribers/{ALICE}")).json()["allow"] == [SPAMMER]
    r = await live.api("POST", f"/disputes/{first}/resolve", {"decision": "reject"})
    assert r.status == 409 and r.json()["field"] == "id" and "allowed" in r.json()["error"]
    r = await live.api("POST", f"/disputes/{second}/resolve", {"decision": "reject", "note": "no"})
    assert (r.status, r.json()["status"], r.json()["note"]) == (200, "rejected", "no")
    r = await live.api(
        "POST", f"/disputes/{second}/resolve", {"decision": "allow", "scope": "global"}
    )
    assert r.status == 409 and "rejected" in r.json()["error"]
    assert live.service.global_allow == set()

    for status, ids in (("open", []), ("allowed", [first]), ("rejected", [second])):
        r = await live.api("GET", f"/disputes?status={status}")
        assert [d["id"] for d in r.json()["disputes"]] == ids, status


async def test_redress_end_to_end(live: Live) -> None:
    """A caller on the static block list gets the 603+ pointing at this
    server's redress page, files a dispute there, and once the operator
    allows the number for everyone, their next call goes through."""
    answer = await live.call(SPAMMER, ALICE, call_id="r1")
    assert answer.startswith(b"SIP/2.0 603 Network Blocked\r\n")
    reason = re.search(rb"\r\nReason: ([^\r]*)\r\n", answer)
    assert reason is not None
    url = re.search(r";url=([^;\"]+)", reason[1].decode())
    assert url is not None and url[1] == f"http://127.0.0.1:{live.admin}/redress"
    assert (await live.page("GET", urlsplit(url[1]).path)).status == 200

    dispute = await file_dispute(live, SPAMMER, called=ALICE)
    r = await live.api(
        "POST", f"/disputes/{dispute}/resolve", {"decision": "allow", "scope": "global"}
    )
    assert (r.status, r.json()["scope"]) == (200, "global")
    assert 12125550166 in live.service.global_allow
    assert await live.call(SPAMMER, ALICE, call_id="r2") == b""  # forwarded
    assert await live.call(SPAMMER, BOB, call_id="r3") == b""  # for everyone


async def test_public_url_is_the_redress_address(tmp_path: Path) -> None:
    switch, switch_port = await open_peer()
    cfg = worker_config(
        tmp_path, switch_port, subscribers={"public_url": "https://shield.example.net/"}
    )
    assert cfg.redress.url == "https://shield.example.net/redress"
    worker = Worker(cfg)
    await worker.start()
    try:
        live = Live(worker, switch)
        answer = await live.call(SPAMMER, ALICE)
        assert b";url=https://shield.example.net/redress" in answer
        await live.api("PUT", f"/subscribers/{ALICE}", {})
        r = await live.api("POST", f"/subscribers/{ALICE}/self-service-link")
        assert r.json()["url"].startswith("https://shield.example.net/self-service?t=")
    finally:
        await worker.stop()
        assert switch.transport is not None
        switch.transport.close()


# -- SIP answers -------------------------------------------------------------


async def test_personal_block_is_607_and_anonymous_rejection_433(live: Live) -> None:
    await live.api(
        "PUT", f"/subscribers/{ALICE}",
        {"opted_in": True, "reject_anonymous": True, "block": ["+1212555014*"],
         "allow": [SPAMMER]},
    )  # fmt: skip
    answer = await live.call(CALLER, ALICE, call_id="p1")
    assert answer.startswith(b"SIP/2.0 607 Unwanted\r\n")
    assert b"\r\nReason:" not in answer and b"Call-ID: p1\r\n" in answer
    answer = await live.call("anonymous", ALICE, call_id="p2")
    assert answer.startswith(b"SIP/2.0 433 Anonymity Disallowed\r\n")
    assert b"\r\nReason:" not in answer
    answer = await live.call(BOB, ALICE, extra=("Privacy: id",), call_id="p3")
    assert answer.startswith(b"SIP/2.0 433 Anonymity Disallowed\r\n")
    # Alice's allow list beats the carrier's static block list
    assert await live.call(SPAMMER, ALICE, call_id="p4") == b""
    assert (await live.call(SPAMMER, BOB, call_id="p5")).startswith(b"SIP/2.0 603 ")
    # the same callers reach Bob, and Alice once she opts out
    assert await live.call(CALLER, BOB, call_id="p6") == b""
    await live.api("PATCH", f"/subscribers/{ALICE}", {"opted_in": False})
    assert await live.call(CALLER, ALICE, call_id="p7") == b""
    assert await live.call("anonymous", ALICE, call_id="p8") == b""


# -- auth and the OpenAPI document -------------------------------------------


async def test_token_required(live: Live) -> None:
    for token in (None, "wrong-token-0123456789", TOKEN + "x", ""):
        r = await live.api("GET", "/subscribers/stats", token=token)
        assert r.status == 401, token
        assert (await live.api("GET", "/disputes", token=token)).status == 401
    r = await http(
        live.admin, "GET", "/api/v1/subscribers/stats", token=None,
        headers=(f"Authorization: Basic {TOKEN}",),
    )  # fmt: skip
    assert r.status == 401
    r = await http(
        live.admin, "GET", "/api/v1/subscribers/stats", token=None,
        headers=(f"authorization: bearer {TOKEN}",),
    )  # fmt: skip
    assert r.status == 200
    r = await live.api("PUT", f"/subscribers/{ALICE}", {}, token="nope")
    assert r.status == 401 and live.service.get(13125550187) is None
    # the document and the pages need none
    assert (await live.api("GET", "/openapi.json", token=None)).status == 200
    assert (await live.page("GET", "/redress")).status == 200


async def test_router_answers_404_405_and_413(live: Live) -> None:
    for method, path in [("POST", "/subscribers/stats"), ("DELETE", "/openapi.json"),
                         ("POST", f"/subscribers/{ALICE}"), ("GET", "/disputes/1/resolve")]:  # fmt: skip
        r = await live.api(method, path)
        assert r.status == 405 and "is not allowed" in r.json()["error"], (method, path)
    for path in ("/subscribers", "/subscriber/+13125550187", "/nothing"):
        assert (await live.api("GET", path)).status == 404, path
    r = await announce(live, "PUT", f"/subscribers/{ALICE}", "application/json", MAX_CHANGES + 1)
    assert r.status == 413 and live.service.get(13125550187) is None


async def test_without_a_token_the_api_is_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ROBOCALL_SHIELD_TOKEN", raising=False)
    cfg = worker_config(tmp_path, free_port(), token="")
    worker = Worker(cfg)
    await worker.start()
    try:
        port = cfg.admin.port
        for token in (None, "anything-at-all-1234"):
            r = await http(port, "GET", "/api/v1/subscribers/stats", token=token)
            assert r.status == 403 and "token" in r.json()["error"]
        r = await http(port, "PUT", f"/api/v1/subscribers/{ALICE}", {}, token=None)
        assert r.status == 403
        assert (await http(port, "GET", "/api/v1/openapi.json", token=None)).status == 200
        assert (await http(port, "GET", "/redress", token=None)).status == 200
    finally:
        await worker.stop()


async def test_no_token_on_a_public_admin_address_stops_start_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ROBOCALL_SHIELD_TOKEN", raising=False)
    cfg = worker_config(tmp_path, free_port(), token="", admin={"host": "0.0.0.0"})
    worker = Worker(cfg)
    try:
        with pytest.raises(StartupError, match=r"0\.0\.0\.0 without a token"):
            await worker.start()
    finally:
        await worker.stop()


async def test_token_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_token = "from-the-environment-0123"
    monkeypatch.setenv("ROBOCALL_SHIELD_TOKEN", env_token)
    cfg = worker_config(tmp_path, free_port(), token="", admin={"host": "0.0.0.0"})
    worker = Worker(cfg)
    await worker.start()  # a token, so a public address is allowed
    try:
        port = cfg.admin.port
        assert (await http(port, "GET", "/api/v1/subscribers/stats", token=env_token)).status == 200
        assert (await http(port, "GET", "/api/v1/subscribers/stats", token=TOKEN)).status == 401
    finally:
        await worker.stop()
    # a configured token wins over the environment
    cfg = worker_config(tmp_path, free_port())
    worker = Worker(cfg)
    await worker.start()
    try:
        port = cfg.admin.port
        assert (await http(port, "GET", "/api/v1/subscribers/stats", token=TOKEN)).status == 200
        assert (await http(port, "GET", "/api/v1/subscribers/stats", token=env_token)).status == 401
    finally:
        await worker.stop()


def registered_api_routes(tmp_path: Path) -> set[tuple[str, str]]:
    """(method, path template) of every /api/v1 route the subscriber API
    registers on an admin router, as the worker does."""
    cfg = worker_config(tmp_path, 5080)
    api = AdminApi(SwitchPool(cfg.switches, cfg.routing), CollectorRegistry(), lambda: True)
    service = SubscriberService(tmp_path / "routes.sqlite3")
    try:
        links = LinkSigner(b"k" * 32, "http://x", 60)
        SubscriberApi(service, links).register(api)
        Pages(service, links, 5).register(api)
    finally:
        service.close()
    out = set()
    for route in api.routes:
        if route.template.startswith("/api/v1/"):
            out.add((route.method, route.template))
    return out


async def test_openapi_document_lists_every_api_route(live: Live, tmp_path: Path) -> None:
    r = await live.api("GET", "/openapi.json", token=None)
    assert r.status == 200
    doc = r.json()
    assert doc == openapi_document()
    assert doc["openapi"].startswith("3.0.")
    documented = {
        (method.upper(), path)
        for path, item in doc["paths"].items()
        for method in item
        if method != "parameters"
    }
    routes = registered_api_routes(tmp_path)
    # the document describes the API; the route serving the document itself is not part of it
    routes.discard(("GET", "/api/v1/openapi.json"))
    assert documented == routes
    assert len(routes) == 14
    # every path parameter of a template is declared, and nothing more
    for path, item in doc["paths"].items():
        declared = {p["name"] for p in item.get("parameters", []) if p["in"] == "path"}
        assert declared == set(re.findall(r"\{(\w+)\}", path)), path
    assert doc["security"] == [{"bearer": []}]


async def test_routes_match_their_literal_dots_only(live: Live) -> None:
    await live.api("PUT", f"/subscribers/{ALICE}", {})
    r = await live.api("GET", "/subscribers/csv")  # "csv" is not a subscriber number
    assert r.status == 400 and r.json()["field"] == "number"
    assert (await live.api("GET", "/subscribersXcsv")).status == 404
    assert (await live.api("GET", "/openapi-json", token=None)).status == 404


# -- pages ---------------------------------------------------------------


async def test_redress_form_and_a_dispute_filed(live: Live) -> None:
    r = await live.page("GET", "/redress")
    assert r.status == 200 and r.headers["content-type"] == "text/html; charset=utf-8"
    assert "default-src 'none'" in r.headers["content-security-policy"]
    assert "<script" not in r.text.lower()
    for name in ("number", "called", "contact", "description"):
        assert f"name={name} " in r.text
    assert "<form method=post action=/redress>" in r.text
    t0 = time.time()
    dispute = await file_dispute(live, "(212) 555-0166", contact="ann@example.com")
    d = (await live.api("GET", f"/disputes/{dispute}")).json()
    assert (d["number"], d["status"], d["description"]) == (SPAMMER, "open", "my pharmacy")
    assert t0 <= d["filed_at"] <= time.time()
    assert live.service.open == {dispute: d["filed_at"]}


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"contact": "<b>ann</b>@example.com"}, "contact"),
        ({"description": "see <a href=//evil>this</a>"}, "description"),
        ({"number": "<script>"}, "number"),
        ({"called": "3125550187>"}, "called"),
        ({"number": "12345"}, "number"),
        ({"called": "nobody"}, "called"),
        ({"contact": "   "}, "contact"),
        ({"contact": "a" * 201}, "contact"),
        ({"description": ""}, "description"),
        ({"description": "x" * 2001}, "description"),
    ],
)
async def test_redress_refuses_bad_input_naming_the_field(
    live: Live, changes: dict[str, str], field: str
) -> None:
    form = {"number": SPAMMER, "contact": "ann@example.com", "description": "hello", **changes}
    r = await live.page("POST", "/redress", form)
    assert r.status == 400
    assert f"id=problem data-field={field}>" in r.text
    assert "<script>" not in r.text and "<b>" not in r.text and "<a href" not in r.text
    if "<" in changes.get("contact", ""):
        assert "value='&lt;b&gt;ann&lt;/b&gt;@example.com'" in r.text  # kept, escaped
    assert (await live.api("GET", "/disputes")).json()["disputes"] == []
    assert live.service.open == {}


async def test_redress_is_rate_limited_per_address(live: Live) -> None:
    # three an hour in this worker's config; refused forms do not count
    await live.page("POST", "/redress", {"number": "nope", "contact": "a", "description": "b"})
    for _ in range(3):
        await file_dispute(live)
    r = await live.page("POST", "/redress",
                        {"number": SPAMMER, "contact": "a@example.com", "description": "again"})  # fmt: skip
    assert r.status == 429 and "Too many disputes" in r.text
    assert len((await live.api("GET", "/disputes")).json()["disputes"]) == 3


async def test_self_service_page_shows_and_saves_settings(live: Live) -> None:
    await live.api(
        "PUT", f"/subscribers/{ALICE}",
        {"opted_in": False, "policy": "block-high-confidence", "allow": [CALLER, "+1800*"]},
    )  # fmt: skip
    url = (await live.api("POST", f"/subscribers/{ALICE}/self-service-link")).json()["url"]
    token = url.partition("?t=")[2]
    r = await live.page("GET", f"/self-service?t={token}")
    assert r.status == 200 and "Free robocall blocking for +13125550187" in r.text
    assert "<script" not in r.text.lower()
    form = form_of(r.text)
    assert form == {"t": token, "opted_in": False, "reject_anonymous": False,
                    "policy": "block-high-confidence", "allow": f"{CALLER}\n+1800*",
                    "block": ""}  # fmt: skip

    r = await live.page("POST", "/self-service", {
        "t": token, "opted_in": "on", "policy": "block-all-suspected",
        "allow": f"{CALLER}\r\n", "block": f"{SPAMMER}\r\n+1900*",
    })  # fmt: skip
    assert r.status == 200 and "<p class=ok id=saved>Saved.</p>" in r.text
    assert form_of(r.text) == {"t": token, "opted_in": True, "reject_anonymous": False,
                               "policy": "block-all-suspected", "allow": CALLER,
                               "block": f"{SPAMMER}\n+1900*"}  # fmt: skip
    stored = (await live.api("GET", f"/subscribers/{ALICE}")).json()
    assert stored == {"number": ALICE, "opted_in": True, "policy": "block-all-suspected",
                      "reject_anonymous": False, "allow": [CALLER],
                      "block": [SPAMMER, "+1900*"]}  # fmt: skip
    changes = (await live.api("GET", f"/subscribers/{ALICE}/audit")).json()["changes"]
    assert {c["field"] for c in changes if c["actor"] == "self-service"} == {
        "opted_in", "policy", "allow", "block",
    }  # fmt: skip

    # a bad entry: the page says which, nothing changes
    r = await live.page("POST", "/self-service", {
        "t": token, "opted_in": "on", "policy": "off", "allow": "", "block": "<b>",
    })  # fmt: skip
    assert r.status == 400 and "id=problem>block[0]: " in r.text and "<b>" not in r.text
    assert (await live.api("GET", f"/subscribers/{ALICE}")).json() == stored


async def test_self_service_takes_one_entry_per_line(live: Live) -> None:
    await live.api("PUT", f"/subscribers/{ALICE}", {})
    url = (await live.api("POST", f"/subscribers/{ALICE}/self-service-link")).json()["url"]
    r = await live.page("POST", "/self-service", {
        "t": url.partition("?t=")[2], "opted_in": "on", "policy": "label",
        "allow": "+1 (212) 555-0142\r\n+1800*", "block": "",
    })  # fmt: skip
    assert r.status == 200, re.search(r"id=problem>([^<]*)", r.text)
    assert (await live.api("GET", f"/subscribers/{ALICE}")).json()["allow"] == [CALLER, "+1800*"]


async def test_self_service_refuses_tampered_and_expired_links(live: Live) -> None:
    await live.api("PUT", f"/subscribers/{ALICE}", {})
    await live.api("PUT", f"/subscribers/{BOB}", {})
    signer = LinkSigner(LINK_SECRET.encode(), "http://x", 3600)
    good = signer.token(13125550187, int(time.time()) + 600)
    number, expires, mac = good.split(".")
    assert (await live.page("GET", f"/self-service?t={good}")).status == 200
    for token in (
        f"16465550199.{expires}.{mac}",
        f"{number}.{int(expires) + 1}.{mac}",
        f"{number}.{expires}.{mac[::-1]}",
        "",
        quote("<script>"),
    ):
        r = await live.page("GET", f"/self-service?t={token}")
        assert r.status == 403 and "this link is not valid" in r.text, token
        r = await live.page("POST", "/self-service", {"t": token, "policy": "off"})
        assert r.status == 403, token
    expired = signer.token(13125550187, int(time.time()) - 5)
    r = await live.page("GET", f"/self-service?t={expired}")
    assert r.status == 403 and "expired" in r.text
    r = await live.page("POST", "/self-service", {"t": expired, "opted_in": "on", "policy": "off"})
    assert r.status == 403 and "expired" in r.text
    assert (await live.api("GET", f"/subscribers/{ALICE}")).json()["opted_in"] is False
    # a valid link for a subscriber deleted since
    await live.api("DELETE", f"/subscribers/{ALICE}")
    assert (await live.page("GET", f"/self-service?t={good}")).status == 404


# -- metrics and restarts ------------------------------------------------------


async def test_metrics_show_subscribers_and_open_disputes(live: Live) -> None:
    text = (await http(live.admin, "GET", "/metrics", token=None)).text
    assert metric(text, 'rs_subscribers{policy="block-all-suspected"}') == 0
    assert metric(text, "rs_disputes_open") == 0
    assert metric(text, "rs_disputes_oldest_open_age_seconds") == 0
    await live.api(
        "PUT", f"/subscribers/{ALICE}", {"opted_in": True, "policy": "block-all-suspected"}
    )
    await live.api("PUT", f"/subscribers/{BOB}", {})
    first = await file_dispute(live)
    await asyncio.sleep(0.05)
    second = await file_dispute(live, CALLER)
    filed = {
        d: (await live.api("GET", f"/disputes/{d}")).json()["filed_at"] for d in (first, second)
    }

    async def scrape() -> tuple[str, float, float]:
        """The metrics, and the wall clock just before and just after reading them."""
        before = time.time()
        text = (await http(live.admin, "GET", "/metrics", token=None)).text
        return text, before, time.time()

    text, before, after = await scrape()
    assert metric(text, 'rs_subscribers{policy="block-all-suspected"}') == 1
    assert metric(text, 'rs_subscribers{policy="not-opted-in"}') == 1
    assert metric(text, 'rs_subscribers{policy="label"}') == 0
    assert metric(text, "rs_disputes_open") == 2
    age = metric(text, "rs_disputes_oldest_open_age_seconds")
    assert before - filed[first] <= age <= after - filed[first]  # the older one's age
    assert age >= 0.05
    await live.api("POST", f"/disputes/{first}/resolve", {"decision": "reject"})
    await live.api("DELETE", f"/subscribers/{ALICE}")
    text, before, after = await scrape()
    assert metric(text, 'rs_subscribers{policy="block-all-suspected"}') == 0
    assert metric(text, 'rs_subscribers{policy="not-opted-in"}') == 1
    assert metric(text, "rs_disputes_open") == 1
    age = metric(text, "rs_disputes_oldest_open_age_seconds")
    assert before - filed[second] <= age <= after - filed[second]  # now the second's


async def test_subscribers_survive_a_restart(tmp_path: Path) -> None:
    switch, switch_port = await open_peer()
    try:
        cfg = worker_config(tmp_path, switch_port)
        worker = Worker(cfg)
        await worker.start()
        live = Live(worker, switch)
        await live.api("PUT", f"/subscribers/{ALICE}", {"opted_in": True, "block": [CALLER]})
        dispute = await file_dispute(live)
        await worker.stop()

        worker = Worker(replace_ports(cfg))
        await worker.start()
        live = Live(worker, switch)
        try:
            r = await live.api("GET", f"/subscribers/{ALICE}")
            assert r.status == 200 and r.json()["block"] == [CALLER]
            assert (await live.call(CALLER, ALICE)).startswith(b"SIP/2.0 607 Unwanted")
            assert (await live.api("GET", f"/disputes/{dispute}")).json()["status"] == "open"
            text = (await http(live.admin, "GET", "/metrics", token=None)).text
            assert metric(text, "rs_disputes_open") == 1
            assert metric(text, 'rs_subscribers{policy="label"}') == 1
        finally:
            await worker.stop()
        assert (tmp_path / "data" / "subscribers.sqlite3").is_file()
    finally:
        assert switch.transport is not None
        switch.transport.close()


def replace_ports(cfg: Config) -> Config:
    return replace(
        cfg,
        sip=replace(cfg.sip, port=free_port()),
        admin=replace(cfg.admin, port=free_port()),
    )


# -- a worker on a thread of its own ------------------------------------------


class LiveWorker:
    """A Worker on its own event loop in a background thread, so blocking
    clients (requests, Selenium) can talk to it from the test's thread."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.url = f"http://127.0.0.1:{cfg.admin.port}"
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="live-worker")
        self.worker: Worker | None = None

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 10) -> T:
        """Run a coroutine on the worker's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    @property
    def service(self) -> SubscriberService:
        assert self.worker is not None and self.worker.subscribers is not None
        return self.worker.subscribers

    def __enter__(self) -> LiveWorker:
        self.thread.start()

        async def start() -> Worker:
            worker = Worker(self.cfg)
            await worker.start()
            return worker

        try:
            self.worker = self.run(start())
        except BaseException:
            self._stop_loop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self.worker is not None:
                self.run(self.worker.stop())
            self.run(_cancel_the_rest())  # e.g. a browser's idle preconnect, still being read
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


async def _cancel_the_rest() -> None:
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_request_without_a_token_is_refused_before_its_body_is_read(live: Live) -> None:
    # announces 60 MiB, sends none of it: the 401 must not wait for it
    r = await announce(live, "POST", "/subscribers.csv", "text/csv", 60 << 20, token=None)
    assert r.status == 401


async def test_deeply_nested_json_is_a_400_not_a_500(live: Live) -> None:
    await live.api("PUT", f"/subscribers/{ALICE}", {"opted_in": True})
    nested = b"[" * 50000 + b"]" * 50000
    r = await live.api("PATCH", f"/subscribers/{ALICE}", nested, ctype="application/json")
    assert r.status == 400 and r.json()["field"] == "body"


def test_the_rate_limit_keeps_nothing_for_refused_sources() -> None:
    from proxy.subscribers.pages import RateLimit

    limit = RateLimit(limit=1, window=3600, total=2)
    assert limit.allow("a", 0.0) and limit.allow("b", 1.0)
    for i in range(1000):  # the overall cap is reached: every new source is refused
        assert not limit.allow(f"203.0.113.{i}", 2.0)
    assert set(limit.events) == {"a", "b"}
    assert limit.allow("c", 3601.5)  # the window moved on


def test_a_link_with_non_ascii_characters_is_just_invalid() -> None:
    from proxy.subscribers.links import BadLink

    signer = LinkSigner(b"k" * 32, "http://x", 60)
    good = signer.token(13125550187, 100)
    with pytest.raises(BadLink):
        signer.verify(good[:-2] + "é", 10.0)
    assert signer.verify(good, 10.0) == 13125550187
