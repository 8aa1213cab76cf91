"""Readers for every list source. Each yields what it could read and records
every row it could not, with file and line: a bad row never aborts a build
and never disappears silently."""

from __future__ import annotations

import csv
import datetime
import enum
import io
from array import array
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from proxy.sip.numbers import e164_key

FTC_COLUMNS = (
    "Company_Phone_Number",
    "Created_Date",
    "Violation_Date",
    "Consumer_City",
    "Consumer_State",
    "Consumer_Area_Code",
    "Subject",
    "Recorded_Message_Or_Robocall",
)
EPOCH = datetime.date(1970, 1, 1).toordinal()
MAX_DAY = 0xFFFF  # 2149-06-06 and later do not fit; 0xFFFF itself means "no day"
_NANP_10 = 10_000_000_000
CHUNK_BYTES = 1 << 24


class Kind(enum.Enum):
    FTC = "ftc"  # FTC Do Not Call reported-calls CSV
    LIST = "list"  # a plain list of numbers to block
    BLOCK = "block"  # the operator's own block list
    ALLOW = "allow"  # the operator's allow list: never blocked by a list
    DNO = "dno"  # Do-Not-Originate: a call claiming one is spoofed
    PREFIX = "prefix"  # prefix and range rules
    # National Do Not Call Registry numbers: callees, for [telemarketing]
    # dnc_dir only; a DNC artefact holds nothing else. A full-list download
    # line may also read "AAA,NNNNNNN" (area code, comma, number).
    DNC = "dnc"


# Bits of the per-number flags byte in the artefact.
class Flag(enum.IntFlag):
    FTC = 1
    ROBOCALL = 2  # an FTC complaint said it was a recording or robocall
    LIST = 4
    BLOCK = 8
    DNO = 16
    NATIONAL_DNC = 32  # callee side: no caller check acts on it


KIND_FLAG = {
    Kind.FTC: Flag.FTC,
    Kind.LIST: Flag.LIST,
    Kind.BLOCK: Flag.BLOCK,
    Kind.DNO: Flag.DNO,
    Kind.DNC: Flag.NATIONAL_DNC,
}
PREFIX_ACTIONS = ("block", "label", "allow")
KEEP_PROBLEMS = 1000


@dataclass(frozen=True, slots=True)
class Source:
    kind: Kind
    path: Path


@dataclass(frozen=True, slots=True)
class Problem:
    path: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


@dataclass(slots=True)
class Report:
    """What reading one source produced, besides the numbers."""

    source: Source
    rows: int = 0
    entries: int = 0
    skipped: int = 0  # rows that are valid but carry no number (FTC allows that)
    problems: list[Problem] = field(default_factory=list)  # the first KEEP_PROBLEMS
    problem_count: int = 0
    sink: TextIO | None = None  # every problem, as TSV (the build's problems.tsv)

    def problem(self, line: int, reason: str) -> None:
        """Count and record one bad row. Only the first few stay in memory: a
        wrong file given as a list can have tens of millions of bad rows."""
        self.problem_count += 1
        found = Problem(str(self.source.path), line, reason)
        if len(self.problems) < KEEP_PROBLEMS:
            self.problems.append(found)
        if self.sink is not None:
            self.sink.write(f"{found.path}\t{found.line}\t{found.reason}\n")


def parse_source(spec: str) -> Source:
    """``KIND:PATH``; a bare path is a plain number list."""
    kind_text, sep, path = spec.partition(":")
    if not sep:
        return Source(Kind.LIST, Path(spec))
    try:
        kind = Kind(kind_text)
    except ValueError:
        kinds = ", ".join(k.value for k in Kind)
        raise ValueError(f"{spec!r}: unknown source kind {kind_text!r} (one of {kinds})") from None
    if not path:
        raise ValueError(f"{spec!r}: no path after {kind_text}:")
    return Source(kind, Path(path))


def number_key(text: str) -> int | None:
    """Fast path for the common plain forms, then the general normaliser."""
    if text.isdigit() and text.isascii():
        if len(text) == 10:
            return _NANP_10 + int(text)
        if len(text) == 11 and text[0] == "1":
            return int(text)
    return e164_key(text)


def read_numbers(report: Report) -> Iterator[array[int]]:
    """One number per line in any NANP or E.164 form; ``#`` starts a comment.

    Yields arrays of keys, one per chunk of the file: lists run to tens of
    millions of lines, so plain 10-digit lines take a fast path and only the
    other lines go through the general normaliser, with their line numbers.
    """
    lineno = 0
    tail = b""
    with report.source.path.open("rb") as fh:
        while True:
            chunk = fh.read(CHUNK_BYTES)
            if not chunk:
                break
            if lineno == 0 and not tail:
                chunk = chunk.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 BOM
            chunk = tail + chunk
            cut = chunk.rfind(b"\n")
            if cut < 0:
                tail = chunk
                continue
            tail = chunk[cut + 1 :]
            lines = chunk[:cut].replace(b"\r\n", b"\n").split(b"\n")
            yield _chunk_keys(report, lines, lineno)
            lineno += len(lines)
    if tail:
        yield _chunk_keys(report, [tail.rstrip(b"\r")], lineno)


