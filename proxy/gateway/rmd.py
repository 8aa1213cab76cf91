"""The FCC Robocall Mitigation Database (RMD) export, read off the hot path.

The export is the portal's CSV: a header row of the table's field names
(``number``, ``frn``, ``implementation``, the three ``*_choice`` columns...),
quoted fields with embedded newlines, FRNs as 10-digit text. Columns are
found by name, so a newer export with more columns (``last_recertified``)
reads the same.

A bad row never stops the import: it is reported with its line number and,
when nothing identifies the filing, skipped. A file that cannot be read at
all raises ``RmdFileError``, and the caller keeps what it had.
"""

from __future__ import annotations

import csv
import io
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..peers import PeerConfig, valid_frn, valid_rmd_number

MAX_FILE_BYTES = 256 << 20  # the real export is a few MB
MAX_PROBLEMS_KEPT = 1000  # all are counted; the first ones are kept to show
REQUIRED = (
    "number",
    "frn",
    "implementation",
    "voice_service_provider_choice",
    "gateway_provider_choice",
    "intermediate_provider_choice",
)
ROLE_COLUMNS = (
    ("voice", "voice_service_provider_choice"),
    ("gateway", "gateway_provider_choice"),
    ("intermediate", "intermediate_provider_choice"),
)
# the certification values seen, whitespace collapsed and lower-cased ->
# whether the filer certifies robocall mitigation. "N/A" certifies none.
IMPLEMENTATIONS = {
    "complete stir/shaken implementation": True,
    "partial stir/shaken implementation - performing robocall mitigation": True,
    "no stir/shaken implementation - performing robocall mitigation": True,
    "n/a": False,
}
# the standings a peer can have, and which [peer_policy] key each one reads
MITIGATING, NOT_MITIGATING, MISSING = "mitigating", "not-mitigating", "missing"
UNIDENTIFIED, NOT_LOADED = "unidentified", "not-loaded"
STANDINGS = (MITIGATING, NOT_MITIGATING, MISSING, UNIDENTIFIED, NOT_LOADED)
_SPACES = re.compile(r"\s+")
_LIST_SEPARATORS = re.compile(r"[,;/\s]+")


class RmdFileError(Exception):
    """The export cannot be used at all (missing, unreadable, not an RMD export)."""


@dataclass(frozen=True, slots=True)
class RowProblem:
    line: int  # where the record starts (a quoted field may span several lines)
    message: str
    skipped: bool  # the row identified no filing and was left out


@dataclass(frozen=True, slots=True)
class Filing:
    line: int
    number: str  # "" when the row's RMD number was unusable
    frn: str  # "" when the row's FRN was unusable
    other_frns: tuple[str, ...]
    business_name: str
    implementation: str  # as written
    mitigating: bool  # the implementation certifies robocall mitigation
    roles: frozenset[str]  # voice, gateway, intermediate: the choices answered Yes
    foreign: bool
    last_updated: str


@dataclass(frozen=True, slots=True)
class RmdData:
    path: str
    loaded_at: float  # Unix time
    filings: int
    problems: tuple[RowProblem, ...]  # the first MAX_PROBLEMS_KEPT
    problem_count: int
    skipped: int
    by_number: dict[str, Filing] = field(repr=False)
    by_frn: dict[str, Filing] = field(repr=False)  # other_frns included


@dataclass(frozen=True, slots=True)
class Standing:
    """What the RMD says about one peer."""

    status: str  # one of STANDINGS
    detail: str
    filing: Filing | None = None


