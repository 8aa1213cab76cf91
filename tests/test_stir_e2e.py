"""STIR/SHAKEN through a live worker: PASSporTs signed by a test STI-CA, the
certificate served over HTTPS on loopback, the verstat the switch receives,
and a dead or slow certificate server costing a call at most the budget."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest

from proxy.config import parse_config
from proxy.server import StartupError, Worker
from proxy.sip import SipMessage, parse_datagram
from tests.https_server import HttpsServer, Route
from tests.sipmsg import request
from tests.stir_ca import StiCa, make_sti_ca
from tests.test_server import Peer, free_port, open_peer

CALLER, CALLEE = "+12125550142", "+13125550187"
BUDGET = 0.3


@dataclass
class Lab:
    worker: Worker
    switch: Peer
    caller: Peer
    caller_port: int
    sip_port: int
    ca: StiCa
    https: HttpsServer
    serial: int = 0
    arrived: dict[str, SipMessage] = field(default_factory=dict)

    async def call(self, *identities: str | None) -> tuple[str, float]:
        """Send an INVITE with these Identity headers; the P-Asserted-Identity
        the switch got, and how long it took."""
        self.serial += 1
        extra = [f'P-Asserted-Identity: "Alice" <sip:{CALLER}@198.51.100.10;user=phone>']
        extra += [f"Identity: {identity}" for identity in identities if identity is not None]
        data = request(
            ruri=f"sip:{CALLEE}@127.0.0.1:{self.sip_port}",
            caller=CALLER,
            via_host=f"127.0.0.1:{self.caller_port}",
            branch=f"z9hG4bK-stir-{self.serial}",
            call_id=f"stir-{self.serial}@test",
            extra=tuple(extra),
        )
        assert self.caller.transport is not None
        started = time.monotonic()
        self.caller.transport.sendto(data, ("127.0.0.1", self.sip_port))
        msg = await self._invite(f"stir-{self.serial}@test")
        elapsed = time.monotonic() - started
        pai = msg.header("p-asserted-identity")
        assert pai is not None
        return pai, elapsed

    async def _invite(self, call_id: str) -> SipMessage:
        """The INVITE of this call at the switch: calls run concurrently, so
        another call's INVITE may come first; it is kept for its caller."""
        deadline = time.monotonic() + 5
        while call_id not in self.arrived:
            assert time.monotonic() < deadline, f"no INVITE for {call_id} at the switch"
            try:  # short waits: a concurrent call may take this call's INVITE off the queue
                got, _ = await self.switch.get(timeout=0.02)
            except TimeoutError:
                continue
            msg = parse_datagram(got)
            assert msg is not None
            self.arrived[msg.call_id] = msg
        return self.arrived.pop(call_id)

    def sign(self, path: str = "/sp.pem", **claims: object) -> str:
        values: dict[str, object] = {
            "orig": CALLER[1:], "dest": CALLEE[1:], "iat": int(time.time()),
            "x5u": self.https.url(path),
        }  # fmt: skip
        values.update(claims)
        return self.ca.sign(**values)

    def metric(self, name: str, **labels: str) -> float:
        text = generate_latest(self.worker.metrics.registry).decode()
        total = 0.0
        for line in text.splitlines():
            ours = line.startswith(name + "{") or line.startswith(name + " ")
            if ours and all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total