def _chunk_keys(report: Report, lines: list[bytes], first: int) -> array[int]:
    report.rows += len(lines)
    keys = array("Q", [_NANP_10 + int(b) for b in lines if len(b) == 10 and b.isdigit()])
    if len(keys) < len(lines):
        for i, raw in enumerate(lines):
            if len(raw) == 10 and raw.isdigit():
                continue
            text = raw.decode("utf-8", "replace").split("#", 1)[0].strip()
            if not text:
                continue
            if report.source.kind is Kind.DNC and "," in text:
                text = text.replace(",", "", 1)  # the registry's "AAA,NNNNNNN"
            key = number_key(text)
            if key is None:
                report.problem(first + i + 1, f"not a telephone number: {text[:40]!r}")
                continue
            keys.append(key)
    report.entries += len(keys)
    return keys


@dataclass(frozen=True, slots=True)
class Complaint:
    key: int
    day: int  # days since 1970-01-01 of the call (Violation_Date)
    robocall: bool


def read_ftc(report: Report) -> Iterator[Complaint]:
    days: dict[str, int] = {}
    with _open_text(report.source.path) as fh:
        header_text = fh.readline()
        if not header_text:
            report.problem(1, "empty file: no FTC header")
            return
        header = [h.strip().lstrip("\ufeff") for h in _csv_row(header_text) or []]
        if tuple(header) != FTC_COLUMNS:
            report.problem(1, f"not an FTC Do Not Call CSV header: {header_text.strip()[:120]!r}")
            return
        for lineno, row in _records(enumerate(fh, 2)):
            report.rows += 1
            if row is None:
                report.problem(lineno, "unbalanced quote; the next lines are read on their own")
                continue
            if len(row) != len(FTC_COLUMNS):
                report.problem(lineno, f"expected {len(FTC_COLUMNS)} fields, got {len(row)}")
                continue
            number = row[0].strip()
            if not number:
                report.skipped += 1
                continue
            key = number_key(number)
            if key is None:
                report.problem(lineno, f"Company_Phone_Number is not a number: {number[:40]!r}")
                continue
            stamp = row[2].strip()[:10]
            day = days.get(stamp)
            if day is None:
                try:
                    day = datetime.date.fromisoformat(stamp).toordinal() - EPOCH
                except ValueError:
                    day = -1
                if not 0 < day < MAX_DAY:  # the side table stores days in uint16
                    report.problem(lineno, f"bad or out-of-range Violation_Date {row[2][:30]!r}")
                    continue
                days[stamp] = day
            flag = row[7].strip().upper()
            if flag not in ("Y", "N", ""):
                report.problem(lineno, f"bad Recorded_Message_Or_Robocall {row[7][:10]!r}")
                continue
            report.entries += 1
            yield Complaint(key, day, flag == "Y")


MAX_RECORD_LINES = 4  # a quoted field may span lines; a stray quote must not eat the file


def _records(lines: Iterator[tuple[int, str]]) -> Iterator[tuple[int, list[str] | None]]:
    """CSV records with the line each starts on. A record whose quotes do not
    balance within MAX_RECORD_LINES is reported (None) and the lines it
    swallowed are read again as records of their own."""
    again: deque[tuple[int, str]] = deque()
    while True:
        first = again.popleft() if again else next(lines, None)
        if first is None:
            return
        parts = [first]
        text = first[1]
        while text.count('"') % 2 and len(parts) < MAX_RECORD_LINES:
            more = again.popleft() if again else next(lines, None)
            if more is None:
                break
            parts.append(more)
            text += more[1]
        if text.count('"') % 2:
            again.extendleft(reversed(parts[1:]))
            yield first[0], None
            continue
        if text.strip():
            yield first[0], _csv_row(text)


def _csv_row(text: str) -> list[str] | None:
    try:
        return next(csv.reader([text]), [])
    except csv.Error:
        return None


@dataclass(frozen=True, slots=True)
class PrefixRule:
    prefix: str  # E.164 digits without '+'
    action: str  # block, label or allow


def read_prefixes(report: Report) -> Iterator[PrefixRule]:
    """``+1900 block``, ``+1212555 label``, ``+12125550 allow``; the action
    defaults to block. Longest prefix wins; allow rules are exceptions."""
    with _open_text(report.source.path) as fh:
        for lineno, line in enumerate(fh, 1):
            report.rows += 1
            parts = line.split("#", 1)[0].split()
            if not parts:
                continue
            prefix, action = parts[0], (parts[1].lower() if len(parts) > 1 else "block")
            digits = prefix[1:] if prefix.startswith("+") else ""
            if not (digits.isascii() and digits.isdigit() and 1 <= len(digits) <= 15):
                report.problem(lineno, f"prefix must be '+' and 1 to 15 digits: {prefix[:30]!r}")
                continue
            if action not in PREFIX_ACTIONS or len(parts) > 2:
                report.problem(
                    lineno, f"expected '<+prefix> [block|label|allow]': {line.strip()[:60]!r}"
                )
                continue
            report.entries += 1
            yield PrefixRule(digits, action)


def _open_text(path: Path) -> io.TextIOWrapper:
    # Undecodable bytes become U+FFFD so the row is reported, not the file lost.
    return open(path, encoding="utf-8", errors="replace", newline="")
