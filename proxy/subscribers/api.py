"""The subscriber and dispute API (JSON over the admin server, bearer token).
Every bad request is a 4xx naming the field at fault; the OpenAPI document
in openapi.py describes exactly these routes."""

from __future__ import annotations

import logging
import time
from typing import Any

from ..admin import AdminApi, Handler, Request, Response, error, json_response
from .backend import RETRY_AFTER, StoreUnavailable
from .disputes import STATUSES
from .links import LinkSigner
from .model import LISTS, MAX_LIST_ENTRIES, InvalidField, Subscriber, parse_entry, parse_number
from .openapi import openapi_document
from .service import SubscriberService, apply_changes

log = logging.getLogger("robocall_shield")
PREFIX = "/api/v1"
MAX_IMPORT_BYTES = 64 << 20
MAX_CHANGES = 256 << 10


class SubscriberApi:
    def __init__(self, service: SubscriberService, links: LinkSigner) -> None:
        self.service = service
        self.links = links

    def register(self, api: AdminApi) -> None:
        def add(method: str, path: str, handler: Handler, **kw: Any) -> None:
            api.add_route(method, path, _store_faults(handler), **kw)

        p = PREFIX
        add("GET", f"{p}/openapi.json", self.openapi, auth=False)
        add("GET", f"{p}/subscribers.csv", self.export_csv)
        add("POST", f"{p}/subscribers.csv", self.import_csv, max_body=MAX_IMPORT_BYTES)
        add("GET", f"{p}/subscribers/stats", self.stats)
        add("GET", f"{p}/subscribers/{{number}}", self.read)
        # two full lists of 32-character entries, JSON-quoted, fit
        add("PUT", f"{p}/subscribers/{{number}}", self.create_or_replace, max_body=MAX_CHANGES)
        add("PATCH", f"{p}/subscribers/{{number}}", self.update, max_body=MAX_CHANGES)
        add("DELETE", f"{p}/subscribers/{{number}}", self.delete)
        add("GET", f"{p}/subscribers/{{number}}/audit", self.audit)
        add("PUT", f"{p}/subscribers/{{number}}/lists/{{list}}/{{entry}}", self.add_entry)
        add("DELETE", f"{p}/subscribers/{{number}}/lists/{{list}}/{{entry}}", self.remove_entry)
        add("POST", f"{p}/subscribers/{{number}}/self-service-link", self.self_service_link)
        add("GET", f"{p}/disputes", self.list_disputes)
        add("GET", f"{p}/disputes/{{id}}", self.read_dispute)
        add("POST", f"{p}/disputes/{{id}}/resolve", self.resolve_dispute)

    # -- subscribers -----------------------------------------------------

    async def openapi(self, _: Request) -> Response:
        return json_response(200, openapi_document())

    async def read(self, req: Request) -> Response:
        number, bad = _number(req)
        if bad:
            return bad
        sub = self.service.get(number)
        if sub is None:
            return error(404, f"no subscriber +{number}", "number")
        return json_response(200, sub.public())

    async def create_or_replace(self, req: Request) -> Response:
        number, bad = _number(req)
        if bad:
            return bad
        try:
            new = apply_changes(Subscriber(number), req.json_object())
        except ValueError as exc:
            return _bad(exc)
        old = await self.service.put(new, _actor(req))
        return json_response(201 if old is None else 200, new.public())

    async def update(self, req: Request) -> Response:
        number, bad = _number(req)
        if bad:
            return bad
        if self.service.get(number) is None:
            return error(404, f"no subscriber +{number}", "number")
        try:
            new = await self.service.update(number, req.json_object(), _actor(req))
        except ValueError as exc:
            return _bad(exc)
        except KeyError:
            return error(404, f"no subscriber +{number}", "number")
        return json_response(200, new.public())

    async def delete(self, req: Request) -> Response:
        number, bad = _number(req)
        if bad:
            return bad
        old = await self.service.delete(number, _actor(req))
        if old is None:
            return error(404, f"no subscriber +{number}", "number")
        return Response(204, "application/json", b"")

    async def audit(self, req: Request) -> Response:
        number, bad = _number(req)
        if bad:
            return bad
        return json_response(
            200, {"number": f"+{number}", "changes": await self.service.audit(number)}
        )

    async def add_entry(self, req: Request) -> Response:
        return await self._change_list(req, add=True)

    async def remove_entry(self, req: Request) -> Response:
        return await self._change_list(req, add=False)

    async def _change_list(self, req: Request, add: bool) -> Response:
        number, bad = _number(req)
        if bad:
            return bad
        name = req.params["list"]
        if name not in LISTS:
            return error(404, f"no list {name[:20]!r}; use allow or block", "list")
        try:
            parse_entry(req.params["entry"], "entry")
        except InvalidField as exc:
            return _bad(exc)
        wanted = _normalise(req.params["entry"])

        def changed(sub: Subscriber) -> dict[str, Any]:
            entries = getattr(sub, name).entries()
            if add and wanted not in entries:
                if len(entries) >= MAX_LIST_ENTRIES:
                    raise _Refused(
                        422, f"the {name} list is full ({MAX_LIST_ENTRIES} entries)", name
                    )
                entries.append(wanted)
            elif not add:
                if wanted not in entries:
                    raise _Refused(404, f"{wanted} is not on the {name} list", "entry")
                entries.remove(wanted)
            return {name: entries}

        try:
            new = await self.service.edit(number, changed, _actor(req))
        except KeyError:
            return error(404, f"no subscriber +{number}", "number")
        except _Refused as exc:
            return error(exc.status, exc.message, exc.field)
        return json_response(200, new.public())

    async def export_csv(self, _: Request) -> Response:
        text = await self.service.export_csv()
        return Response(200, "text/csv; charset=utf-8", text.encode())

    async def import_csv(self, req: Request) -> Response:
        if not req.headers.get("content-type", "").startswith("text/csv"):
            return error(415, "send the file as text/csv", "content-type")
        try:
            text = req.body.decode("utf-8-sig")
            created, updated = await self.service.import_csv(text, _actor(req))
        except UnicodeDecodeError:
            return error(400, "the CSV is not UTF-8", "csv")
        except InvalidField as exc:
            return _bad(exc)
        return json_response(200, {"created": created, "updated": updated})

    async def stats(self, _: Request) -> Response:
        return json_response(200, {"by_policy": self.service.by_policy()})

    async def self_service_link(self, req: Request) -> Response:
        number, bad = _number(req)
        if bad:
            return bad
        if self.service.get(number) is None:
            return error(404, f"no subscriber +{number}", "number")
        url, expires = self.links.link(number, time.time())
        return json_response(200, {"url": url, "expires_at": expires})

    # -- disputes --------------------------------------------------------

    async def list_disputes(self, req: Request) -> Response:
        status = req.query.get("status")
        if status is not None and status not in STATUSES:
            return error(400, f"status must be one of {', '.join(STATUSES)}", "status")
        items = await self.service.run(self.service.disputes.list, status)
        return json_response(200, {"disputes": items})

    async def read_dispute(self, req: Request) -> Response:
        dispute_id, bad = _dispute_id(req)
        if bad:
            return bad
        item = await self.service.run(self.service.disputes.get, dispute_id)
        if item is None:
            return error(404, f"no dispute {dispute_id}", "id")
        return json_response(200, item)

    async def resolve_dispute(self, req: Request) -> Response:
        dispute_id, bad = _dispute_id(req)
        if bad:
            return bad
        try:
            body = req.json_object()
        except ValueError as exc:
            return _bad(exc)
        unknown = set(body) - {"decision", "scope", "note"}
        if unknown:
            return error(400, "unknown field", sorted(unknown)[0])
        decision, scope, note = body.get("decision"), body.get("scope"), body.get("note", "")
        if decision not in ("allow", "reject"):
            return error(400, "decision must be allow or reject", "decision")
        if not isinstance(note, str) or len(note) > 2000:
            return error(400, "note must be text of at most 2000 characters", "note")
        subscriber: int | None = None
        if decision == "allow":
            if scope == "global":
                pass
            elif isinstance(scope, str):
                try:
                    subscriber = parse_number(scope, "scope")
                except InvalidField as exc:
                    return _bad(exc)
            else:
                return error(400, "scope must be global or a subscriber number", "scope")
        elif scope is not None:
            return error(400, "a rejected dispute takes no scope", "scope")
        try:
            result = await self.service.resolve_dispute(
                dispute_id, decision, subscriber, note, _actor(req)
            )
        except InvalidField as exc:
            return _bad(exc)
        if result is None:
            item = await self.service.run(self.service.disputes.get, dispute_id)
            if item is None:
                return error(404, f"no dispute {dispute_id}", "id")
            return error(409, f"dispute {dispute_id} is already {item['status']}", "id")
        return json_response(200, result)


