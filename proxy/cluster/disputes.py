"""The redress dispute queue shared between nodes whose stores are their
own (SQLite) ([cluster]): a dispute filed on any node appears in every
node's queue, and its resolution, made on any node, closes it everywhere
(and allows the caller everywhere when it was allowed globally).

A dispute is known across the cluster by its origin, "<node>#<id on that
node>". Other nodes keep a copy filed from the source "cluster:<origin>",
so a restarted node still finds its copies. Two nodes resolving the same
dispute at once each keep their own decision for their copy; the first
resolution a node sees wins there (the log says when one is ignored).
"""

from __future__ import annotations

import logging
from typing import Any

from ..subscribers.model import parse_number
from ..subscribers.service import SubscriberService

log = logging.getLogger("robocall_shield.cluster")

REPLICA = "cluster:"
POLL_LIMIT = 500  # newest disputes looked at per poll


class DisputeSync:
    def __init__(self, service: SubscriberService, node: str) -> None:
        self.service = service
        self.node = node  # the node's name (not a worker's): origins outlive workers
        self.cursor = 0  # the highest local dispute id already looked at
        self.open: dict[int, str] = {}  # local id of an open dispute -> its origin
        self.quiet: set[int] = set()  # local ids closed by another node's resolution

    async def start(self) -> None:
        service = self.service
        items = await service.run(service.disputes.list, None, POLL_LIMIT)
        self.cursor = max((int(str(i["id"])) for i in items), default=0)
        for local in list(service.open):  # every open one, however old
            item = await service.run(service.disputes.get, local)
            if item is not None:
                self._track(item)

    def _track(self, item: dict[str, Any]) -> str:
        local = int(str(item["id"]))
        source = str(item["source"])
        origin = source[len(REPLICA) :] if source.startswith(REPLICA) else f"{self.node}#{local}"
        if item["status"] == "open":
            self.open[local] = origin
        return origin

    async def changes(self) -> list[dict[str, Any]]:
        """What this node's API did since the last look: disputes filed here,
        and resolutions of any open dispute made here."""
        service = self.service
        out: list[dict[str, Any]] = []
        items = await service.run(service.disputes.list, None, POLL_LIMIT)
        for item in sorted(items, key=lambda i: int(str(i["id"]))):
            local = int(str(item["id"]))
            if local <= self.cursor:
                continue
            self.cursor = local
            origin = self._track(item)
            if not str(item["source"]).startswith(REPLICA):
                out.append({"event": "filed", "origin": origin, **_filed_fields(item)})
        for local in [d for d in self.open if d not in service.open]:
            origin = self.open.pop(local)
            if local in self.quiet:
                self.quiet.discard(local)
                continue
            done: dict[str, object] | None = await service.run(service.disputes.get, local)
            if done is not None and done["status"] != "open":
                out.append({"event": "resolved", "origin": origin, **_resolved_fields(done)})
        return out

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
        return done is not None


def _filed_fields(item: dict[str, Any]) -> dict[str, Any]:
    return {
        "number": item["number"],
        "contact": item["contact"],
        "description": item["description"],
        "filed_at": item["filed_at"],
    }


def _resolved_fields(item: dict[str, Any]) -> dict[str, Any]:
    return {"status": item["status"], "scope": item["scope"], "note": item["note"]}
