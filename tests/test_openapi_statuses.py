"""The OpenAPI document's statuses against what the API answers.

With the subscriber store unavailable (every store call raises
StoreUnavailable, as a locked or full SQLite file or an unreachable
PostgreSQL does), each documented operation is called once with a request
it would otherwise carry out: those documenting 503 answer 503 with the
Retry-After they document, and the others, which read the in-memory index
only, answer as usual. The admin server's own answers (408, 413) are
documented on every operation and happen.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from proxy.server import Worker
from proxy.subscribers.backend import RETRY_AFTER, StoreUnavailable
from proxy.subscribers.model import Subscriber
from proxy.subscribers.openapi import openapi_document
from proxy.subscribers.service import apply_changes
from tests.test_server import open_peer
from tests.test_subscriber_api import ALICE, HEADER, TOKEN, Live, http, worker_config

ENTRY = "+12125550100"
DOC = openapi_document()

# One request per documented operation that would succeed with the store up.
REQUESTS: dict[tuple[str, str], tuple[str, Any, str | None]] = {
    ("GET", "/api/v1/subscribers/{number}"): (f"/subscribers/{ALICE}", b"", None),
    ("PUT", "/api/v1/subscribers/{number}"): (f"/subscribers/{ALICE}", {"opted_in": True}, None),
    ("PATCH", "/api/v1/subscribers/{number}"): (
        f"/subscribers/{ALICE}", {"reject_anonymous": True}, None,
    ),
    ("DELETE", "/api/v1/subscribers/{number}"): (f"/subscribers/{ALICE}", b"", None),
    ("GET", "/api/v1/subscribers/{number}/audit"): (f"/subscribers/{ALICE}/audit", b"", None),
    ("PUT", "/api/v1/subscribers/{number}/lists/{list}/{entry}"): (
        f"/subscribers/{ALICE}/lists/allow/{ENTRY}", b"", None,
    ),
    ("DELETE", "/api/v1/subscribers/{number}/lists/{list}/{entry}"): (
        f"/subscribers/{ALICE}/lists/block/{ENTRY}", b"", None,
    ),
    ("POST", "/api/v1/subscribers/{number}/self-service-link"): (
        f"/subscribers/{ALICE}/self-service-link", b"", None,
    ),
    ("GET", "/api/v1/subscribers.csv"): ("/subscribers.csv", b"", None),
    ("POST", "/api/v1/subscribers.csv"): (
        "/subscribers.csv", f"{HEADER}\n+16465550199,true,label,false,,\n", "text/csv",
    ),
    ("GET", "/api/v1/subscribers/stats"): ("/subscribers/stats", b"", None),
    ("GET", "/api/v1/disputes"): ("/disputes?status=open", b"", None),
    ("GET", "/api/v1/disputes/{id}"): ("/disputes/1", b"", None),
    ("POST", "/api/v1/disputes/{id}/resolve"): ("/disputes/1/resolve", {"decision": "reject"}, None),
}  # fmt: skip


def operations() -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method.upper(), path): op
        for path, item in DOC["paths"].items()
        for method, op in item.items()
        if method != "parameters"
    }


class Unavailable:
    """A store whose every call raises what a backend raises while it
    cannot take calls; attributes that are not calls are the real ones."""

    def __init__(self, real: object) -> None:
        self._real = real

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._real, name)
        if not callable(attr):
            return attr

        def unavailable(*_args: object, **_kw: object) -> None:
            raise StoreUnavailable("database or disk is full")

        return unavailable


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[Live]:
    switch, switch_port = await open_peer()
    worker = Worker(worker_config(tmp_path, switch_port))
    await worker.start()
    yield Live(worker, switch)
    await worker.stop()
    assert switch.transport is not None
    switch.transport.close()


def test_every_operation_documents_the_servers_answers_and_its_503() -> None:
    assert set(operations()) == set(REQUESTS), "REQUESTS must have one case per operation"
    for (method, path), op in operations().items():
        responses = op["responses"]
        for status in ("400", "401", "403", "408", "413"):
            assert status in responses, (method, path, status)
        if "503" in responses:
            retry = responses["503"]["headers"]["Retry-After"]
            assert retry["required"] and retry["schema"]["type"] == "integer", (method, path)
            assert responses["503"]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/Error"
            }


async def test_a_store_that_is_unavailable_answers_503_where_documented(live: Live) -> None:
    service = live.service
    alice = apply_changes(Subscriber(int(ALICE[1:])), {"opted_in": True, "block": [ENTRY]})
    await service.put(alice, "seed")
    await service.file_dispute(12125550161, "a@example.com", "seed", "10.0.0.1", 1.0)
    service.store = Unavailable(service.store)  # type: ignore[assignment]
    service.disputes = Unavailable(service.disputes)  # type: ignore[assignment]
    answered: dict[tuple[str, str], int] = {}
    for (method, template), (path, body, ctype) in REQUESTS.items():
        reply = await live.api(method, path, body, ctype=ctype)
        answered[(method, template)] = reply.status
        documented = operations()[(method, template)]["responses"]
        assert str(reply.status) in documented, (method, template, reply.status, reply.text)
        if "503" in documented:
            assert reply.status == 503, (method, template, reply.status, reply.text)
            assert reply.headers["retry-after"] == RETRY_AFTER
            assert int(RETRY_AFTER) >= 1
            assert "subscriber store is unavailable" in reply.json()["error"]
        else:  # the in-memory index answers
            assert 200 <= reply.status < 300, (method, template, reply.status, reply.text)
    # the writes that failed reached neither the index nor screening
    sub = service.get(int(ALICE[1:]))
    assert sub is not None and not sub.reject_anonymous and sub.block.entries() == [ENTRY]
    assert sorted(k for k, v in answered.items() if v != 503) == [
        ("GET", "/api/v1/subscribers.csv"),
        ("GET", "/api/v1/subscribers/stats"),
        ("GET", "/api/v1/subscribers/{number}"),
        ("POST", "/api/v1/subscribers/{number}/self-service-link"),
    ]


async def test_the_admin_servers_own_answers_happen(
    live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    too_big = await http(
        live.admin, "GET", "/api/v1/subscribers/stats", headers=("Content-Length: 99999999",)
    )
    assert too_big.status == 413 and "body over" in too_big.json()["error"]
    monkeypatch.setattr("proxy.admin.READ_TIMEOUT", 0.2)
    reader, writer = await asyncio.open_connection("127.0.0.1", live.admin)
    writer.write(
        f"PUT /api/v1/subscribers/{ALICE} HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {TOKEN}\r\n"
        "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{".encode()
    )  # the body never completes
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert re.match(rb"HTTP/1\.1 408 ", data), data[:80]
