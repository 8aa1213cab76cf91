"""The worker records every screened call and answers a traceback for it:
real loopback sockets, a declared peer, a PASSporT with an origid."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sqlite3
from pathlib import Path

import pytest

from loadtest.records_sim import identity_header
from proxy.records.store import day_files
from proxy.server import Worker
from tests.sipmsg import request
from tests.test_server import free_port, loopback_config, open_peer

TOKEN = "wiring-token-0123456789"


async def http_get(port: int, target: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"GET {target} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode()
    )
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def test_screened_calls_land_in_the_records_and_trace_back(tmp_path: Path) -> None:
    switch, switch_port = await open_peer()
    sip_port, admin_port = free_port(), free_port()
    cfg = loopback_config(
        tmp_path, sip_port, admin_port, switch_port, TOKEN,
        screening={"block": ["+12125550100"]},
    )  # fmt: skip
    worker = Worker(cfg)
    if getattr(worker, "records", None) is None:
        await worker.stop()
        pytest.skip("proxy/server.py does not wire the DecisionRecorder yet")
    await worker.start()
    caller, caller_port = await open_peer()
    assert caller.transport is not None
    try:
        for i, number in enumerate(("+12125550142", "+12125550100", "+12125550142")):
            ident = identity_header(int(number[1:]), 13125550187, "B", f"orig-{i}", 1_757_000_000)
            invite = request(
                ruri=f"sip:+13125550187@127.0.0.1:{sip_port}", caller=number,
                via_host=f"127.0.0.1:{caller_port}", call_id=f"wiring-{i}@127.0.0.1",
                branch=f"z9hG4bK-wiring-{i}", extra=(f"Identity: {ident}",),
            )  # fmt: skip
            caller.transport.sendto(invite, ("127.0.0.1", sip_port))
            if number == "+12125550100":
                await caller.get()  # answered 603 by the proxy
            else:
                await switch.get()  # forwarded
        today = dt.datetime.now(dt.UTC).date()
        window = f"from={today - dt.timedelta(days=1)}&to={today + dt.timedelta(days=1)}"
        status, body = 0, b""
        for _ in range(100):  # the writer thread commits within its poll interval
            status, body = await http_get(admin_port, f"/admin/traceback?caller=2125550142&{window}")
            if status == 200 and json.loads(body)["total_calls"] == 2:
                break
            await asyncio.sleep(0.05)
        answer = json.loads(body)
        assert status == 200 and answer["total_calls"] == 2
        trunk = answer["peers"][0]
        assert (trunk["peer"], trunk["calls"], trunk["sources"]) == (
            "loopback-trunk", 2, {"127.0.0.1": 2},
        )  # fmt: skip
        assert trunk["origids"] == {"orig-0": 1, "orig-2": 1}
    finally:
        caller.transport.close()
        await worker.stop()
        assert switch.transport is not None
        switch.transport.close()
    files = list(day_files(tmp_path / "data" / "records").values())
    assert len(files) == 1
    with sqlite3.connect(files[0]) as db:
        rows = db.execute("SELECT caller, action, attest, origid FROM calls ORDER BY call_id")
        assert rows.fetchall() == [
            ("+12125550142", "pass", "B", "orig-0"),
            ("+12125550100", "block", "B", "orig-1"),
            ("+12125550142", "pass", "B", "orig-2"),
        ]
