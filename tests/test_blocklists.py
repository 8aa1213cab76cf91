"""Blocklists offline: sources, build, manifest, store and the CLI. The proxy
side (list checks through the core, zero false blocks at a million numbers,
hot reload on a live worker) is in test_blocklist_reload.py."""

from __future__ import annotations

import datetime
import hashlib
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import blocklists.build as build_mod
import blocklists.sources as sources_mod
from blocklists.build import BuildError, build
from blocklists.sources import (
    FTC_COLUMNS,
    Flag,
    Kind,
    Report,
    Source,
    parse_source,
    read_ftc,
    read_numbers,
    read_prefixes,
)
from blocklists.store import Artefact, ArtefactError, Entry
from tests.conftest import shared_dir

ROOT = Path(__file__).resolve().parents[1]
HEADER = ",".join(FTC_COLUMNS)
OUTPUT_FILES = {
    "bloom.bin", "keys.u64", "flags.u8", "complaints.u32", "first_seen.u16",
    "last_seen.u16", "allow.u64", "prefixes.json", "problems.tsv",
}  # fmt: skip


def ftc(
    number: str, when: str = "2025-03-01 10:00:00", robo: str = "Y", subject: str = "Other"
) -> str:
    return f"{number},2025-03-03 00:00:00,{when},Springfield,Illinois,217,{subject},{robo}"


def write(path: Path, content: str | bytes) -> Path:
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def day(text: str) -> int:
    return (datetime.date.fromisoformat(text) - datetime.date(1970, 1, 1)).days


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def numbers_of(report: Report) -> list[int]:
    return [k for chunk in read_numbers(report) for k in chunk]


def problems(report: Report) -> list[tuple[int, str]]:
    return [(p.line, p.reason) for p in report.problems]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "proxy", "blocklist", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


# -- sources --------------------------------------------------------------


def test_parse_source_kinds_and_errors() -> None:
    for kind in Kind:
        assert parse_source(f"{kind.value}:/x/y.txt") == Source(kind, Path("/x/y.txt"))
    assert parse_source("numbers.txt") == Source(Kind.LIST, Path("numbers.txt"))
    with pytest.raises(ValueError, match="unknown source kind 'bogus'"):
        parse_source("bogus:/x")
    with pytest.raises(ValueError, match="no path"):
        parse_source("ftc:")


def test_read_numbers_forms_comments_and_malformed_rows(tmp_path: Path) -> None:
    path = write(
        tmp_path / "list.txt",
        b"2125550142\n"  # 1
        b"12125550143\r\n"  # 2: CRLF
        b"+1 (212) 555-0144\n"  # 3
        b"# a comment line\n"  # 4
        b"\n"  # 5
        b"  +442079460958   # trailing comment\n"  # 6
        b"CALL-NOW\n"  # 7
        b"212555014\n"  # 8: nine digits
        b"\xff\xfe2125550145\n"  # 9: undecodable bytes
        b"212.555.0146",  # 10: no final newline
    )
    report = Report(Source(Kind.LIST, path))
    keys = numbers_of(report)
    assert sorted(keys) == [12125550142, 12125550143, 12125550144, 12125550146, 442079460958]
    assert (report.rows, report.entries, report.skipped) == (10, 5, 0)
    assert [line for line, _ in problems(report)] == [7, 8, 9]
    assert all(p.path == str(path) for p in report.problems)
    assert "not a telephone number: 'CALL-NOW'" in report.problems[0].reason
    assert "\ufffd" in report.problems[2].reason  # undecodable bytes are shown, not lost
    assert str(report.problems[1]).startswith(f"{path}:8: ")


def test_read_numbers_line_numbers_survive_chunk_boundaries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = [f"212555{i:04d}" if i % 7 else f"bad{i}" for i in range(1, 60)]
    path = write(tmp_path / "list.txt", "\r\n".join(lines) + "\r\n")
    monkeypatch.setattr(sources_mod, "CHUNK_BYTES", 7)  # shorter than a line
    report = Report(Source(Kind.LIST, path))
    keys = numbers_of(report)
    assert sorted(keys) == [12125550000 + i for i in range(1, 60) if i % 7]
    assert [line for line, _ in problems(report)] == [i for i in range(1, 60) if i % 7 == 0]
    assert report.rows == 59


