"""The redress dispute queue shared between nodes whose stores are their
own (SQLite) ([cluster]): a dispute filed on any node appears in every
node's queue, and its resolution, made on any node, closes it everywhere
(and allows the caller everywhere when it was allowed globally).

A dispute is known across the cluster by its origin, "<node>#<id on that
node>". Other nodes keep a copy filed from the source "cluster:<origin>",
so a restarted node still finds its copies. Two nodes resolving the same
dispute at once each keep their own decision for their copy; the first
resolution a node sees wins there (the log says when one is ignored).

What has been published (the cursor and the open disputes) is saved in a
state file whenever everything found so far is in Redis, so a dispute
filed or resolved while Redis was away is published after a restart too.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from ..subscribers.model import parse_number
from ..subscribers.service import SubscriberService
from .cursors import read, write_atomic

log = logging.getLogger("robocall_shield.cluster")

REPLICA = "cluster:"
POLL_LIMIT = 500  # disputes read per poll
STATE_FORMAT = 1


class DisputeSync:
    def __init__(self, service: SubscriberService, node: str, state_file: Path | None) -> None:
        self.service = service
        self.node = node  # the node's name (not a worker's): origins outlive workers
        self.state_file = state_file
        self.cursor = 0  # the highest local dispute id already looked at
        self.open: dict[int, str] = {}  # local id of an open dispute -> its origin
        self.quiet: set[int] = set()  # local ids closed by another node's resolution
        self.ready: list[dict[str, Any]] = []  # events found, not yet in Redis
        # the state as of the last moment everything found was in Redis
        self.saved_cursor = 0
        self.saved_open: dict[int, str] = {}
        self.written = ""  # the state file's text, as last written

    async def start(self) -> None:
        service = self.service
        saved = self._load()
        if saved is None:  # from now on: what is in the store now counts as published
            items = await service.run(service.disputes.list, None, POLL_LIMIT)
            self.cursor = max((int(str(i["id"])) for i in items), default=0)
        else:  # changes() publishes what was filed or resolved since
            self.cursor, self.open = saved
        for local in list(service.open):  # every open one, however old
            item = await service.run(service.disputes.get, local)
            if item is not None:
                self._track(item)
        self.saved_cursor, self.saved_open = self.cursor, dict(self.open)

    def _load(self) -> tuple[int, dict[int, str]] | None:
        if self.state_file is None:
            return None
        text = read(self.state_file)
        if text is None:
            log.warning(
                "cluster: no saved dispute state at %s (a first start?): disputes filed or "
                "resolved before now are not published", self.state_file,
            )  # fmt: skip
            return None
        try:
            doc = json.loads(text)
            if not isinstance(doc, dict) or doc.get("v") != STATE_FORMAT:
                raise ValueError(f"not a format-{STATE_FORMAT} dispute state")
            cursor, raw = doc.get("cursor"), doc.get("open")
            if type(cursor) is not int or cursor < 0 or not isinstance(raw, dict):
                raise ValueError("no cursor or open disputes")
            opened = {int(k): v for k, v in raw.items() if isinstance(v, str) and "#" in v}
            if len(opened) != len(raw):
                raise ValueError("an open dispute without its origin")
        except ValueError as exc:  # JSONDecodeError and int() of a bad key too
            log.warning(
                "cluster: unreadable dispute state %s (%s): disputes filed or resolved "
                "before now are not published", self.state_file, exc,
            )  # fmt: skip
            return None
        return cursor, opened

    def save(self) -> None:
        """Called when everything changes() found is in Redis (``ready``
        empty): that is now the published state."""
        if self.ready:
            return
        self.saved_cursor = self.cursor
        self.saved_open = {k: v for k, v in self.open.items() if k not in self.quiet}
        self._write()

    def _write(self) -> None:
        if self.state_file is None:
            return
        opened = {str(k): v for k, v in sorted(self.saved_open.items())}
        text = json.dumps({"v": STATE_FORMAT, "cursor": self.saved_cursor, "open": opened})
        if text == self.written:
            return
        try:
            write_atomic(self.state_file, text)
        except OSError as exc:
            log.warning("cluster: cannot save the dispute state: %s", exc)
            return
        self.written = text

    def _track(self, item: dict[str, Any]) -> str:
        local = int(str(item["id"]))
        source = str(item["source"])
        origin = source[len(REPLICA) :] if source.startswith(REPLICA) else f"{self.node}#{local}"
        if item["status"] == "open":
            self.open[local] = origin
        return origin

    async def changes(self) -> None:
        """Queue in ``ready`` what this node's API did since the last look:
        disputes filed here, and resolutions of any open dispute made here.
        A store that fails half way loses nothing: what was found is queued,
        the rest is found next time."""
        service = self.service
        # oldest first from the cursor: more than POLL_LIMIT filed while
        # Redis was away are read over several polls, none skipped
        for item in await service.run(service.disputes.after, self.cursor, POLL_LIMIT):
            local = int(str(item["id"]))
            origin = self._track(item)
            if not str(item["source"]).startswith(REPLICA):
                self.ready.append({"event": "filed", "origin": origin, **_filed_fields(item)})
            self.cursor = local
        for local in [d for d in self.open if d not in service.open]:
            origin = self.open[local]
            if local in self.quiet:
                self.quiet.discard(local)
                del self.open[local]
                continue
            done: dict[str, object] | None = await service.run(service.disputes.get, local)
            self.open.pop(local, None)
            if done is not None and done["status"] != "open":
                self.ready.append({"event": "resolved", "origin": origin, **_resolved_fields(done)})

    async def apply(self, doc: dict[str, Any], sender_node: str) -> bool:
        """Another node's event; True when it changed this node's queue."""
        origin = doc.get("origin")
        if not isinstance(origin, str) or "#" not in origin or len(origin) > 128:
            raise ValueError("dispute event without an origin")
        if doc.get("event") == "filed":
            return await self._filed(origin, doc)
        if doc.get("event") == "resolved":
            return await self._resolved(origin, doc, sender_node)
        raise ValueError(f"unknown dispute event {str(doc.get('event'))[:20]!r}")

    async def _local_id(self, origin: str) -> int | None:
        node, _, local = origin.rpartition("#")
        if node == self.node and local.isdigit():
            return int(local)
        service = self.service
        found: int | None = await service.run(service.disputes.by_source, REPLICA + origin)
        return found

    async def _filed(self, origin: str, doc: dict[str, Any]) -> bool:
        if await self._local_id(origin) is not None:
            return False  # already here (a repeat after a restart)
        number = parse_number(doc.get("number"))
        contact, description = doc.get("contact"), doc.get("description")
        filed_at = doc.get("filed_at")
        if not isinstance(contact, str) or not isinstance(description, str):
            raise ValueError("a filed dispute without contact or description")
        if not isinstance(filed_at, int | float):
            raise ValueError("a filed dispute without its filing time")
        local = await self.service.file_dispute(
            number, contact[:500], description[:4000], REPLICA + origin, float(filed_at)
        )
        self.open[local] = origin  # changes() skips it as a copy (its source)
        self.saved_open[local] = origin  # its resolution here is to be published
        self._write()
        return True

    async def _resolved(self, origin: str, doc: dict[str, Any], sender_node: str) -> bool:
        local = await self._local_id(origin)
        if local is None or local not in self.service.open:
            return False  # never filed here, or already closed here
        status, scope, note = doc.get("status"), doc.get("scope"), doc.get("note") or ""
        subscriber: int | None = None
        if status == "rejected":
            decision = "reject"
        elif status == "allowed" and scope == "global":
            decision = "allow"
        elif status == "allowed" and isinstance(scope, str):
            decision, subscriber = "allow", parse_number(scope, "scope")
        else:
            raise ValueError(f"a resolution with status {str(status)[:20]!r}")
        self.quiet.add(local)
        actor = f"cluster:{sender_node}"[:64]
        done = await self.service.resolve_dispute(local, decision, subscriber, str(note), actor)
        if done is None:
            self.quiet.discard(local)
            log.warning("cluster: dispute %s was resolved here first; kept", origin)
            return False
        self.saved_open.pop(local, None)  # closed by another node: nothing to publish
        self._write()
        return True


def _filed_fields(item: dict[str, Any]) -> dict[str, Any]:
    return {
        "number": item["number"],
        "contact": item["contact"],
        "description": item["description"],
        "filed_at": item["filed_at"],
    }


def _resolved_fields(item: dict[str, Any]) -> dict[str, Any]:
    return {"status": item["status"], "scope": item["scope"], "note": item["note"]}
