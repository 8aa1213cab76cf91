"""[flood] kernel_drop: proxy.kernel_drop's nftables table, inside a network
namespace this test creates (and deletes), so the host's firewall is never
touched. Inside it: an address added is dropped (its datagrams no longer
reach a UDP socket on the SIP port) while another still gets through, it
leaves the set when its timeout runs out, and shutdown deletes our table."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Run inside the namespace: prints one JSON object of what it saw.
SCRIPT = r"""
import asyncio, json, socket, time
from proxy.kernel_drop import KernelDropper

PORT = 5999

def reaches(receiver, source):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((source, 0))
    s.sendto(b"OPTIONS", ("127.0.0.1", PORT))
    s.close()
    try:
        receiver.recvfrom(64)
        return True
    except TimeoutError:
        return False

async def main():
    out = {}
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", PORT))
    receiver.settimeout(0.3)
    dropper = KernelDropper(((PORT, PORT),), table="rs_test")
    await dropper.setup(60)
    await dropper.setup(60)  # idempotent: the table is replaced, not doubled
    out["before"] = reaches(receiver, "127.0.0.2")
    out["added"] = await dropper.drop("127.0.0.2", 2)
    out["ipv6"] = await dropper.drop("::1", 2)
    out["members"] = await dropper.members()
    out["dropped"] = reaches(receiver, "127.0.0.2")
    out["other"] = reaches(receiver, "127.0.0.3")
    deadline = time.monotonic() + 10
    while "127.0.0.2" in await dropper.members() and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    out["expired"] = "127.0.0.2" not in await dropper.members()
    out["after"] = reaches(receiver, "127.0.0.2")
    await dropper.close(teardown=True)
    probe = KernelDropper(((PORT, PORT),), table="rs_test")
    try:
        await probe.members()
        out["table_left"] = True
    except Exception:  # no such set: the table is gone
        out["table_left"] = False
    await probe.close(teardown=False)
    print(json.dumps(out))

asyncio.run(main())
"""


def _unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create a network namespace and nftables rules"
    if shutil.which("ip") is None:
        return "needs iproute2's ip to create a network namespace"
    try:
        import pyroute2  # noqa: F401
    except ImportError:
        return "needs pyroute2 (pip install '.[kernel]')"
    return None


@pytest.fixture
def netns() -> Iterator[str]:
    why = _unavailable()
    if why:
        pytest.skip(why)
    name = f"rs-flood-{uuid.uuid4().hex[:8]}"
    made = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot create a network namespace: {made.stderr.strip()}")
    try:
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def test_an_address_is_dropped_in_the_kernel_until_its_timeout(netns: str) -> None:
    done = subprocess.run(
        ["ip", "netns", "exec", netns, sys.executable, "-c", SCRIPT],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["before"] is True, "without a drop the datagram arrives"
    assert seen["added"] is True and seen["ipv6"] is False
    assert set(seen["members"]) == {"127.0.0.2"} and 0 < seen["members"]["127.0.0.2"] <= 2
    assert seen["dropped"] is False, "a dropped address no longer reaches the socket"
    assert seen["other"] is True, "another address still does"
    assert seen["expired"] is True and seen["after"] is True, "gone after its timeout"
    assert seen["table_left"] is False, "shutdown deleted our table"
