"""Where a node that was away resumes: small files beside the subscriber
stream's cursor file (``cursor_file``), each written whole through a
temporary file, so a crash leaves the old one or the new one.

- ``cluster-subscribers.cursor``, ``cluster-disputes.cursor``: the last
  stream entry read, so a restarted node misses no change;
- ``cluster-audit.cursor``: the last local audit row published, so a
  change made while Redis was away is published after a restart too;
- ``cluster-dispute-state.json``: what the dispute sync has published
  (disputes.py).
"""

from __future__ import annotations

import logging
from pathlib import Path

from .keys import Keys

log = logging.getLogger("robocall_shield.cluster")


def beside(cursor_file: Path, kind: str) -> Path:
    """The ``kind`` file beside the subscriber stream's cursor file."""
    name = cursor_file.name
    if "subscribers" in name:
        return cursor_file.with_name(name.replace("subscribers", kind))
    return cursor_file.with_name(f"{cursor_file.stem}-{kind}{cursor_file.suffix}")


def write_atomic(path: Path, text: str) -> None:
    """OSError when it cannot be written; the old file is then intact."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def read(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text().strip()
    except OSError:
        return None


def stream_id(text: str) -> bool:
    ms, _, seq = text.partition("-")
    return ms.isdigit() and seq.isdigit()


class CursorFiles:
    def __init__(self, cursor_file: Path | None, keys: Keys) -> None:
        self.streams: dict[str, Path] = {}  # stream key -> its cursor file
        self.audit: Path | None = None
        self.dispute_state: Path | None = None
        if cursor_file is not None:
            self.streams[keys.subscribers] = cursor_file
            self.streams[keys.disputes] = beside(cursor_file, "disputes")
            self.audit = beside(cursor_file, "audit")
            self.dispute_state = beside(cursor_file, "dispute-state").with_suffix(".json")

    def load_stream(self, key: str) -> str | None:
        text = read(self.streams.get(key))
        return text if text is not None and stream_id(text) else None

    def save_stream(self, key: str, last: str) -> None:
        path = self.streams.get(key)
        if path is None or not stream_id(last):
            return
        try:
            write_atomic(path, last)
        except OSError as exc:
            log.warning("cluster: cannot save the cursor of %s: %s", key, exc)

    def load_audit(self) -> int | None:
        text = read(self.audit)
        return int(text) if text is not None and text.isdigit() else None

    def save_audit(self, last: int) -> None:
        if self.audit is None:
            return
        try:
            write_atomic(self.audit, str(last))
        except OSError as exc:
            log.warning("cluster: cannot save the audit cursor: %s", exc)
