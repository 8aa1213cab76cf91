"""Admin HTTP: /healthz, /readyz, /metrics, and routes other parts register
(authenticated actions and queries, the subscriber API, the public pages).

Deliberately minimal HTTP/1.1 (one request per connection, bounded size and
time) so the proxy needs no web framework.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import sqlite3
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from .records.query import FORMATS, QueryError, parse_caller, parse_window, render, traceback
from .routing import SwitchPool

log = logging.getLogger("robocall_shield.admin")

MAX_REQUEST = 8192
MAX_BODY = 65536  # per route unless it asks for more
READ_TIMEOUT = 5.0
_STATUS = {
    200: "OK",
    201: "Created",
    204: "No Content",
    303: "See Other",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    409: "Conflict",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    500: "Internal Server Error",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    503: "Service Unavailable",
}


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes = b""
    client: str = ""
    params: dict[str, str] = field(default_factory=dict)

    def json_object(self) -> dict[str, Any]:
        """The body as a JSON object; raises ValueError with a readable message."""
        if not self.headers.get("content-type", "").startswith("application/json"):
            raise ValueError("send the body as application/json")
        try:
            body = json.loads(self.body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"body is not valid JSON: {exc}") from None
        except RecursionError:
            raise ValueError("body is nested too deeply") from None
        if not isinstance(body, dict):
            raise ValueError("expected a JSON object")
        return body

    def form(self) -> dict[str, str]:
        try:
            text = self.body.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError("form is not UTF-8") from None
        return dict(parse_qsl(text, keep_blank_values=True, max_num_fields=100))


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    content_type: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


Handler = Callable[[Request], Awaitable[Response]]
Action = Callable[[], Awaitable[tuple[int, dict[str, object]]]]
Query = Callable[[str], tuple[int, dict[str, object]]]  # the path after its prefix


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    template: str
    pattern: re.Pattern[str]
    handler: Handler
    auth: bool
    max_body: int


def json_response(status: int, payload: object) -> Response:
    return Response(status, "application/json", json.dumps(payload).encode() + b"\n")


def error(status: int, message: str, field: str | None = None) -> Response:
    payload: dict[str, object] = {"error": message}
    if field is not None:
        payload["field"] = field
    return json_response(status, payload)


class AdminApi:
    def __init__(
        self,
        pool: SwitchPool,
        registry: CollectorRegistry,
        started: Callable[[], bool],
        *,
        token: str = "",
        status: Callable[[], dict[str, object]] = dict,
        actions: dict[str, Action] | None = None,
        queries: dict[str, Query] | None = None,
        exposition: Callable[[], Awaitable[bytes]] | None = None,
    ) -> None:
        self.pool = pool
        self.registry = registry
        self.exposition = exposition  # all workers' metrics, when there are several
        self.started = started
        self.token = token
        self.status = status
        self.routes: list[Route] = []
        self.clients: set[asyncio.Task[object]] = set()  # connections being served
        self.add_route("GET", "/healthz", self._health, auth=False)
        self.add_route("GET", "/readyz", self._ready, auth=False)
        self.add_route("GET", "/metrics", self._metrics, auth=False)
        for path, action in (actions or {}).items():
            self.add_route("POST", path, _action_handler(action))
        for prefix, query in (queries or {}).items():
            self.add_route("GET", prefix + "{rest:.+}", _query_handler(query))

    def add_route(
        self, method: str, template: str, handler: Handler, *, auth: bool = True,
        max_body: int = MAX_BODY,
    ) -> None:  # fmt: skip
        """``template`` is a path with ``{name}`` (one segment) or
        ``{name:regex}`` parameters."""
        regex, last = "", 0
        for m in re.finditer(r"\{(\w+)(?::([^}]+))?\}", template):
            regex += re.escape(template[last : m.start()])  # literal parts match literally
            regex += f"(?P<{m.group(1)}>{m.group(2) or '[^/]+'})"
            last = m.end()
        regex += re.escape(template[last:])
        self.routes.append(Route(method, template, re.compile(regex), handler, auth, max_body))

    def serve_traceback(self, records_dir: Path) -> None:
        """``GET /admin/traceback?caller=N&from=T1&to=T2[&format=json|csv]``
        (bearer token): an ITG traceback from the decision records, read on
        a thread so the loop never waits on the disk."""
        self.add_route("GET", "/admin/traceback", _traceback_handler(records_dir))

    def _match(self, method: str, path: str) -> tuple[Route | None, dict[str, str], list[str]]:
        allowed: list[str] = []
        for route in self.routes:
            m = route.pattern.fullmatch(path)
            if m is None:
                continue
            if route.method == method or (route.method == "GET" and method == "HEAD"):
                return route, {k: unquote(v) for k, v in m.groupdict().items()}, allowed
            allowed.append(route.method)
        return None, {}, allowed

    async def handle(self, method: str, target: str, headers: dict[str, str]) -> Response:
        """A request without a body (kept for callers that have no body)."""
        return await self.dispatch(method, target, headers, lambda _n: _no_body())

    async def dispatch(
        self,
        method: str,
        target: str,
        headers: dict[str, str],
        read_body: Callable[[int], Awaitable[bytes]],
        client: str = "",
    ) -> Response:
        path, _, query = target.partition("?")
        route, params, allowed = self._match(method, path)
        limit = route.max_body if route is not None else MAX_BODY
        length = headers.get("content-length", "0")
        if not (length.isascii() and length.isdigit()) or int(length) > limit:
            return error(413, f"body over {limit} bytes")
        if route is not None and route.auth:
            denied = self._denied(headers)
            if denied is not None:  # answered before reading a body it may not send
                return denied
        body = await read_body(int(length))
        if route is None:
            if allowed:
                return error(405, f"{method} is not allowed; use {' or '.join(sorted(allowed))}")
            return error(404, f"no such endpoint {path!r}")
        try:
            query_args = dict(parse_qsl(query, keep_blank_values=True, max_num_fields=50))
        except ValueError:
            return error(400, "too many query parameters")
        request = Request(method, path, query_args, headers, body, client, params)
        return await route.handler(request)

    def _denied(self, headers: dict[str, str]) -> Response | None:
        if not self.token:
            return error(
                403, "set [admin] token (or ROBOCALL_SHIELD_TOKEN) to enable this endpoint"
            )
        scheme, _, given = headers.get("authorization", "").partition(" ")
        # the scheme is case-insensitive (RFC 7235); the token is compared in constant time
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), self.token.encode()
        ):
            return error(401, "missing or wrong bearer token")
        return None

    def _switches(self) -> dict[str, bool]:
        return {s.cfg.name: s.up for s in self.pool.states}

    async def _health(self, _: Request) -> Response:
        return json_response(200, {"status": "ok", "switches": self._switches(), **self.status()})

    async def _ready(self, _: Request) -> Response:
        ready = self.started() and any(s.up for s in self.pool.states)
        return json_response(200 if ready else 503, {"ready": ready, "switches": self._switches()})

    async def _metrics(self, _: Request) -> Response:
        if self.exposition is not None:
            return Response(200, CONTENT_TYPE_LATEST, await self.exposition())
        return Response(200, CONTENT_TYPE_LATEST, generate_latest(self.registry))

    async def serve_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        if task is not None:
            self.clients.add(task)
            task.add_done_callback(self.clients.discard)
        method = "GET"
        peer = writer.get_extra_info("peername")
        client = str(peer[0]) if isinstance(peer, tuple) else ""

        async def read_body(n: int) -> bytes:
            # read what the client sent, so closing does not reset the connection
            return await asyncio.wait_for(reader.readexactly(n), READ_TIMEOUT) if n else b""

        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
            lines = head.decode("latin-1").split("\r\n")
            parts = lines[0].split(" ")
            if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
                resp = error(400, "malformed request line")
            else:
                method = parts[0]
                headers = {}
                for line in lines[1:]:
                    name, sep, value = line.partition(":")
                    if sep:
                        headers[name.strip().lower()] = value.strip()
                resp = await self.dispatch(method, parts[1], headers, read_body, client)
        except asyncio.LimitOverrunError:
            resp = error(400, "request head too large")
        except (TimeoutError, asyncio.IncompleteReadError):
            resp = error(408, "incomplete request")
        except OSError:  # the client went away
            writer.close()
            return
        except Exception:  # a bug must cost one request a 500, never the connection silently
            log.exception("admin request %s failed", method)
            resp = error(500, "internal error; see the proxy's log")
        extra = "".join(f"{k}: {v}\r\n" for k, v in resp.headers)
        writer.write(
            f"HTTP/1.1 {resp.status} {_STATUS.get(resp.status, 'Error')}\r\n"
            f"Content-Type: {resp.content_type}\r\nContent-Length: {len(resp.body)}\r\n"
            f"{extra}Connection: close\r\n\r\n".encode()
        )
        if method != "HEAD":
            writer.write(resp.body)
        try:
            await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    def close_clients(self) -> None:
        """At shutdown: a browser's idle keep-alive connection must not
        outlive the server (asyncio.Server.close leaves them open)."""
        for task in list(self.clients):
            task.cancel()

    async def start(
        self, host: str, port: int, tls: ssl.SSLContext | None = None
    ) -> asyncio.Server:
        return await asyncio.start_server(
            self.serve_client, host, port, limit=MAX_REQUEST, ssl=tls,
            ssl_handshake_timeout=10.0 if tls else None,
        )  # fmt: skip


async def _no_body() -> bytes:
    return b""


def _action_handler(action: Action) -> Handler:
    async def handler(_: Request) -> Response:
        return json_response(*await action())

    return handler


def _query_handler(query: Query) -> Handler:
    async def handler(req: Request) -> Response:
        return json_response(*query(req.params["rest"]))

    return handler


def _traceback_handler(directory: Path) -> Handler:
    def answer(key: int, start: float, end: float, fmt: str) -> str:
        return render(traceback(directory, key, start, end), fmt)

    async def handler(req: Request) -> Response:
        q = req.query
        missing = [name for name in ("caller", "from", "to") if not q.get(name)]
        if missing:
            return error(400, f"missing query parameter(s): {', '.join(missing)}", missing[0])
        fmt = q.get("format", "json")
        if fmt not in FORMATS:
            return error(400, f"format {fmt!r}: expected json or csv", "format")
        try:
            key = parse_caller(q["caller"])
            start, end = parse_window(q["from"], q["to"])
        except QueryError as exc:
            return error(400, str(exc))
        try:
            body = await asyncio.to_thread(answer, key, start, end, fmt)
        except (sqlite3.Error, OSError) as exc:
            log.error("traceback: cannot read the decision records in %s: %s", directory, exc)
            return error(503, "the decision records cannot be read; see the proxy's log")
        kind = "application/json" if fmt == "json" else "text/csv; charset=utf-8"
        return Response(200, kind, body.encode())

    return handler
