"""Admin API for peers (bearer token, like every /admin route):

* ``GET /admin/peers``: every declared peer (and "unknown"), with its RMD
  standing, configured, overridden, policy-derived and effective action, and
  its rolling statistics; the RMD import's state and row problems.
* ``GET /admin/peers/<name>``: one of them.
* ``POST /admin/peers/<name>/action``: ``{"action": "observe" | "label" |
  "throttle" | "block" | "clear", "throttle_cps": N (throttle only),
  "reason": "...", "operator": "..." (optional)}``; audited, persisted.
* ``GET /admin/peers/<name>/audit?limit=N``: its audit rows, newest first.

With several workers the statistics are the node's: the first worker sums
its siblings' slots into its own (stats.PeerStats.combined), and
``workers`` says how many answered in time.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ..admin import AdminApi, Request, Response, error, json_response
from ..peers import MAX_CPS, PEER_ACTIONS, UNKNOWN
from ..worker_link import Gathered
from .actions import PeerView, Setting
from .rmd import RmdData
from .service import PeerService
from .stats import PeerStats, RawStats

Siblings = Callable[[], Awaitable[Gathered[RawStats]]]

log = logging.getLogger("robocall_shield.peers")
FIELDS = ("action", "throttle_cps", "reason", "operator")
MAX_REASON = 500
MAX_OPERATOR = 64
MAX_AUDIT_ROWS = 1000
SHOWN_PROBLEMS = 100


class PeerAdmin:
    def __init__(
        self,
        service: PeerService,
        clock: Callable[[], float] = time.monotonic,
        siblings: Siblings | None = None,
    ) -> None:
        self.service = service
        self.clock = clock  # the statistics' clock
        self.siblings = siblings  # the other workers' raw statistics, when there are any

    def register(self, api: AdminApi) -> None:
        api.add_route("GET", "/admin/peers", self._list)
        api.add_route("GET", "/admin/peers/{name}", self._one)
        api.add_route("POST", "/admin/peers/{name}/action", self._action, max_body=4096)
        api.add_route("GET", "/admin/peers/{name}/audit", self._audit)

    # -- reads ---------------------------------------------------------------

    async def node_stats(self) -> tuple[PeerStats, float, dict[str, int]]:
        """The statistics of every worker that answered, the time to read
        them at (taken after the siblings answered), and who answered."""
        gathered = await self.siblings() if self.siblings is not None else Gathered((), 1)
        now = self.clock()
        stats = self.service.stats
        if gathered.answers:
            stats = stats.combined(list(gathered.answers), now)
        return stats, now, gathered.workers()

    def peer(self, name: str, stats: PeerStats, now: float) -> dict[str, object]:
        actions = self.service.actions
        body: dict[str, object] = {"name": name}
        view = actions.view(name)
        if view is not None:
            body.update(_view(view))
        else:
            body["declared"] = False
        body["throttled_calls"] = actions.throttled.get(name, 0)
        body["stats"] = stats.summary(name, now)
        return body

    async def _list(self, _: Request) -> Response:
        stats, now, workers = await self.node_stats()
        names = self.service.actions.directory.names
        return json_response(
            200,
            {
                "mode": self.service.policy.mode,
                "rmd": self.rmd(),
                "workers": workers,
                "peers": [self.peer(name, stats, now) for name in names],
            },
        )

    async def _one(self, req: Request) -> Response:
        name = req.params["name"]
        if not self.service.actions.known(name):
            return error(404, f"no peer {name!r}: see GET /admin/peers")
        stats, now, workers = await self.node_stats()
        body = {"mode": self.service.policy.mode, "workers": workers, **self.peer(name, stats, now)}
        return json_response(200, body)

    def rmd(self) -> dict[str, object]:
        actions = self.service.actions
        data: RmdData | None = actions.rmd
        out: dict[str, object] = {
            "file": actions.policy.rmd_file or None,
            "error": actions.rmd_error,
            "loaded": data is not None,
        }
        if data is not None:
            out.update(
                path=data.path,
                loaded_at=data.loaded_at,
                filings=data.filings,
                problem_count=data.problem_count,
                skipped=data.skipped,
                problems=[
                    {"line": p.line, "message": p.message, "skipped": p.skipped}
                    for p in data.problems[:SHOWN_PROBLEMS]
                ],
            )
        return out

    async def _audit(self, req: Request) -> Response:
        name = req.params["name"]
        if name not in self.service.actions.peers:
            return error(404, f"no declared peer {name!r}")
        text = req.query.get("limit", "100")
        if not (text.isascii() and text.isdigit() and 1 <= int(text) <= MAX_AUDIT_ROWS):
            return error(400, f"limit: expected an integer from 1 to {MAX_AUDIT_ROWS}", "limit")
        try:
            rows = await asyncio.to_thread(self.service.store.audit, name, int(text))
        except (sqlite3.Error, OSError) as exc:
            log.error("peer audit: cannot read %s: %s", self.service.store.path, exc)
            return _unavailable()
        return json_response(200, {"peer": name, "audit": [r.as_dict() for r in rows]})

    # -- the one write -------------------------------------------------------

    async def _action(self, req: Request) -> Response:
        name = req.params["name"]
        if name == UNKNOWN:
            return error(
                400, "unknown is every undeclared source: use [sip] unknown_sources for it"
            )
        if name not in self.service.actions.peers:
            return error(404, f"no declared peer {name!r}")
        try:
            body = req.json_object()
            setting, reason, operator = _parse_change(body)
        except ValueError as exc:
            return error(400, str(exc))
        actor = operator or "admin-token"
        try:
            row = await self.service.change(name, setting, reason, actor, req.client)
        except (sqlite3.Error, OSError) as exc:
            log.error("peer %s: the action change was not stored (%s); nothing changed", name, exc)
            return _unavailable()
        stats, now, workers = await self.node_stats()
        body = {"audit": row.as_dict(), "workers": workers, **self.peer(name, stats, now)}
        return json_response(200, body)


def _parse_change(body: dict[str, Any]) -> tuple[Setting | None, str, str]:
    """(the new setting, None to clear; reason; operator), or ValueError."""
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise ValueError(f"unknown field {unknown[0]!r}: expected {', '.join(FIELDS)}")
    action = body.get("action")
    choices = (*PEER_ACTIONS, "clear")
    if action not in choices:
        raise ValueError(f"action: expected one of {', '.join(choices)}, got {action!r}")
    cps = body.get("throttle_cps")
    if action == "throttle":
        if isinstance(cps, bool) or not isinstance(cps, int | float) or not 0 < cps <= MAX_CPS:
            raise ValueError(f"throttle_cps: expected a number above 0 and at most {MAX_CPS:g}")
    elif cps is not None:
        raise ValueError(f"throttle_cps applies only to the action throttle, not {action}")
    reason = body.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        raise ValueError("reason: required, a short text saying why (it goes in the audit)")
    if len(reason) > MAX_REASON or not reason.isprintable():
        raise ValueError(f"reason: at most {MAX_REASON} printable characters, one line")
    operator = body.get("operator", "")
    if not isinstance(operator, str) or len(operator) > MAX_OPERATOR or not operator.isprintable():
        raise ValueError(f"operator: a name of at most {MAX_OPERATOR} printable characters")
    if action == "clear":
        return None, reason.strip(), operator.strip()
    rate = float(cps) if action == "throttle" and isinstance(cps, int | float) else 0.0
    setting = Setting(str(action), rate)
    return setting, reason.strip(), operator.strip()


def _setting(s: Setting) -> dict[str, object]:
    return {"action": s.action, "throttle_cps": s.throttle_cps if s.action == "throttle" else None}


def _view(v: PeerView) -> dict[str, object]:
    p, filing = v.peer, v.standing.filing
    return {
        "declared": True,
        "addresses": list(p.addresses),
        "transport": p.transport,
        "frn": p.frn or None,
        "rmd": p.rmd or None,
        "rmd_role": p.rmd_role,
        "rmd_standing": {
            "status": v.standing.status,
            "detail": v.standing.detail,
            "filing": None
            if filing is None
            else {
                "number": filing.number or None,
                "frn": filing.frn or None,
                "business_name": filing.business_name,
                "implementation": filing.implementation,
                "roles": sorted(filing.roles),
                "foreign": filing.foreign,
                "last_updated": filing.last_updated or None,
                "line": filing.line,
            },
        },
        "configured": _setting(v.configured),
        "override": None
        if v.override is None
        else {
            **_setting(v.override.setting),
            "reason": v.override.reason,
            "actor": v.override.actor,
            "at": v.override.at,
        },
        "policy": _setting(v.policy),
        "effective": {**_setting(v.effective), "because": v.because},
    }


def _unavailable() -> Response:
    resp = error(503, "the peer store is unavailable (locked or full); try again")
    return Response(resp.status, resp.content_type, resp.body, (("Retry-After", "5"),))
