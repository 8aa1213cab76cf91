"""Switch selection: weighted, deterministic per Call-ID, healthy only."""

from __future__ import annotations

from collections import Counter

from proxy.config import RoutingConfig, SwitchConfig
from proxy.routing import SwitchPool

SWITCHES = (SwitchConfig("a", "10.0.0.1", weight=1), SwitchConfig("b", "10.0.0.2", weight=3))


def test_hash_policy_is_deterministic_and_weighted() -> None:
    pool = SwitchPool(SWITCHES, RoutingConfig(policy="hash"))
    picks = Counter(pool.choose(f"call-{i}", 0.0).name for i in range(8000))  # type: ignore[union-attr]
    assert 0.70 < picks["b"] / 8000 < 0.80
    assert all(pool.choose(f"call-{i}", 0.0) == pool.choose(f"call-{i}", 5.0) for i in range(100))


def test_hash_policy_moves_only_the_calls_of_a_dead_switch() -> None:
    pool = SwitchPool(SWITCHES, RoutingConfig(policy="hash"))
    before = {i: pool.choose(f"c{i}", 0.0) for i in range(500)}
    pool.states[0].up = False
    after = {i: pool.choose(f"c{i}", 0.0) for i in range(500)}
    assert all(
        after[i] == before[i] for i in before if before[i] is not None and before[i].name == "b"
    )
    assert all(s is not None and s.name == "b" for s in after.values())
    pool.states[1].up = False
    assert pool.choose("x", 0.0) is None


def test_round_robin_is_weighted_with_affinity() -> None:
    pool = SwitchPool(SWITCHES, RoutingConfig(policy="round-robin"))
    picks = [pool.choose(f"n{i}", 0.0).name for i in range(8)]  # type: ignore[union-attr]
    assert Counter(picks) == {"b": 6, "a": 2}
    # CANCEL / ACK of the same Call-ID follow the INVITE while the affinity lives
    first = pool.choose("n0", 1.0)
    assert all(pool.choose("n0", 2.0) == first for _ in range(5))


def test_health_transitions() -> None:
    pool = SwitchPool(
        SWITCHES[:1], RoutingConfig(ping_timeout=1.0, failures_before_down=2, successes_before_up=2)
    )
    state = pool.states[0]
    for t in (0.0, 10.0):
        (due,) = pool.due_pings(t)
        pool.ping_sent(due, f"p{t}", t)
    assert pool.due_pings(20.0) and not state.up
    pool.ping_sent(state, "q1", 20.0)
    assert pool.ping_answered("q1") is state and not state.up  # one success is not enough
    pool.ping_sent(state, "q2", 30.0)
    pool.ping_answered("q2")
    assert state.up
    assert pool.ping_answered("unknown") is None
