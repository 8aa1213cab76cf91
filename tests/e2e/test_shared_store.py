"""Two proxy nodes on one PostgreSQL subscriber store ([subscribers] backend
= "postgresql"): the store is the source of truth, so what one node's API
or redress page writes, the other applies within a second, and the dispute
queue is one queue whichever node took the dispute."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.pg_server import shared_cluster

from .harness import HOST, free_port, http_call, proxy_command, stop_process

pytestmark = pytest.mark.e2e

TOKEN = "shared-store-test-token"


class Node:
    def __init__(self, name: str, workdir: Path, dsn: str) -> None:
        self.name = name
        self.admin = free_port()
        self.workdir = workdir / name
        self.workdir.mkdir(parents=True)
        q = json.dumps
        config = "\n".join([
            "[sip]", f"host = {q(HOST)}", f"port = {free_port()}", 'transports = ["udp"]',
            "[[switches]]", 'name = "sw"', f"host = {q(HOST)}", f"port = {free_port()}",
            "[routing]", "health_checks = false",
            "[admin]", "enabled = true", f"host = {q(HOST)}", f"port = {self.admin}",
            f"token = {q(TOKEN)}",
            "[subscribers]", 'backend = "postgresql"', f"dsn = {q(dsn)}",
            f"data_dir = {q(str(self.workdir))}",
        ]) + "\n"  # fmt: skip
        path = self.workdir / "node.toml"
        path.write_text(config)
        self.log = (self.workdir / "proxy.log").open("wb")
        self.proc = subprocess.Popen(
            proxy_command(path), stdin=subprocess.DEVNULL, stdout=self.log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while self.call("GET", "/readyz")[0] != 200:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                out = (self.workdir / "proxy.log").read_text(errors="replace")
                raise RuntimeError(f"node {name} did not start:\n{out[-3000:]}")
            time.sleep(0.1)

    def call(
        self, method: str, path: str, body: object = None, form: dict[str, str] | None = None
    ) -> tuple[int, object]:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        data = None
        if form is not None:
            data = urllib.parse.urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        elif body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        return http_call(f"http://{HOST}:{self.admin}{path}", method, data, headers)

    def stop(self) -> None:
        stop_process(self.proc)
        self.log.close()


@pytest.fixture
def nodes(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[Node, Node]]:
    cluster = shared_cluster(request.config)
    dsn = cluster.dsn(cluster.new_schema())
    a = Node("a", tmp_path, dsn)
    try:
        b = Node("b", tmp_path, dsn)
    except Exception:
        a.stop()
        raise
    yield a, b
    a.stop()
    b.stop()


def within(seconds: float, check: Callable[[], bool], what: str) -> float:
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > seconds:
            raise AssertionError(f"{what}: not within {seconds} s")
        time.sleep(0.02)
    return time.monotonic() - start


def test_writes_on_one_node_apply_on_the_other(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    number = "+13105550177"
    status, _ = a.call("PUT", f"/api/v1/subscribers/{number}", {
        "opted_in": True, "policy": "block-all-suspected", "block": ["+12025550188"],
    })  # fmt: skip
    assert status in (200, 201)

    def b_has_it() -> bool:
        status, body = b.call("GET", f"/api/v1/subscribers/{number}")
        return status == 200 and isinstance(body, dict) and body.get("opted_in") is True

    assert within(1.0, b_has_it, "the opt-in on node b") < 1.0
    status, audit = b.call("GET", f"/api/v1/subscribers/{number}/audit")
    assert status == 200 and "opted_in" in json.dumps(audit)

    # one dispute queue: filed on b's redress page, resolved on a
    status, _ = b.call("POST", "/redress", form={
        "number": "+12025550199", "contact": "ops@example.com",
        "description": "our pharmacy reminders were blocked",
    })  # fmt: skip
    assert status == 200

    def open_on_a() -> list[dict[str, object]]:
        _status, body = a.call("GET", "/api/v1/disputes?status=open")
        items = body.get("disputes", body) if isinstance(body, dict) else body
        return [d for d in items or [] if isinstance(d, dict) and d["number"] == "+12025550199"]

    within(1.0, lambda: bool(open_on_a()), "the dispute in a's queue")
    dispute = open_on_a()[0]
    status, _ = a.call(
        "POST", f"/api/v1/disputes/{dispute['id']}/resolve",
        {"decision": "allow", "scope": "global", "note": "verified pharmacy"},
    )  # fmt: skip
    assert status == 200
    status, seen = b.call("GET", f"/api/v1/disputes/{dispute['id']}")
    assert status == 200 and isinstance(seen, dict) and seen["status"] == "allowed"