@contextlib.asynccontextmanager
async def running_lab(tmp_path: Path, **stir: object) -> AsyncIterator[Lab]:
    ca = make_sti_ca()
    trust = tmp_path / "sti-ca"
    trust.mkdir()
    (trust / "root.pem").write_bytes(ca.root.pem)
    https = HttpsServer().start()
    https.routes["/sp.pem"] = Route(body=ca.chain_pem, headers=(("Cache-Control", "max-age=600"),))
    switch, switch_port = await open_peer()
    caller, caller_port = await open_peer()
    sip_port = free_port()
    cfg = parse_config(
        {
            "sip": {"host": "127.0.0.1", "port": sip_port},
            "switches": [{"name": "sw", "host": "127.0.0.1", "port": switch_port}],
            "routing": {"health_checks": False},
            "admin": {"enabled": False},
            "log": {"verdict_log": str(tmp_path / "verdicts.jsonl")},
            "subscribers": {"data_dir": str(tmp_path)},
            "stir": {
                "enabled": True,
                "trust_dir": str(trust),
                "budget": BUDGET,
                "fetch_timeout": 1.0,
                "fetch_ca_file": https.cafile,
                "allow_private_hosts": True,
                **stir,
            },
        }
    )
    worker = Worker(cfg)
    await worker.start()
    try:
        yield Lab(worker, switch, caller, caller_port, sip_port, ca, https)
    finally:
        await worker.stop()
        https.stop()
        for peer in (switch, caller):
            assert peer.transport is not None
            peer.transport.close()


@pytest.fixture
async def lab(tmp_path: Path) -> AsyncIterator[Lab]:
    async with running_lab(tmp_path) as running:
        yield running


async def test_valid_passport_reaches_the_switch_as_passed(lab: Lab) -> None:
    pai, _ = await lab.call(lab.sign())
    assert ";verstat=TN-Validation-Passed@" in pai
    pai, _ = await lab.call(lab.sign())  # the certificate now comes from the cache
    assert ";verstat=TN-Validation-Passed@" in pai
    assert lab.https.requests("/sp.pem") == 1, "one fetch for both calls"
    assert lab.metric("rs_stir_verifications_total", result="TN-Validation-Passed", attest="A") == 2
    # the first call missed, waited for the fetch and found it when offered again
    assert lab.metric("rs_stir_certificate_lookups_total", outcome="miss") == 1
    assert lab.metric("rs_stir_certificate_lookups_total", outcome="hit") == 2
    assert lab.metric("rs_stir_certificate_fetch_seconds_count") == 1
    lines = await verdict_lines(lab, 2)
    assert [line["stir"] for line in lines] == [
        {"verstat": "TN-Validation-Passed", "reason": "ok", "attest": "A"}
    ] * 2


async def test_bad_passports_fail(lab: Lab) -> None:
    good = lab.sign()
    payload = good.split(";", 1)[0].split(".")[1]
    tampered = good.replace(payload, payload[:-2] + ("AA" if payload[-2:] != "AA" else "BB"))
    other = make_sti_ca(name="Unknown STI-CA")
    lab.https.routes["/other.pem"] = Route(body=other.chain_pem)
    cases = {
        "expired": lab.sign(iat=int(time.time()) - 3600),
        "tampered": tampered,
        "wrong-tn": lab.sign(orig="12025550199"),
        "not-for-callee": lab.sign(dest="13125550100"),
        "unknown-ca": other.sign(
            orig=CALLER[1:], dest=CALLEE[1:], iat=int(time.time()),
            x5u=lab.https.url("/other.pem"),
        ),
    }  # fmt: skip
    for name, identity in cases.items():
        pai, _ = await lab.call(identity)
        assert ";verstat=TN-Validation-Failed@" in pai, name
    assert lab.metric("rs_stir_verifications_total", result="TN-Validation-Failed") == len(cases)
    assert lab.metric("rs_stir_verifications_total", reason="untrusted") == 1


async def test_of_several_identity_headers_the_best_counts(lab: Lab) -> None:
    stale, good_b = lab.sign(iat=int(time.time()) - 3600), lab.sign(attest="B")
    pai, _ = await lab.call(stale, good_b, lab.sign(attest="C"))
    assert ";verstat=TN-Validation-Passed@" in pai
    lines = await verdict_lines(lab, 1)
    assert lines[-1]["stir"] == {"verstat": "TN-Validation-Passed", "reason": "ok", "attest": "B"}
    pai, _ = await lab.call(stale, "garbage")  # nothing passes: the first failure
    assert ";verstat=TN-Validation-Failed@" in pai


async def test_no_identity_is_no_validation(lab: Lab) -> None:
    pai, _ = await lab.call(None)
    assert ";verstat=No-TN-Validation@" in pai


