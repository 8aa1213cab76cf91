"""The structured verdict log: one JSON line per screened call.

Lines are queued on the event loop and written by a background thread, so a
slow disk never blocks SIP handling.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import queue
import sys
import time
from typing import TextIO

from .events import Screened

_logger = logging.getLogger("robocall_shield.verdicts")


class VerdictLog:
    def __init__(self, target: str) -> None:
        self.enabled = bool(target)
        self._listener: logging.handlers.QueueListener | None = None
        if not self.enabled:
            return
        stream: TextIO | None = sys.stdout if target == "-" else None
        handler: logging.Handler = (
            logging.StreamHandler(stream)
            if stream
            else logging.FileHandler(target, encoding="utf-8")
        )
        handler.setFormatter(logging.Formatter("%(message)s"))
        q: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        _logger.handlers = [logging.handlers.QueueHandler(q)]
        _logger.propagate = False
        _logger.setLevel(logging.INFO)
        self._listener = logging.handlers.QueueListener(q, handler)
        self._listener.start()

    def write(self, ev: Screened, now: float | None = None) -> None:
        if not self.enabled:
            return
        call, result = ev.call, ev.screening
        record = {
            "ts": round(time.time() if now is None else now, 6),
            "event": "verdict",
            "call_id": call.call_id,
            "method": call.method,
            "caller": call.caller,
            "callee": call.callee,
            "source": call.source,
            "action": ev.action.value,
            "score": result.verdict.score,
            "reasons": list(result.verdict.reasons),
            "decided_by": result.decided_by,
        }
        if result.observed:
            record["observed"] = {n: v.action.value for n, v in result.observed}
        if result.failed:
            record["failed_checks"] = list(result.failed)
        _logger.info(json.dumps(record, separators=(",", ":")))

    def close(self) -> None:
        if self._listener is not None:
            self._listener.stop()
            self._listener = None


class JsonFormatter(logging.Formatter):
    """Operational log lines as JSON, like the verdict log."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)