def load_rmd(path: str | Path, now: float | None = None) -> RmdData:
    """Read an export. Raises RmdFileError; bad rows are in ``problems``."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise RmdFileError(f"cannot read the RMD export {path}: {exc.strerror or exc}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise RmdFileError(f"the RMD export {path} is over {MAX_FILE_BYTES >> 20} MB")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise RmdFileError(f"the RMD export {path} is not UTF-8 (line {line})") from None
    return parse_rmd(text, str(path), time.time() if now is None else now)


def parse_rmd(text: str, path: str = "<text>", now: float = 0.0) -> RmdData:
    reader = csv.reader(io.StringIO(text, newline=""))
    header = _header(reader, path)
    index = {name: i for i, name in enumerate(header)}
    build = _Import(index, len(header))
    start = reader.line_num + 1
    while True:  # one record per turn: ends with the input
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            build.problem(start, f"unreadable CSV: {exc}", skipped=True)
            start = reader.line_num + 1
            continue
        if row and any(cell.strip() for cell in row):
            build.row(start, row)
        start = reader.line_num + 1
    return RmdData(
        path=path,
        loaded_at=now,
        filings=len(build.filings),
        problems=tuple(build.problems),
        problem_count=build.problem_count,
        skipped=build.skipped,
        by_number=build.by_number,
        by_frn=build.by_frn,
    )


def _header(reader: Iterator[list[str]], path: str) -> list[str]:
    try:
        first = next(reader)
    except StopIteration:
        raise RmdFileError(f"the RMD export {path} is empty") from None
    except csv.Error as exc:
        raise RmdFileError(f"the RMD export {path} has an unreadable header: {exc}") from None
    header = [name.strip().lower() for name in first]
    missing = [name for name in REQUIRED if name not in header]
    if missing:
        raise RmdFileError(
            f"the RMD export {path} lacks the column(s) {', '.join(missing)}: "
            "expected the portal's CSV export with its field names as the header"
        )
    return header


class _Import:
    """The rows read so far, indexed, and what was wrong with them."""

    def __init__(self, index: dict[str, int], width: int) -> None:
        self.index = index
        self.width = width
        self.filings: list[Filing] = []
        self.by_number: dict[str, Filing] = {}
        self.by_frn: dict[str, Filing] = {}
        self.problems: list[RowProblem] = []
        self.problem_count = 0
        self.skipped = 0

    def problem(self, line: int, message: str, skipped: bool = False) -> None:
        self.problem_count += 1
        self.skipped += skipped
        if len(self.problems) < MAX_PROBLEMS_KEPT:
            self.problems.append(RowProblem(line, message, skipped))

    def cell(self, row: list[str], name: str) -> str:
        i = self.index.get(name)
        return row[i].strip() if i is not None else ""

    def row(self, line: int, row: list[str]) -> None:
        if len(row) != self.width:
            self.problem(line, f"expected {self.width} fields, found {len(row)}", skipped=True)
            return
        number = self.cell(row, "number").upper()
        frn = self._frn(line, self.cell(row, "frn"), "frn")
        if number and not valid_rmd_number(number):
            self.problem(line, f"RMD number {number[:40]!r} is not RMD and 7 digits")
            number = ""
        if not (number or frn):
            self.problem(line, "neither a usable RMD number nor a usable FRN", skipped=True)
            return
        listed = self.cell(row, "other_frns")
        if listed.upper() in ("N/A", "NONE"):  # free-text fields say "nothing" so
            listed = ""
        others = tuple(
            f
            for text in _LIST_SEPARATORS.split(listed)
            if (f := self._frn(line, text, "other_frns"))
        )
        implementation = self.cell(row, "implementation")
        mitigating = IMPLEMENTATIONS.get(_SPACES.sub(" ", implementation).lower())
        if mitigating is None:
            self.problem(
                line,
                f"implementation {implementation[:80]!r} is not a known certification: "
                "read as no robocall mitigation",
            )
        roles = frozenset(role for role, column in ROLE_COLUMNS if self._yes(line, row, column))
        filing = Filing(
            line=line,
            number=number,
            frn=frn,
            other_frns=others,
            business_name=self.cell(row, "business_name"),
            implementation=implementation,
            mitigating=bool(mitigating),
            roles=roles,
            foreign=self.cell(row, "foreign_voice_provider").lower() == "yes",
            last_updated=self.cell(row, "last_updated"),
        )
        self.filings.append(filing)
        if number:
            earlier = self.by_number.get(number)
            if earlier is not None:
                self.problem(line, f"{number} repeats line {earlier.line}: this later row is used")
            self.by_number[number] = filing
        for key in (frn, *others):
            held = self.by_frn.get(key) if key else None
            # one FRN, several filings: the most recently updated one speaks for it
            if key and (held is None or filing.last_updated >= held.last_updated):
                self.by_frn[key] = filing

    def _frn(self, line: int, text: str, column: str) -> str:
        text = text.lstrip("'").strip()  # a leading apostrophe: a spreadsheet's text marker
        if not text:
            return ""
        if valid_frn(text):
            return text
        if text.isascii() and text.isdigit() and len(text) < 10:
            padded = text.zfill(10)
            self.problem(line, f"{column} {text!r} lost its leading zeros: read as {padded}")
            return padded
        self.problem(line, f"{column} {text[:40]!r} is not a 10-digit FRN")
        return ""

    def _yes(self, line: int, row: list[str], column: str) -> bool:
        value = self.cell(row, column).lower()
        if value not in ("yes", "no", ""):
            self.problem(line, f"{column} {value[:20]!r} is neither Yes nor No: read as No")
        return value == "yes"


def standing(peer: PeerConfig, data: RmdData | None) -> Standing:
    """Listed and mitigating, listed but not mitigating, or missing."""
    if data is None:
        return Standing(NOT_LOADED, "no RMD export loaded")
    if not (peer.frn or peer.rmd):
        return Standing(UNIDENTIFIED, "the peer has no frn or rmd in [[peers]]")
    by_number = data.by_number.get(peer.rmd) if peer.rmd else None
    if (
        by_number is not None
        and peer.frn
        and peer.frn not in (by_number.frn, *by_number.other_frns)
    ):
        return Standing(
            MISSING,
            f"{peer.rmd} is filed under FRN {by_number.frn or '(none)'}, not {peer.frn}",
            by_number,
        )
    filing = by_number or (data.by_frn.get(peer.frn) if peer.frn else None)
    if filing is None:
        asked = " / ".join(x for x in (f"FRN {peer.frn}" if peer.frn else "", peer.rmd) if x)
        return Standing(MISSING, f"{asked} is not in the RMD export ({data.filings} filings)")
    name = filing.number or f"FRN {filing.frn}"
    if not filing.mitigating:
        return Standing(
            NOT_MITIGATING,
            f"{name} certifies {filing.implementation or 'nothing'!r}: no robocall mitigation",
            filing,
        )
    if peer.rmd_role == "any" and not filing.roles:
        return Standing(NOT_MITIGATING, f"{name} certifies as no kind of provider", filing)
    if peer.rmd_role != "any" and peer.rmd_role not in filing.roles:
        return Standing(
            NOT_MITIGATING, f"{name} is not certified as a {peer.rmd_role} provider", filing
        )
    return Standing(MITIGATING, f"{name}: {filing.implementation}", filing)
