"""The National DNC artefact: built by `blocklist build dnc:...`, checked and
loaded into its own slot, swapped on change, the old one kept on failure."""

from __future__ import annotations

import json
from itertools import count
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from blocklists.build import BuildError, build
from blocklists.slot import ArtefactSlot
from blocklists.sources import Flag, parse_source
from blocklists.store import ArtefactError
from proxy.cli import main
from proxy.core import StatelessProxy
from proxy.events import Address, Screened
from proxy.routing import SwitchPool
from proxy.screening import Action, build_pipeline
from proxy.telemarketing.dnc import DncLoader, load_dnc
from tests.conftest import make_config
from tests.sipmsg import request

_serial = count()


def build_dnc(out: Path, text: str) -> str:
    src = out.parent / f"dnc-{next(_serial)}.txt"
    src.write_text(text)
    return build([parse_source(f"dnc:{src}")], out).version


def test_a_dnc_build_reads_the_registry_forms_and_reports_bad_rows(tmp_path: Path) -> None:
    out = tmp_path / "dnc"
    build_dnc(out, "2125550142\n# a comment\n+1 (310) 555-0142\n808,5550142\nnot-a-number\n")
    art = load_dnc(out)
    try:
        assert art.counts["numbers"] == 3 and art.counts["problems"] == 1
        for key in (12125550142, 13105550142, 18085550142):
            entry = art.lookup(key)
            assert entry is not None and entry.flags == Flag.NATIONAL_DNC
        assert art.lookup(12125550143) is None
    finally:
        art.close()
    problems = (out / art.version / "problems.tsv").read_text()
    assert "\t5\tnot a telephone number: 'not-a-number'" in problems


def test_dnc_sources_cannot_be_mixed_with_other_kinds(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("2125550142\n")
    with pytest.raises(BuildError, match="dnc: sources build a National DNC artefact"):
        build(
            [parse_source(f"dnc:{tmp_path / 'a.txt'}"), parse_source(f"list:{tmp_path / 'a.txt'}")],
            tmp_path / "out",
        )
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_a_blocklist_artefact_is_refused_as_a_dnc_list(tmp_path: Path) -> None:
    """Pointing dnc_dir at the blocklists would block calls to every caller
    on them: refused, with how to build the right thing."""
    (tmp_path / "l.txt").write_text("2125550142\n")
    build([parse_source(f"list:{tmp_path / 'l.txt'}")], tmp_path / "lists")
    with pytest.raises(ArtefactError, match=r"not a National DNC artefact \(sources: list\)"):
        load_dnc(tmp_path / "lists")


def test_a_dnc_artefact_loaded_as_blocklists_blocks_no_caller(tmp_path: Path) -> None:
    """The other mistake: its numbers are callees, so no caller check acts."""
    build_dnc(tmp_path / "dnc", "2125550142\n")
    slot = ArtefactSlot()
    slot.current = load_dnc(tmp_path / "dnc")
    cfg = make_config()
    pool = SwitchPool(cfg.switches, cfg.routing)
    core = StatelessProxy(cfg, build_pipeline(cfg.screening, slot, cfg.blocklists), pool, "t")
    events = core.receive_datagram(
        request(caller="+12125550142"), Address("198.51.100.10", 5060, "udp"), 1.0
    )
    (screened,) = [e for e in events if isinstance(e, Screened)]
    assert screened.action is Action.PASS and screened.screening.decided_by is None
    slot.current.close()


def tamper(out: Path) -> None:
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["files"]["keys.u64"]["sha256"] = "0" * 64
    (out / "manifest.json").write_text(json.dumps(manifest))


async def test_the_loader_swaps_new_builds_and_keeps_the_old_on_a_corrupt_one(
    tmp_path: Path,
) -> None:
    out = tmp_path / "dnc"
    first = build_dnc(out, "2125550142\n")
    registry = CollectorRegistry()
    slot = ArtefactSlot()
    loader = DncLoader(out, slot, registry)
    try:
        assert (await loader.reload("start-up")).outcome == "loaded"
        assert slot.current is not None and slot.current.version == first
        assert await loader.tick() is None  # nothing changed
        assert (await loader.reload("SIGHUP")).outcome == "unchanged"

        build_dnc(out, "2125550142\n3105550142\n")
        tamper(out)
        failed = await loader.tick()  # the manifest changed
        assert failed is not None and failed.outcome == "error" and failed.version == first
        assert "sha256 does not match" in failed.detail
        assert slot.current.version == first and slot.current.lookup(13105550142) is None
        assert slot.last_error == failed.detail
        assert loader.status()["last_error"] == failed.detail

        second = build_dnc(out, "2125550142\n3105550142\n")
        loaded = await loader.tick()
        assert loaded is not None and (loaded.outcome, loaded.version) == ("loaded", second)
        assert slot.current.lookup(13105550142) is not None and slot.last_error is None
        assert registry.get_sample_value("rs_dnc_reloads_total", {"outcome": "loaded"}) == 2
        assert registry.get_sample_value("rs_dnc_reloads_total", {"outcome": "error"}) == 1
        assert registry.get_sample_value("rs_dnc_numbers") == 2
    finally:
        loader.close()
        if slot.current is not None:
            slot.current.close()


async def test_a_missing_directory_is_an_error_not_a_crash(tmp_path: Path) -> None:
    slot = ArtefactSlot()
    loader = DncLoader(tmp_path / "absent", slot, CollectorRegistry())
    try:
        result = await loader.reload("start-up")
        assert result.outcome == "error" and result.version is None and slot.current is None
        assert "manifest.json" in result.detail
    finally:
        loader.close()


def test_the_cli_builds_and_looks_up_a_dnc_artefact(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "registry.txt"
    src.write_text("212,5550142\n3105550142\n")
    out = tmp_path / "dnc"
    assert main(["blocklist", "build", f"dnc:{src}", "-o", str(out)]) == 0
    assert "dnc:" in capsys.readouterr().out
    assert main(["blocklist", "lookup", str(out), "+12125550142", "+12125550143"]) == 0
    printed = capsys.readouterr().out
    assert "+12125550142: listed <Flag.NATIONAL_DNC: 32>" in printed
    assert "+12125550143: not listed" in printed
    assert main(["blocklist", "build", f"dnc:{src}", f"block:{src}", "-o", str(out)]) == 2
    assert "no other kinds" in capsys.readouterr().err
