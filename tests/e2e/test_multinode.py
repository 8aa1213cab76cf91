"""Scale-out, end to end: two proxy nodes in separate network namespaces
share a real Redis; SIPp places the calls.

- A campaign split across both nodes is detected at the same total volume
  as on one node (here: its fan-out, 40 distinct callees).
- A subscriber who opts in through node A is protected by node B within 1 s.
- Redis is killed mid-run: no call fails; once it is back, the counters of
  both nodes reconcile to the cluster's total.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.redis_server import RedisServer

from .multinode import NamespacesUnavailable, Node, Sipp, Topology, unavailable, write_calls

pytestmark = pytest.mark.e2e

SINGLE, SPLIT, RIDER = "+12025550111", "+12025550122", "+12025550133"
SUBSCRIBER, PESTER = "+13105550144", "+12025550155"
CAMPAIGN = 44  # calls, each to a different callee: fan-out 0.68 of full, label at 0.6


def callees(first: int, count: int) -> list[str]:
    # spread out, so no near-sequential signal, and not the callers' NPA-NXX
    return [f"+1646{(first + i * 7919) % 9_000_000 + 1_000_000:07d}" for i in range(count)]


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[tuple[Node, Node, RedisServer, Sipp]]:
    why = unavailable()
    if why:
        pytest.skip(why)
    try:
        topo = Topology(tmp_path)
    except NamespacesUnavailable as exc:
        pytest.skip(f"cannot create a network namespace here: {exc}")
    sipp = Sipp(tmp_path)
    a, b = topo.nodes
    redis = RedisServer(tmp_path / "redis", host=a.host_ip)
    try:
        redis.start(extra_binds=[b.host_ip])
        for node in (a, b):
            sipp.switch(node.host_ip)
        a.start(f"redis://{a.host_ip}:{redis.port}/0")
        b.start(f"redis://{b.host_ip}:{redis.port}/0")
        yield a, b, redis, sipp
    finally:
        sipp.close()
        topo.close()
        redis.kill()


def wait_for(check, seconds: float, what: str) -> float:  # type: ignore[no-untyped-def]
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > seconds:
            raise AssertionError(f"{what}: not within {seconds} s")
        time.sleep(0.05)
    return time.monotonic() - start


def hour(node: Node, number: str) -> float:
    traffic = node.explain(number)["traffic"]
    return float(traffic["calls_last_hour"]) if isinstance(traffic, dict) else 0.0


def verdict(node: Node, caller: str, callee: str) -> dict[str, object]:
    """The verdict line of that call (the log is written in batches)."""
    found: list[dict[str, object]] = []

    def seen() -> bool:
        found[:] = [v for v in node.verdicts() if (v["caller"], v["callee"]) == (caller, callee)]
        return bool(found)

    wait_for(seen, 3, f"verdict of {caller} -> {callee} on {node.name}")
    return found[-1]


def finish(proc, what: str) -> None:  # type: ignore[no-untyped-def]
    assert proc.wait(timeout=90) == 0, f"{what}: SIPp reported failed calls"


def test_two_nodes_share_counters_subscribers_and_survive_redis(
    lab: tuple[Node, Node, RedisServer, Sipp], tmp_path: Path
) -> None:
    a, b, redis, sipp = lab

    # one node alone: the campaign's score at CAMPAIGN calls
    single = write_calls(tmp_path / "single.csv", [(SINGLE, c) for c in callees(1, CAMPAIGN)])
    finish(sipp.calls(a, single, CAMPAIGN, 40, 25001), "single-node campaign")
    alone = a.explain(SINGLE)
    assert "fan-out" in alone["reasons"] and alone["action_by_policy"]["label"] == "label"

    # the same campaign split across both nodes
    half = CAMPAIGN // 2
    calls = [(SPLIT, c) for c in callees(2, CAMPAIGN)]
    on_a = sipp.calls(a, write_calls(tmp_path / "split_a.csv", calls[:half]), half, 40, 25002)
    on_b = sipp.calls(b, write_calls(tmp_path / "split_b.csv", calls[half:]), half, 40, 25003)
    finish(on_a, "campaign half on a")
    finish(on_b, "campaign half on b")
    wait_for(lambda: hour(a, SPLIT) >= CAMPAIGN and hour(b, SPLIT) >= CAMPAIGN, 5, "merge")
    for node in (a, b):
        seen = node.explain(SPLIT)
        assert seen["reasons"] == alone["reasons"], node.name
        assert abs(int(seen["score"]) - int(alone["score"])) <= 3, (seen, alone)
        assert seen["action_by_policy"]["label"] == "label"
    # and the next call of the campaign, on either node, is labelled
    nxt = callees(3, 1)[0]
    more = write_calls(tmp_path / "more.csv", [(SPLIT, nxt)])
    finish(sipp.calls(b, more, 1, 1, 25004), "the next campaign call")
    assert verdict(b, SPLIT, nxt)["action"] == "label"

    # a subscriber opts in on a; b protects them within 1 s
    status, _ = a.request("PUT", f"/api/v1/subscribers/{SUBSCRIBER}", {
        "opted_in": True, "policy": "label", "block": [PESTER],
    })  # fmt: skip
    assert status in (200, 201)
    t = wait_for(lambda: b.status(f"/api/v1/subscribers/{SUBSCRIBER}") == 200, 1.0, "opt-in on b")
    assert t < 1.0
    pester = write_calls(tmp_path / "pester.csv", [(PESTER, SUBSCRIBER)])
    finish(sipp.calls(b, pester, 1, 1, 25005), "the subscriber's blocked caller")
    blocked = verdict(b, PESTER, SUBSCRIBER)
    assert blocked["action"] == "block" and blocked["reasons"] == ["personal-blocklist"]

    # Redis dies mid-run; no call fails; counters reconcile when it is back
    rides = 160
    ride_calls = [(RIDER, c) for c in callees(4, rides)]
    ride_a = sipp.calls(a, write_calls(tmp_path / "ride_a.csv", ride_calls[::2]), rides // 2, 20, 25006)
    ride_b = sipp.calls(b, write_calls(tmp_path / "ride_b.csv", ride_calls[1::2]), rides // 2, 20, 25007)
    time.sleep(1.0)
    redis.kill()
    wait_for(lambda: a.metric("rs_cluster_degraded") == 1, 5, "a degraded")
    time.sleep(1.5)
    redis.start(extra_binds=[b.host_ip])
    finish(ride_a, "calls through a while Redis was down")
    finish(ride_b, "calls through b while Redis was down")
    wait_for(lambda: a.metric("rs_cluster_degraded") == 0, 10, "a back")
    wait_for(lambda: b.metric("rs_cluster_degraded") == 0, 10, "b back")
    wait_for(lambda: hour(a, RIDER) >= rides and hour(b, RIDER) >= rides, 10, "reconciled")
    assert hour(a, RIDER) < rides + 1 and hour(b, RIDER) < rides + 1  # nothing twice
    assert (a.metric("rs_cluster_rows_total{direction=\"dropped\"}") or 0) == 0
