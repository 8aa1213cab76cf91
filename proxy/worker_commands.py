"""The worker link's command table (what a sibling answers the first
worker) and the admin answers the first worker gives for the whole node
from those answers: ``GET /admin/peers`` (the peer statistics, summed slot
by slot) and ``GET /admin/reputation/<number>`` (the number's counters,
summed bucket by bucket). Admin path only: nothing here runs per INVITE.

A sibling that does not answer within the link's timeout, or answers
something unreadable, is left out; the answer's ``workers`` field says how
many of the node's workers it covers.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from prometheus_client import generate_latest

from .admin import AdminApi, Request, Response, json_response
from .gateway.admin import PeerAdmin
from .gateway.stats import RawStats, decode_raw, encode_raw
from .reputation import pooled
from .sip.numbers import e164_key
from .worker_link import ArgCommand, Command, Gathered, gather_from_siblings

if TYPE_CHECKING:
    from .server import Worker

log = logging.getLogger("robocall_shield.workers")
# the explain argument: an E.164 key as e164_key gives it, with its "+"
_NUMBER = re.compile(r"\+[1-9][0-9]{7,14}")
# (number as typed, the siblings' counters for it) -> (HTTP status, body)
LocalExplain = Callable[[str, Sequence[pooled.NumberTraffic]], tuple[int, dict[str, object]]]


def link_commands(w: Worker) -> tuple[dict[str, Command], dict[str, ArgCommand]]:
    """What a sibling answers: (commands, commands taking an argument)."""

    async def metrics() -> bytes:
        return generate_latest(w.metrics.registry)

    async def reload_lists() -> bytes:
        result = await w.lists.reload("admin request (relayed)")
        answer = {"outcome": result.outcome, "version": result.version, "detail": result.detail}
        return json.dumps(answer).encode()

    async def peer_stats() -> bytes:
        if w.peer_service is None:
            return b""
        return encode_raw(w.peer_service.stats.raw(time.monotonic()))

    async def explain(number: str) -> bytes:
        if _NUMBER.fullmatch(number) is None:
            log.warning("worker link: explain wants +<8 to 15 digits>, got %r", number)
            return b""
        engine = w.reputation
        if engine is None:  # disabled by a reload: no figures to give
            return b""
        return pooled.encode(pooled.number_traffic(engine, int(number[1:])))

    plain: dict[str, Command] = {
        "metrics": metrics,
        "reload-lists": reload_lists,
        "peer-stats": peer_stats,
    }
    return plain, {"explain": explain}


def serve_node_answers(w: Worker, api: AdminApi, explain: LocalExplain) -> None:
    """Routes on the first worker's admin API that answer for every worker:
    the peer routes (when [[peers]] are declared) and the explain query."""
    role = w.role
    if w.peer_service is not None:

        async def peer_stats() -> Gathered[RawStats]:
            return await gather_from_siblings(role, "peer-stats", decode_raw)

        PeerAdmin(w.peer_service, siblings=peer_stats if role is not None else None).register(api)

    async def explain_route(req: Request) -> Response:
        number = req.params["rest"]
        key = e164_key(number)
        ask = role if key is not None and w.reputation is not None else None
        gathered = await gather_from_siblings(ask, f"explain +{key}", pooled.decode)
        status, body = explain(number, gathered.answers)  # 400 or 409 as without siblings
        if status == 200:
            body["workers"] = gathered.workers()
        return json_response(status, body)

    api.add_route("GET", "/admin/reputation/{rest:.+}", explain_route)