def test_empty_files(tmp_path: Path) -> None:
    empty = write(tmp_path / "empty", b"")
    for read in (numbers_of, lambda r: list(read_prefixes(r))):
        report = Report(Source(Kind.LIST, empty))
        assert read(report) == [] and report.rows == 0 and report.problems == []
    report = Report(Source(Kind.FTC, empty))
    assert list(read_ftc(report)) == []
    assert problems(report) == [(1, "empty file: no FTC header")]


def test_read_ftc_rows_and_every_kind_of_malformed_row(tmp_path: Path) -> None:
    rows = [
        "\ufeff" + HEADER,  # 1: a BOM is tolerated
        ftc("2125550142", robo="Y"),  # 2
        ftc("2125550143", "2025-02-27 00:00:00", robo="n"),  # 3
        '2125550144,2025-03-03 00:00:00,2025-03-02 09:15:00,Austin,Texas,512,"Reducing your debt (credit cards, mortgage, student loans)",',  # 4
        ftc("", robo="Y"),  # 5: empty number: skipped, not a problem
        "2125550145,2025-03-03 00:00:00,2025-03-01 10:00:00,Springfield,Illinois,217,Other",  # 6: 7 fields
        ftc("2125550146") + ",extra",  # 7: 9 fields
        ftc("2125550147", "2025-13-01 10:00:00"),  # 8
        ftc("2125550148", "yesterday"),  # 9
        ftc("2125550149", robo="maybe"),  # 10
        ftc("555-CALL-NOW"),  # 11
        ftc("2125550150", subject="Medical  & prescriptions"),  # 12: double space is fine
    ]
    path = write(
        tmp_path / "ftc.csv",
        "\r\n".join(rows).encode() + b"\r\n" + ftc("21255\xff0151").encode("latin-1") + b"\r\n",
    )
    report = Report(Source(Kind.FTC, path))
    got = [(c.key, c.day, c.robocall) for c in read_ftc(report)]
    assert got == [
        (12125550142, day("2025-03-01"), True),
        (12125550143, day("2025-02-27"), False),
        (12125550144, day("2025-03-02"), False),
        (12125550150, day("2025-03-01"), True),
    ]
    assert (report.rows, report.entries, report.skipped) == (12, 4, 1)
    found = problems(report)
    assert [line for line, _ in found] == [6, 7, 8, 9, 10, 11, 13]
    assert found[0][1] == "expected 8 fields, got 7" and found[1][1] == "expected 8 fields, got 9"
    assert "Violation_Date '2025-13-01" in found[2][1] and "yesterday" in found[3][1]
    assert "bad Recorded_Message_Or_Robocall 'maybe'" in found[4][1]
    assert "Company_Phone_Number is not a number: '555-CALL-NOW'" in found[5][1]
    assert "\ufffd" in found[6][1]


def test_read_ftc_line_numbers_count_physical_lines_of_quoted_newlines(tmp_path: Path) -> None:
    text = HEADER + "\n" + ftc("2125550142", subject='"two\nlines"') + "\n" + ftc("x") + "\n"
    report = Report(Source(Kind.FTC, write(tmp_path / "f.csv", text)))
    assert [c.key for c in read_ftc(report)] == [12125550142]
    assert [line for line, _ in problems(report)] == [4]


def test_read_ftc_wrong_header_is_one_problem_and_no_rows(tmp_path: Path) -> None:
    text = "Number,Date,Violation,City,State,Area,Subject,Robocall\n" + ftc("2125550142") + "\n"
    report = Report(Source(Kind.FTC, write(tmp_path / "f.csv", text)))
    assert list(read_ftc(report)) == [] and report.entries == 0
    assert len(report.problems) == 1 and report.problems[0].line == 1
    assert "not an FTC Do Not Call CSV header" in report.problems[0].reason