def _store_faults(handler: Handler) -> Handler:
    """A locked store, a full disk, an I/O error or an unreachable database
    is the store's state, not the request's fault nor a bug: 503 with
    Retry-After, so the portal tries again. Nothing reached the in-memory
    index (it is updated only after a commit), so screening goes on with
    what was committed."""

    async def guarded(req: Request) -> Response:
        try:
            return await handler(req)
        except StoreUnavailable as exc:
            log.error("subscriber store unavailable for %s %s: %s", req.method, req.path, exc)
            answer = error(503, f"the subscriber store is unavailable ({exc}); try again later")
            return Response(
                answer.status, answer.content_type, answer.body, (("Retry-After", RETRY_AFTER),)
            )

    return guarded


class _Refused(Exception):
    def __init__(self, status: int, message: str, field: str) -> None:
        super().__init__(message)
        self.status, self.message, self.field = status, message, field


def _number(req: Request) -> tuple[int, Response | None]:
    try:
        return parse_number(req.params["number"]), None
    except InvalidField as exc:
        return 0, _bad(exc)


def _dispute_id(req: Request) -> tuple[int, Response | None]:
    text = req.params["id"]
    if not (text.isascii() and text.isdigit()) or len(text) > 12:
        return 0, error(400, "a dispute id is a positive integer", "id")
    return int(text), None


def _bad(exc: ValueError) -> Response:
    if isinstance(exc, InvalidField):
        return error(400, exc.problem, exc.field)
    return error(400, str(exc), "body")


def _actor(req: Request) -> str:
    """Who made a change, for the audit trail: the portal may name its user."""
    name = req.headers.get("x-actor", "").strip()
    if name and len(name) <= 64 and name.isprintable():
        return f"api:{name}"
    return "api"


def _normalise(entry: str) -> str:
    kind, value = parse_entry(entry, "entry")
    return f"+{value}*" if kind == "prefix" else f"+{value}"
