"""Shared fixtures: the ../shared material and a ready-made proxy core."""

from __future__ import annotations

import asyncio
import csv
import gc
import io
import time
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import pytest

from blocklists.slot import ArtefactSlot
from proxy.config import Config, parse_config
from proxy.core import StatelessProxy
from proxy.metrics import Metrics
from proxy.peers import PeerDirectory
from proxy.reputation import ReputationEngine
from proxy.routing import SwitchPool
from proxy.screening import SubscriberCheck, build_pipeline
from proxy.subscribers.model import profile_of

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(autouse=True)
def _private_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test runs in its own directory, so a Worker's default data
    directory (the subscriber store under ./var) never lands in the repo."""
    monkeypatch.chdir(tmp_path)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None]:
    """On a pytest-timeout failure, add where every pending asyncio task was
    waiting: the threads' stacks alone show only the event loop's poll."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and "Timeout" in str(call.excinfo.value if call.excinfo else ""):
        out = io.StringIO()
        for obj in gc.get_objects():
            if isinstance(obj, asyncio.Task) and not obj.done():
                obj.print_stack(limit=12, file=out)
        report.sections.append(("pending asyncio tasks", out.getvalue() or "none"))


def shared_dir(name: str) -> Path:
    path = SHARED / name
    if not path.is_dir():
        pytest.skip(f"shared material {path} is absent (it lives beside the project root)")
    return path


def read_index(name: str) -> list[dict[str, str]]:
    path = shared_dir(name) / "INDEX.tsv"
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def make_config(**sections: Any) -> Config:
    data: dict[str, Any] = {
        "sip": {"host": "192.0.2.5", "port": 5060},
        "switches": [{"name": "sw1", "host": "192.0.2.20", "port": 5080}],
        "routing": {"health_checks": False},
        "redress": {"url": "https://redress.example.net/r", "tel": "+18005550100"},
    }
    data.update(sections)
    return parse_config(data)


def make_core(cfg: Config | None = None) -> StatelessProxy:
    cfg = cfg or make_config()
    return StatelessProxy(
        cfg, build_pipeline(cfg.screening), SwitchPool(cfg.switches, cfg.routing), "t"
    )


def make_reputation_core(
    slot: ArtefactSlot | None = None,
    timer: Callable[[], float] | None = None,
    **sections: Any,
) -> tuple[StatelessProxy, ReputationEngine]:
    """A core with a reputation engine behind its screening, as the worker builds it."""
    cfg = make_config(**sections)
    slot = slot or ArtefactSlot()
    engine = ReputationEngine(cfg.reputation, slot)
    core = StatelessProxy(
        cfg,
        build_pipeline(cfg.screening, slot, cfg.blocklists, engine),
        SwitchPool(cfg.switches, cfg.routing),
        "t",
        engine,
        timer=timer,
    )
    return core, engine


def make_equipped_core() -> tuple[StatelessProxy, Metrics]:
    """The core as a worker equips it (reputation, a subscriber, peers, metrics),
    for the fuzzers: they keep its state across inputs, as production does."""
    cfg = make_config(peers=[{"name": "fuzz", "addresses": ["192.0.2.0/24"]}])
    slot = ArtefactSlot()
    engine = ReputationEngine(cfg.reputation, slot)
    subscribers = SubscriberCheck(
        {13125550187: profile_of(True, "block-all-suspected", True)}, {12125550142}
    )
    core = StatelessProxy(
        cfg,
        build_pipeline(cfg.screening, slot, cfg.blocklists, engine, subscribers),
        SwitchPool(cfg.switches, cfg.routing),
        "fuzz",
        engine,
        timer=time.perf_counter,
    )
    return core, Metrics(core.pool, peers=PeerDirectory(cfg.peers))
