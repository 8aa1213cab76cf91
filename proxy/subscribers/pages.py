"""The two public pages: redress (a wrongly blocked caller files a dispute)
and subscriber self-service (reached through a signed link). Plain HTML
forms, no JavaScript; every value shown is escaped."""

from __future__ import annotations

import logging
import time
from collections import deque
from html import escape

from ..admin import AdminApi, Handler, Request, Response
from .backend import RETRY_AFTER, StoreUnavailable
from .links import BadLink, LinkSigner
from .model import POLICIES, InvalidField, Subscriber, parse_number
from .service import SubscriberService, apply_changes

log = logging.getLogger("robocall_shield")
MAX_CONTACT, MAX_DESCRIPTION = 200, 2000
MAX_FORM = 16384
STYLE = (
    "body{font-family:sans-serif;max-width:40em;margin:2em auto;padding:0 1em}"
    "label{display:block;margin-top:1em}input[type=text],textarea{width:100%}"
    ".error{color:#a00}.ok{color:#060}"
)


def page(title: str, body: str, status: int = 200) -> Response:
    html = (
        f"<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<meta name=viewport content='width=device-width'><title>{escape(title)}</title>"
        f"<style>{STYLE}</style></head><body><h1>{escape(title)}</h1>{body}</body></html>"
    )
    return Response(
        status,
        "text/html; charset=utf-8",
        html.encode(),
        (("Cache-Control", "no-store"), ("Content-Security-Policy", "default-src 'none'; "
                                         "style-src 'unsafe-inline'; form-action 'self'")),
    )  # fmt: skip


class RateLimit:
    """At most ``limit`` events per ``window`` seconds per key, and overall."""

    def __init__(self, limit: int, window: float, total: int) -> None:
        self.limit, self.window, self.total = limit, window, total
        self.events: dict[str, deque[float]] = {}
        self.all: deque[float] = deque()

    def allow(self, key: str, now: float) -> bool:
        q = self.events.get(key)
        for d in (q, self.all):
            while d and d[0] <= now - self.window:
                d.popleft()
        if (q is not None and len(q) >= self.limit) or len(self.all) >= self.total:
            return False  # nothing stored for a refused source
        if q is None:
            if len(self.events) >= 10_000:  # forget sources with nothing in the window
                self.events = {
                    k: v for k, v in self.events.items() if v and v[-1] > now - self.window
                }
            q = self.events[key] = deque()
        q.append(now)
        self.all.append(now)
        return True


class Pages:
    def __init__(
        self, service: SubscriberService, links: LinkSigner, disputes_per_hour: int
    ) -> None:
        self.service = service
        self.links = links
        self.limit = RateLimit(disputes_per_hour, 3600, disputes_per_hour * 100)

    def register(self, api: AdminApi) -> None:
        def add(method: str, path: str, handler: Handler, **kw: int) -> None:
            api.add_route(method, path, _store_faults(handler), auth=False, **kw)

        add("GET", "/redress", self.redress_form)
        add("POST", "/redress", self.redress_submit, max_body=MAX_FORM)
        add("GET", "/self-service", self.self_service_form)
        add("POST", "/self-service", self.self_service_submit, max_body=MAX_FORM)

    # -- redress ---------------------------------------------------------

    async def redress_form(self, _: Request) -> Response:
        return page("Were you wrongly blocked?", _redress_form({}, ""))

    async def redress_submit(self, req: Request) -> Response:
        try:
            form = req.form()
        except ValueError as exc:
            return page("Were you wrongly blocked?", _redress_form({}, str(exc)), 400)
        problem, field = _check_dispute(form)
        if problem:
            return page("Were you wrongly blocked?", _redress_form(form, problem, field), 400)
        now = time.time()
        if not self.limit.allow(req.client or "?", now):
            return page(
                "Too many disputes",
                "<p class=error>Too many disputes were filed from your address in the last "
                "hour. Please try again later, or call us.</p>",
                429,
            )
        number = parse_number(form["number"])
        called = form.get("called", "").strip()
        description = form["description"].strip()
        if called:
            description = f"[called +{parse_number(called)}] {description}"
        dispute_id = await self.service.file_dispute(
            number, form["contact"].strip(), description, req.client or "?", now
        )
        return page(
            "Dispute received",
            f"<p class=ok>Your dispute number is <strong>{dispute_id}</strong>. We review "
            f"every dispute and answer within 24 hours at the contact you gave.</p>",
        )

    # -- self-service ----------------------------------------------------

    async def self_service_form(self, req: Request) -> Response:
        return self._render(req.query.get("t", ""), "")

    async def self_service_submit(self, req: Request) -> Response:
        try:
            form = req.form()
        except ValueError as exc:
            return page("Robocall blocking", f"<p class=error>{escape(str(exc))}</p>", 400)
        token = form.get("t", "")
        current = self._subscriber(token)
        if isinstance(current, Response):
            return current
        number = current.number
        changes = {
            "opted_in": form.get("opted_in") == "on",
            "policy": form.get("policy", ""),
            "reject_anonymous": form.get("reject_anonymous") == "on",
            "allow": _lines(form.get("allow", "")),
            "block": _lines(form.get("block", "")),
        }
        try:
            apply_changes(current, changes)
        except InvalidField as exc:
            return self._render(token, f"{exc.field}: {exc.problem}", 400)
        await self.service.update(number, changes, "self-service")
        return self._render(token, "", saved=True)

    def _subscriber(self, token: str) -> Subscriber | Response:
        """The subscriber a signed link is for, or the page saying why not."""
        try:
            number = self.links.verify(token, time.time())
        except BadLink as exc:
            return page("Robocall blocking", f"<p class=error>{escape(str(exc))}</p>", 403)
        sub = self.service.get(number)
        if sub is None:
            return page("Robocall blocking", "<p class=error>No such subscriber.</p>", 404)
        return sub

    def _render(self, token: str, problem: str, status: int = 200, saved: bool = False) -> Response:
        sub = self._subscriber(token)
        if isinstance(sub, Response):
            return sub
        number = sub.number
        choices = "".join(
            f"<option value={p}{' selected' if p == sub.policy else ''}>{_POLICY_TEXT[p]}</option>"
            for p in POLICIES
        )
        note = "<p class=ok id=saved>Saved.</p>" if saved else ""
        if problem:
            note = f"<p class=error id=problem>{escape(problem)}</p>"
        body = (
            f"{note}<p>Free robocall blocking for +{number}. There is no charge for this "
            f"service.</p><form method=post action=/self-service>"
            f"<input type=hidden name=t value='{escape(token, quote=True)}'>"
            f"<label><input type=checkbox name=opted_in id=opted_in"
            f"{' checked' if sub.opted_in else ''}> Robocall protection on</label>"
            f"<label for=policy>When a call looks like a robocall</label>"
            f"<select name=policy id=policy>{choices}</select>"
            f"<label><input type=checkbox name=reject_anonymous id=reject_anonymous"
            f"{' checked' if sub.reject_anonymous else ''}> Reject callers who hide their "
            f"number</label>"
            f"<label for=allow>Always let these numbers through (one per line; a prefix ends "
            f"with *)</label><textarea name=allow id=allow rows=4>"
            f"{escape(chr(10).join(sub.allow.entries()))}</textarea>"
            f"<label for=block>Always block these numbers</label>"
            f"<textarea name=block id=block rows=4>"
            f"{escape(chr(10).join(sub.block.entries()))}</textarea>"
            f"<p><button type=submit id=save>Save</button></p></form>"
        )
        return page("Robocall blocking", body, status)