async def test_a_dead_certificate_server_costs_a_call_at_most_the_budget(lab: Lab) -> None:
    dead = f"https://127.0.0.1:{free_port()}/gone.pem"
    pai, elapsed = await lab.call(lab.sign(x5u=dead))
    assert ";verstat=No-TN-Validation@" in pai
    assert elapsed < BUDGET + 0.5
    pai, elapsed = await lab.call(lab.sign(x5u=dead))  # remembered as failed: no wait at all
    assert ";verstat=No-TN-Validation@" in pai
    assert elapsed < 0.2
    # the first call's second look, after its wait, and the second call's
    assert lab.metric("rs_stir_certificate_lookups_total", outcome="negative") == 2


async def test_a_certificate_that_cannot_be_had_is_unverified_a_refused_one_failed(
    lab: Lab,
) -> None:
    """Whatever stops the fetch (here a URL without a host) leaves the call
    unverified; only a fetched chain that is refused fails it."""
    pai, _ = await lab.call(lab.sign(x5u="https:///no-host.pem"))
    assert ";verstat=No-TN-Validation@" in pai
    lab.https.routes["/junk.pem"] = Route(body=b"not a certificate")
    pai, _ = await lab.call(lab.sign("/junk.pem"))
    assert ";verstat=TN-Validation-Failed@" in pai


async def test_a_slow_certificate_server_never_holds_up_other_calls(lab: Lab) -> None:
    lab.https.routes["/slow.pem"] = Route(body=lab.ca.chain_pem, hang=True)
    slow = asyncio.create_task(lab.call(lab.sign("/slow.pem")))
    await asyncio.sleep(0.02)
    # meanwhile, a call whose certificate is cached goes straight through
    await lab.call(lab.sign())  # fetches /sp.pem
    pai, elapsed = await lab.call(lab.sign())
    assert ";verstat=TN-Validation-Passed@" in pai and elapsed < 0.2
    pai, elapsed = await slow
    assert ";verstat=No-TN-Validation@" in pai
    assert BUDGET - 0.05 <= elapsed < BUDGET + 0.5, elapsed


async def test_unverified_policy_goes_on_at_once_and_fetches_for_the_next_call(
    tmp_path: Path,
) -> None:
    async with running_lab(tmp_path, on_uncached="unverified") as lab:
        lab.https.routes["/sp.pem"] = Route(body=lab.ca.chain_pem, delay=0.2)
        pai, elapsed = await lab.call(lab.sign())
        assert ";verstat=No-TN-Validation@" in pai and elapsed < 0.15, elapsed
        for _ in range(50):  # the fetch it started, in the background
            if lab.metric("rs_stir_certificate_fetches_total", outcome="ok") == 1:
                break
            await asyncio.sleep(0.05)
        pai, _ = await lab.call(lab.sign())
        assert ";verstat=TN-Validation-Passed@" in pai
        lines = await verdict_lines(lab, 2)
        assert lines[0]["stir"]["reason"] == "cert-unavailable"


async def verdict_lines(lab: Lab, count: int) -> list[dict[str, Any]]:
    lab.worker.verdicts.flush()
    path = Path(lab.worker.cfg.log.verdict_log)
    for _ in range(100):
        text = path.read_text() if path.exists() else ""
        if len(text.splitlines()) >= count:
            return [json.loads(line) for line in text.splitlines()]
        await asyncio.sleep(0.02)
    raise AssertionError(f"fewer than {count} verdict lines")


async def test_a_bad_trust_directory_stops_start_up(tmp_path: Path) -> None:
    (tmp_path / "broken.pem").write_text("not a certificate")
    cfg = parse_config(
        {
            "sip": {"host": "127.0.0.1", "port": free_port()},
            "admin": {"enabled": False},
            "log": {"verdict_log": ""},
            "subscribers": {"data_dir": str(tmp_path)},
            "stir": {"enabled": True, "trust_dir": str(tmp_path)},
        }
    )
    with pytest.raises(StartupError, match=r"broken\.pem"):
        Worker(cfg)
