"""A loaded artefact: Bloom filter in memory, exact store memory-mapped.

The exact store and its side table are ``mmap``-ed read-only, so every
worker on the machine shares the same pages. A Bloom miss answers "not
listed" at once; a hit is confirmed by binary search in the exact store, so a
Bloom false positive never blocks a call.
"""

from __future__ import annotations

import json
import mmap
import re
import time
from bisect import bisect_left, bisect_right
from pathlib import Path
from typing import Any, Literal, NamedTuple

from rbloom import Bloom

from .build import ARTEFACT_FILES, BLOOM_HASH, FORMAT, NO_DAY, sha256_file
from .sources import Flag

_EXPECTED = frozenset(ARTEFACT_FILES)


_SAFE_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_FTC = int(Flag.FTC)  # a plain int: IntFlag arithmetic is slow on the hot path
INDEX_STRIDE = 256  # keys per block of the sampled index (50M keys: 195k samples)


class ArtefactError(Exception):
    """The artefact cannot be trusted; the running one stays in place."""


class Entry(NamedTuple):
    """A confirmed hit. A NamedTuple, not a frozen dataclass: it is built on
    the hot path and a tuple costs a third as much to create."""

    flags: int  # sources.Flag bits
    complaints: int
    first_seen: int | None  # days since 1970-01-01, FTC entries only
    last_seen: int | None


class Artefact:
    def __init__(self, directory: Path, manifest: dict[str, Any], verify: bool = True) -> None:
        self.directory = directory
        self.manifest = manifest
        version = manifest["version"]
        if not isinstance(version, str) or _SAFE_VERSION.fullmatch(version) is None:
            raise ArtefactError(f"manifest version {version!r} is not a version name")
        self.version = version
        self.built_at = float(manifest.get("built_at_epoch", 0.0))
        counts = manifest.get("counts", {})
        if not isinstance(counts, dict) or not all(
            isinstance(k, str) and type(v) is int for k, v in counts.items()
        ):
            raise ArtefactError("manifest counts must map names to integers")
        self.counts: dict[str, int] = counts
        self.loaded_at = time.time()
        self.bloom_false_positives = 0
        files: dict[str, Path] = {}
        listed = manifest["files"]
        if not isinstance(listed, dict):
            raise ArtefactError("manifest 'files' is not an object")
        for name, info in listed.items():
            path = directory / info["path"]
            if not path.is_file():
                raise ArtefactError(f"{path}: missing")
            if verify and sha256_file(path) != info["sha256"]:
                raise ArtefactError(f"{path}: sha256 does not match the manifest")
            files[name] = path
        missing = _EXPECTED - files.keys()
        if missing:
            raise ArtefactError(f"manifest lacks {', '.join(sorted(missing))}")
        self._maps: list[mmap.mmap] = []
        self._views: list[memoryview[int]] = []
        try:
            self._open(files)
        except BaseException:
            self.close()  # never leave a failed load's maps pinned
            raise

    def _open(self, files: dict[str, Path]) -> None:
        self.keys = self._view(files["keys.u64"], "Q")
        self.flags = self._view(files["flags.u8"], "B")
        self.complaints = self._view(files["complaints.u32"], "I")
        self.first_seen = self._view(files["first_seen.u16"], "H")
        self.last_seen = self._view(files["last_seen.u16"], "H")
        self.allow = self._view(files["allow.u64"], "Q")
        n = len(self.keys)
        sides = (self.flags, self.complaints, self.first_seen, self.last_seen)
        if any(len(side) != n for side in sides):
            raise ArtefactError("side table length differs from the exact store")
        try:
            self.bloom = Bloom.load(str(files["bloom.bin"]), BLOOM_HASH)
        except Exception as exc:  # rbloom raises ValueError/OSError on a bad file
            raise ArtefactError(f"bloom.bin: {exc}") from None
        self.index = self.keys[::INDEX_STRIDE].tolist()
        rules = json.loads(files["prefixes.json"].read_text(encoding="utf-8"))
        self.prefixes: dict[str, str] = {str(p): str(a) for p, a in rules}
        self.prefix_lengths = sorted({len(p) for p in self.prefixes}, reverse=True)

    @classmethod
    def load(cls, directory: Path, verify: bool = True) -> Artefact:
        try:
            manifest = json.loads((directory / "manifest.json").read_text(encoding="utf-8"))
        except OSError as exc:
            raise ArtefactError(f"{directory}/manifest.json: {exc.strerror}") from None
        except ValueError as exc:
            raise ArtefactError(f"{directory}/manifest.json: not JSON ({exc})") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise ArtefactError(
                f"{directory}/manifest.json: not an artefact manifest of format {FORMAT}"
            )
        try:
            return cls(directory, manifest, verify)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ArtefactError(f"{directory}: malformed manifest or file ({exc})") from None

    def _view(self, path: Path, fmt: Literal["Q", "B", "I", "H"]) -> memoryview[int]:
        size = path.stat().st_size
        if size == 0:
            return memoryview(b"").cast(fmt)
        with path.open("rb") as fh:
            mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        self._maps.append(mapped)
        try:
            view = memoryview(mapped).cast(fmt)
        except TypeError:
            raise ArtefactError(f"{path}: size {size} is not a whole number of items") from None
        self._views.append(view)
        return view

    # -- the hot path --------------------------------------------------

    def lookup(self, key: int) -> Entry | None:
        if key not in self.bloom:
            return None
        i = self._find(key)
        if i < 0:
            self.bloom_false_positives += 1
            return None
        flags = self.flags[i]
        if not flags & _FTC:  # only FTC entries carry complaints and days:
            return Entry(flags, 0, None, None)  # skip three cold page reads
        first, last = self.first_seen[i], self.last_seen[i]
        return Entry(flags, self.complaints[i], None if first == NO_DAY else first, last or None)

    def _find(self, key: int) -> int:
        """Index of ``key`` in the exact store, or -1. A sampled index in a
        Python list narrows the search to one block first: list probes are
        far cheaper than probes that build ints from the mmap."""
        block = bisect_right(self.index, key) - 1
        if block < 0:
            return -1
        lo = block * INDEX_STRIDE
        keys = self.keys
        i = bisect_left(keys, key, lo, min(lo + INDEX_STRIDE, len(keys)))
        return i if i < len(keys) and keys[i] == key else -1

    def allowed(self, key: int) -> bool:  # the allow list is small: plain bisect
        allow = self.allow
        i = bisect_left(allow, key)
        return i < len(allow) and allow[i] == key

    def prefix_action(self, key: int) -> tuple[str, str] | None:
        """(prefix, action) of the longest rule matching the E.164 key."""
        if not self.prefixes:
            return None
        digits = str(key)
        for n in self.prefix_lengths:
            action = self.prefixes.get(digits[:n])
            if action is not None and n <= len(digits):
                return digits[:n], action
        return None

    def close(self) -> None:
        """Release the maps; only once no check can still be using them."""
        for view in self._views:
            view.release()
        self._views.clear()
        for mapped in self._maps:
            mapped.close()
        self._maps.clear()