def test_read_ftc_on_the_shared_sample() -> None:
    sample = shared_dir("data") / "ftc_dnc_complaints_sample.csv"
    report = Report(Source(Kind.FTC, sample))
    complaints = list(read_ftc(report))
    assert (report.rows, report.skipped, report.problems) == (200, 13, [])
    assert len(complaints) == report.entries == 187
    per_number: dict[int, int] = {}
    for c in complaints:
        per_number[c.key] = per_number.get(c.key, 0) + 1
    heavy = sorted(n for n in per_number.values() if n >= 9)
    assert len(heavy) == 8 and heavy[0] >= 9 and heavy[-1] <= 15
    assert all((c.key - 10_000_000_000) // 10_000 % 1000 == 555 for c in complaints)


def test_read_prefixes_rules_and_bad_syntax(tmp_path: Path) -> None:
    text = (
        "+1900 block\n"  # 1
        "+1212555 label   # comment\n"  # 2
        "+12125550 ALLOW\n"  # 3
        "+1800\n"  # 4: default block
        "\n# only a comment\n"  # 5, 6
        "1900 block\n"  # 7: no '+'
        "+19x0 block\n"  # 8
        "+1234567890123456 block\n"  # 9: 16 digits
        "+1900 deny\n"  # 10
        "+1900 block now\n"  # 11
        "+ block\n"  # 12
    )
    report = Report(Source(Kind.PREFIX, write(tmp_path / "p.txt", text)))
    rules = [(r.prefix, r.action) for r in read_prefixes(report)]
    assert rules == [
        ("1900", "block"),
        ("1212555", "label"),
        ("12125550", "allow"),
        ("1800", "block"),
    ]
    assert (report.rows, report.entries) == (12, 4)
    found = problems(report)
    assert [line for line, _ in found] == [7, 8, 9, 10, 11, 12]
    assert all("prefix must be '+' and 1 to 15 digits" in r for _, r in found[:3])
    assert all("expected '<+prefix> [block|label|allow]'" in r for _, r in found[3:5])


# -- build and manifest ---------------------------------------------------


@pytest.fixture
def lists(tmp_path: Path) -> dict[str, Path]:
    src = tmp_path / "src"
    src.mkdir()
    return {
        "day1": write(src / "day1.csv", "\n".join([
            HEADER,
            ftc("2125550142", "2025-02-25 08:00:00", robo="N"),
            ftc("2125550142", "2025-03-01 23:59:00", robo="N"),
            ftc("2125550143", "2025-03-01 10:00:00", robo="N"),
            ftc("2125550199", "2025-03-02 10:00:00", robo=""),
            ftc("", robo="Y"),
            ftc("2125550199", "not a date"),
        ]) + "\n"),
        "day2": write(src / "day2.csv", "\n".join([
            HEADER,
            ftc("+1 212 555 0142", "2025-02-20 00:00:00", robo="Y"),
            ftc("2125550144", "2025-03-02 10:00:00", robo="Y"),
        ]) + "\n"),
        "list": write(src / "list.txt", "2125550143\n2125550150\nnope\n"),
        "block": write(src / "block.txt", "+12125550160\n+12125550170\n"),
        "allow": write(src / "allow.txt", "2125550170\n2125550171\n2125550171\n"),
        "dno": write(src / "dno.txt", "8005550180\n"),
        "prefix": write(src / "prefix.txt", "+1900 block\n+1900555 label\n+19005551 allow\n+1 9\n"),
    }  # fmt: skip


def build_all(lists: dict[str, Path], out: Path, fp_rate: float = 0.001) -> build_mod.BuildResult:
    kinds = {"day1": "ftc", "day2": "ftc"}
    return build([parse_source(f"{kinds.get(n, n)}:{p}") for n, p in lists.items()], out, fp_rate)


def test_ftc_aggregation_across_two_daily_files(lists: dict[str, Path], tmp_path: Path) -> None:
    result = build_all(lists, tmp_path / "out")
    art = Artefact.load(tmp_path / "out")
    a = art.lookup(12125550142)  # 2 complaints on day 1 (N), 1 on day 2 (Y)
    assert a is not None and a.flags == Flag.FTC | Flag.ROBOCALL
    assert (a.complaints, a.first_seen, a.last_seen) == (3, day("2025-02-20"), day("2025-03-01"))
    b = art.lookup(12125550143)  # FTC and a plain list: complaints only from FTC
    assert b is not None and b.flags == Flag.FTC | Flag.LIST and b.complaints == 1
    assert b.first_seen == b.last_seen == day("2025-03-01")
    c = art.lookup(12125550199)  # the bad-date row is not counted
    assert c is not None and c.flags == Flag.FTC and c.complaints == 1
    d = art.lookup(12125550144)
    assert d is not None and d.flags == Flag.FTC | Flag.ROBOCALL
    e = art.lookup(12125550150)  # list only: no complaints, no days
    assert e == Entry(Flag.LIST, 0, None, None)
    assert art.lookup(12125550160).flags == Flag.BLOCK  # type: ignore[union-attr]
    assert art.lookup(18005550180).flags == Flag.DNO  # type: ignore[union-attr]
    assert art.lookup(12125550141) is None and art.lookup(12125550171) is None
    assert art.allowed(12125550171) and art.allowed(12125550170) and not art.allowed(12125550142)
    assert result.manifest["counts"]["numbers"] == 8
    art.close()


def test_manifest_records_sources_outputs_and_checksums(
    lists: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    before = time.time()
    result = build_all(lists, out, fp_rate=0.01)
    m = json.loads((out / "manifest.json").read_text())
    assert m == result.manifest and m["version"] == result.version and m["format"] == 1
    assert (out / result.version).is_dir() and not (out / "manifest.json.tmp").exists()
    assert sorted(p.name for p in out.iterdir()) == sorted(["manifest.json", result.version])
    assert m["fp_rate"] == 0.01 and m["build_seconds"] >= 0
    assert before - 1 <= m["built_at_epoch"] <= time.time() + 1
    built_at = datetime.datetime.fromisoformat(m["built_at"]).timestamp()
    assert abs(built_at - m["built_at_epoch"]) < 2
    assert m["counts"] == {"numbers": 8, "allow": 2, "prefix_rules": 3, "problems": 3}
    by_path = {s["path"]: s for s in m["sources"]}
    assert [s["kind"] for s in m["sources"]] == [
        "ftc",
        "ftc",
        "list",
        "block",
        "allow",
        "dno",
        "prefix",
    ]
    for path in lists.values():
        assert by_path[str(path)]["sha256"] == sha256(path)
    day1 = by_path[str(lists["day1"])]
    assert (day1["rows"], day1["entries"], day1["skipped"], day1["problems"]) == (6, 4, 1, 1)
    lst = by_path[str(lists["list"])]
    assert (lst["rows"], lst["entries"], lst["skipped"], lst["problems"]) == (3, 2, 0, 1)
    assert by_path[str(lists["allow"])]["entries"] == 3  # duplicates count as entries
    assert set(m["files"]) == OUTPUT_FILES
    for name, info in m["files"].items():
        assert info["path"] == f"{result.version}/{name}"
        assert info["sha256"] == sha256(out / info["path"])
    keys = np.fromfile(out / result.version / "keys.u64", dtype="<u8")
    assert len(keys) == 8 and (np.diff(keys.astype(np.int64)) > 0).all()
    tsv = (out / result.version / "problems.tsv").read_text().splitlines()
    assert tsv[0] == "file\tline\treason" and len(tsv) == 4
    assert f"{lists['list']}\t3\tnot a telephone number: 'nope'" in tsv
    assert any(line.startswith(f"{lists['prefix']}\t4\t") for line in tsv)


def test_missing_source_is_a_build_error_and_leaves_the_output_alone(
    lists: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    first = build_all(lists, out)
    before = (out / "manifest.json").read_bytes()
    with pytest.raises(BuildError, match=r"^block:.*nowhere\.txt: no such file$"):
        build(
            [parse_source(f"ftc:{lists['day1']}"), parse_source(f"block:{tmp_path}/nowhere.txt")],
            out,
        )
    assert (out / "manifest.json").read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == sorted(["manifest.json", first.version])


def test_old_versions_are_pruned_keeping_three(
    lists: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # names that sort against build order: pruning must go by age, not by name
    names = iter(f"20250101T000000.000Z-0000000{9 - i}" for i in range(5))
    monkeypatch.setattr(build_mod, "_version", lambda sources: next(names))
    out = tmp_path / "out"
    (out / "00-operator-notes").mkdir(parents=True)  # not a version: never touched
    for _ in range(5):
        last = build([parse_source(f"list:{lists['list']}")], out)
    kept = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert kept == [
        "00-operator-notes",
        *sorted(f"20250101T000000.000Z-0000000{9 - i}" for i in (2, 3, 4)),
    ]
    kept.remove("00-operator-notes")
    assert json.loads((out / "manifest.json").read_text())["version"] == last.version == kept[0]


@pytest.mark.parametrize("when", ["1969-12-31 10:00:00", "2200-01-01 10:00:00"])
def test_out_of_range_violation_date_is_a_problem_not_a_crash(tmp_path: Path, when: str) -> None:
    path = write(
        tmp_path / "f.csv", "\n".join([HEADER, ftc("2125550142", when), ftc("2125550143")]) + "\n"
    )
    result = build([parse_source(f"ftc:{path}")], tmp_path / "out")
    assert [p.line for p in result.reports[0].problems] == [2]
    assert result.manifest["counts"]["numbers"] == 1


# -- store ----------------------------------------------------------------


def test_prefix_longest_match_and_bloom_false_positive_counting(tmp_path: Path) -> None:
    listed = write(tmp_path / "l.txt", "\n".join(f"212555{i:04d}" for i in range(50)) + "\n")
    prefix = write(tmp_path / "p.txt", "+1900 block\n+1900555 label\n+19005551 allow\n+44 label\n")
    build([parse_source(f"list:{listed}"), parse_source(f"prefix:{prefix}")], tmp_path / "o", 0.3)
    art = Artefact.load(tmp_path / "o")
    assert art.prefix_action(19004440100) == ("1900", "block")
    assert art.prefix_action(19005550100) == ("1900555", "label")
    assert art.prefix_action(19005551234) == ("19005551", "allow")
    assert art.prefix_action(442079460958) == ("44", "label")
    assert art.prefix_action(12125550142) is None and art.prefix_action(190) is None
    # with fp_rate 0.3, some unlisted numbers pass the Bloom filter: never a hit
    misses = [k for k in range(13125550000, 13125552000) if k in art.bloom]
    assert misses
    assert all(art.lookup(k) is None for k in misses)
    assert art.bloom_false_positives == len(misses)
    assert art.lookup(12125550049) is not None and art.bloom_false_positives == len(misses)
    art.close()


def _manifest(out: Path, edit: Callable[[dict[str, Any]], object]) -> None:
    m = json.loads((out / "manifest.json").read_text())
    edit(m)
    (out / "manifest.json").write_text(json.dumps(m))


DAMAGE: dict[str, tuple[Callable[[Path, Path], object], str]] = {
    "tampered flags": (
        lambda out, v: (v / "flags.u8").write_bytes(b"\xee" + (v / "flags.u8").read_bytes()[1:]),
        "flags.u8: sha256 does not match",
    ),
    "truncated keys": (
        lambda out, v: (v / "keys.u64").write_bytes((v / "keys.u64").read_bytes()[:-3]),
        "keys.u64: sha256 does not match",
    ),
    "missing complaints": (
        lambda out, v: (v / "complaints.u32").unlink(),
        "complaints.u32: missing",
    ),
    "manifest not json": (
        lambda out, v: (out / "manifest.json").write_text('{"format": 1, "version": '),
        "manifest.json: not JSON",
    ),
    "no manifest": (lambda out, v: (out / "manifest.json").unlink(), "manifest.json: No such file"),
    "wrong format": (
        lambda out, v: _manifest(out, lambda m: m.update(format=99)),
        "not an artefact manifest of format 1",
    ),
    "bad sha in manifest": (
        lambda out, v: _manifest(out, lambda m: m["files"]["allow.u64"].update(sha256="0" * 64)),
        "allow.u64: sha256 does not match",
    ),
    "manifest lacks a file": (
        lambda out, v: _manifest(out, lambda m: m["files"].pop("prefixes.json")),
        "manifest lacks prefixes.json",
    ),
    "no version": (lambda out, v: _manifest(out, lambda m: m.pop("version")), "malformed manifest"),
}


def _damage(out: Path, how: str) -> None:
    DAMAGE[how][0](out, out / json.loads((out / "manifest.json").read_text())["version"])


@pytest.mark.parametrize("how", DAMAGE)
def test_damaged_artefact_is_refused(lists: dict[str, Path], tmp_path: Path, how: str) -> None:
    out = tmp_path / "out"
    build_all(lists, out)
    Artefact.load(out).close()
    _damage(out, how)
    with pytest.raises(ArtefactError, match=DAMAGE[how][1]):
        Artefact.load(out)


def test_unverified_load_still_checks_sizes(lists: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    version = build_all(lists, out).version
    keys = out / version / "keys.u64"
    whole = keys.read_bytes()
    keys.write_bytes(whole[:-3])
    with pytest.raises(ArtefactError, match="not a whole number of items"):
        Artefact.load(out, verify=False)
    keys.write_bytes(whole[:-8])
    with pytest.raises(ArtefactError, match="side table length differs"):
        Artefact.load(out, verify=False)


def test_unverified_load_checks_first_seen_length(lists: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    version = build_all(lists, out).version
    first = out / version / "first_seen.u16"
    first.write_bytes(first.read_bytes()[:-2])
    try:
        art = Artefact.load(out, verify=False)
    except ArtefactError:
        return  # refused: the fix
    keys = np.fromfile(out / version / "keys.u64", dtype="<u8").tolist()
    assert all(art.lookup(k) is not None for k in keys)  # accepted: every entry must still work


@pytest.mark.parametrize("files", [[], None, "x"])
def test_manifest_files_of_the_wrong_type_is_an_artefact_error(
    lists: dict[str, Path], tmp_path: Path, files: object
) -> None:
    out = tmp_path / "out"
    m = build_all(lists, out).manifest
    (out / "manifest.json").write_text(json.dumps(dict(m, files=files)))
    with pytest.raises(ArtefactError):
        Artefact.load(out)


# -- command line ---------------------------------------------------------


def test_cli_build_verify_lookup(lists: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    specs = [
        f"ftc:{lists['day1']}",
        f"list:{lists['list']}",
        f"allow:{lists['allow']}",
        f"prefix:{lists['prefix']}",
        f"dno:{lists['dno']}",
    ]
    done = cli("build", *specs, "-o", str(out), "--fp-rate", "0.01")
    assert done.returncode == 0, done.stderr
    version = json.loads((out / "manifest.json").read_text())["version"]
    assert json.loads((out / "manifest.json").read_text())["fp_rate"] == 0.01
    assert f"list:{lists['list']}: 3 rows, 2 entries, 0 skipped, 1 malformed" in done.stdout
    assert f"ftc:{lists['day1']}: 6 rows, 4 entries, 1 skipped, 1 malformed" in done.stdout
    assert (
        f"built {out}/{version}: 5 numbers, 2 allowed, 3 prefix rules, 3 malformed rows"
        in done.stdout
    )
    assert f"  {lists['list']}:3: not a telephone number: 'nope'" in done.stderr.splitlines()
    done = cli("verify", str(out))
    assert (
        done.returncode == 0
        and f"version {version} ok: 5 numbers, 2 allowed, 3 prefix rules" in done.stdout
    )
    done = cli(
        "lookup",
        str(out),
        "2125550142",
        "+1-212-555-0141",
        "2125550171",
        "+19005550100",
        "+11005550100",
        "12345",
        "8005550180",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "+12125550142: listed <Flag.FTC: 1> complaints=2",
        "+12125550141: not listed",
        "+12125550171: not listed, allowed",
        "+19005550100: not listed, prefix +1900555 label",
        "+11005550100: not listed, invalid NANP number",
        "12345: not a number",
        "+18005550180: listed <Flag.DNO: 16> complaints=0",
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["build", "list:{tmp}/nowhere.txt", "-o", "{tmp}/out"],
            "robocall-shield: blocklist build: list:{tmp}/nowhere.txt: no such file",
        ),
        (
            ["build", "bogus:{tmp}/x", "-o", "{tmp}/out"],
            "robocall-shield: blocklist build: 'bogus:{tmp}/x': unknown source kind",
        ),
        (
            ["build", "list:{tmp}/x", "-o", "{tmp}/out", "--fp-rate", "0.7"],
            "robocall-shield: --fp-rate must be between 0 and 0.5",
        ),
    ],
)
def test_cli_bad_usage_exits_2_with_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    done = cli(*(a.format(tmp=tmp_path) for a in args))
    assert done.returncode == 2 and done.stdout == ""
    assert len(done.stderr.splitlines()) == 1 and done.stderr.startswith(
        message.format(tmp=tmp_path)
    )
    assert not (tmp_path / "out").exists()


def test_cli_verify_and_lookup_exit_1_on_a_damaged_artefact(
    lists: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    build_all(lists, out)
    _damage(out, "tampered flags")
    done = cli("verify", str(out))
    assert done.returncode == 1 and done.stdout == ""
    assert (
        done.stderr.startswith("robocall-shield: artefact error: ")
        and "flags.u8: sha256 does not match" in done.stderr
    )
    assert len(done.stderr.splitlines()) == 1
    _damage(out, "no manifest")
    done = cli("lookup", str(out), "2125550142")
    assert (
        done.returncode == 1 and "manifest.json" in done.stderr and "Traceback" not in done.stderr
    )


@pytest.mark.parametrize(
    ("user", "invalid"),
    [
        ("+12125550142", False),
        ("2125550142", False),
        ("12125550142", False),
        ("+1212555014", True),  # 9 national digits
        ("+121255501423", True),  # 11 national digits
        ("212555014", True),
        ("22125550142", True),  # 11 digits not starting with 1
        ("212555O142", True),  # a letter among the digits
        ("+11125550142", True),  # NPA starting with 1
        ("+12121550142", True),  # NXX starting with 1
        ("+14115550142", True),  # N11 area code
        ("+442071234567", False),  # another country
        ("011442071234567", False),  # international dialling from NANP
        ("1001", False),  # an extension
        ("alice", False),
    ],
)
def test_invalid_caller_rules(user: str, invalid: bool) -> None:
    from blocklists.nanp import invalid_caller
    from proxy.sip.numbers import e164_key

    assert invalid_caller(user, e164_key(user)) is invalid


def test_ftc_stray_quote_costs_one_row_not_the_file(tmp_path: Path) -> None:
    good = [ftc(f"21255501{i:02d}") for i in range(60)]
    stray = '2125550199,2025-03-03 00:00:00,2025-03-01 10:00:00,"Springfield,Illinois,217,Other,Y'
    rows = [HEADER, good[0], stray, *good[1:]]
    path = write(tmp_path / "ftc.csv", "\n".join(rows) + "\n" + "x" * 200_000 + "\n")
    report = Report(Source(Kind.FTC, path))
    keys = [c.key for c in read_ftc(report)]
    assert len(keys) == 60  # every good row after the stray quote is still read
    assert [line for line, _ in problems(report)][:1] == [3]
    assert "unbalanced quote" in problems(report)[0][1]


@pytest.mark.parametrize("version", [None, 7, "../../etc", ""])
def test_manifest_version_must_be_a_version_name(
    lists: dict[str, Path], tmp_path: Path, version: object
) -> None:
    out = tmp_path / "out"
    m = build_all(lists, out).manifest
    (out / "manifest.json").write_text(json.dumps(dict(m, version=version)))
    with pytest.raises(ArtefactError, match="version"):
        Artefact.load(out)


def test_a_failed_load_releases_its_maps(lists: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    version = build_all(lists, out).version
    first = out / version / "first_seen.u16"
    first.write_bytes(first.read_bytes()[:-2])  # fails after the maps are made
    before = Path("/proc/self/maps").read_text().count(str(out))
    for _ in range(3):
        with pytest.raises(ArtefactError, match="side table length"):
            Artefact.load(out, verify=False)
    assert Path("/proc/self/maps").read_text().count(str(out)) == before


def test_every_bad_row_reaches_problems_tsv_but_few_stay_in_memory(tmp_path: Path) -> None:
    bad = write(
        tmp_path / "wrong.txt", "\ufeff2125550142\n" + "".join(f"row {i}\n" for i in range(1500))
    )
    result = build([parse_source(f"list:{bad}")], tmp_path / "out")
    report = result.reports[0]
    assert report.problem_count == 1500 and len(report.problems) == 1000
    assert result.manifest["counts"]["problems"] == 1500
    assert result.manifest["counts"]["numbers"] == 1  # the BOM did not cost the first row
    tsv = (tmp_path / "out" / result.version / "problems.tsv").read_text().splitlines()
    assert len(tsv) == 1 + 1500 and tsv[-1].endswith("\t1501\tnot a telephone number: 'row 1499'")


def test_conflicting_prefix_rules_are_reported(tmp_path: Path) -> None:
    rules = write(tmp_path / "p.txt", "+1876 label\n+1900 block\n+1876 allow\n")
    result = build([parse_source(f"prefix:{rules}")], tmp_path / "out")
    assert [p.reason for p in result.reports[0].problems] == ["+1876: allow overrides label"]
    assert Artefact.load(tmp_path / "out").prefix_action(18765550100) == ("1876", "allow")