def _store_faults(handler: Handler) -> Handler:
    """The store unavailable (locked, full, unreachable): a page saying so,
    503 with Retry-After, rather than an internal error. Nothing was saved;
    the page does not show the store's own words to the public."""

    async def guarded(req: Request) -> Response:
        try:
            return await handler(req)
        except StoreUnavailable as exc:
            log.error("subscriber store unavailable for %s %s: %s", req.method, req.path, exc)
            answer = page(
                "Please try again later",
                "<p class=error id=unavailable>We cannot take your request right now; nothing "
                "was saved. Please try again in a few minutes.</p>",
                503,
            )
            return Response(
                answer.status, answer.content_type, answer.body,
                (*answer.headers, ("Retry-After", RETRY_AFTER)),
            )  # fmt: skip

    return guarded


_POLICY_TEXT = {
    "off": "Do nothing",
    "label": "Label it (SCAM LIKELY) and let it ring",
    "block-high-confidence": "Block it when we are sure, label it otherwise",
    "block-all-suspected": "Block every suspected robocall",
}


def _lines(text: str) -> list[str]:
    """One entry per line, as the page asks: a number may contain spaces."""
    return [line.strip() for line in text.splitlines() if line.strip()]


def _check_dispute(form: dict[str, str]) -> tuple[str, str]:
    """(problem, field) or ("", "") when the dispute can be filed."""
    for name in ("number", "contact", "description", "called"):
        if any(c in form.get(name, "") for c in "<>"):
            return "Please remove the characters < and > (no HTML).", name
    try:
        parse_number(form.get("number", ""))
    except InvalidField:
        return "Enter the phone number that was blocked, like +12125550142.", "number"
    if form.get("called", "").strip():
        try:
            parse_number(form["called"])
        except InvalidField:
            return "The number you called is not a phone number.", "called"
    contact = form.get("contact", "").strip()
    if not contact or len(contact) > MAX_CONTACT:
        return f"Tell us how to reach you (at most {MAX_CONTACT} characters).", "contact"
    description = form.get("description", "").strip()
    if not description or len(description) > MAX_DESCRIPTION:
        return f"Describe what happened (at most {MAX_DESCRIPTION} characters).", "description"
    return "", ""


def _redress_form(form: dict[str, str], problem: str, field: str = "") -> str:
    def value(name: str) -> str:
        return escape(form.get(name, ""), quote=True)

    error = f"<p class=error id=problem data-field={escape(field)}>{escape(problem)}</p>"
    return (
        f"{error if problem else ''}"
        "<p>If a call from your number was blocked and you believe it should not have been, "
        "tell us. We review every dispute and answer within 24 hours.</p>"
        "<form method=post action=/redress>"
        f"<label for=number>Your phone number</label><input type=text name=number id=number "
        f"maxlength=32 value='{value('number')}'>"
        f"<label for=called>The number you were calling (optional)</label><input type=text "
        f"name=called id=called maxlength=32 value='{value('called')}'>"
        f"<label for=contact>How can we reach you? (email or phone)</label><input type=text "
        f"name=contact id=contact maxlength={MAX_CONTACT} value='{value('contact')}'>"
        f"<label for=description>What happened?</label><textarea name=description "
        f"id=description rows=6 maxlength={MAX_DESCRIPTION}>{value('description')}</textarea>"
        "<p><button type=submit id=submit>File a dispute</button></p></form>"
    )
