"""Admin HTTP: /healthz, /readyz, /metrics, authenticated POST actions and
authenticated GET queries.

Deliberately minimal HTTP/1.1 (one request per connection, bounded size and
time) so the proxy needs no web framework.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Awaitable, Callable
from urllib.parse import unquote

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from .routing import SwitchPool

MAX_REQUEST = 8192
MAX_BODY = 65536  # no endpoint takes a body; tolerate small ones
READ_TIMEOUT = 5.0
Response = tuple[int, str, bytes]
_STATUS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    409: "Conflict",
    413: "Content Too Large",
    422: "Unprocessable Content",
    503: "Service Unavailable",
}
Action = Callable[[], Awaitable[tuple[int, dict[str, object]]]]
Query = Callable[[str], tuple[int, dict[str, object]]]  # the path after its prefix


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
    ) -> None:
        self.pool = pool
        self.registry = registry
        self.started = started
        self.token = token
        self.status = status
        self.actions = actions or {}
        self.queries = queries or {}

    async def handle(self, method: str, path: str, headers: dict[str, str]) -> Response:
        path = path.split("?", 1)[0]
        if path in self.actions:
            return await self._action(method, path, headers)
        for prefix, query in self.queries.items():
            if path.startswith(prefix):
                if method not in ("GET", "HEAD"):
                    return _json(405, {"error": f"{method} is not allowed; use GET"})
                denied = self._denied(headers)
                if denied is not None:
                    return denied
                return _json(*query(unquote(path[len(prefix) :])))
        routes = {"/healthz": self._health, "/readyz": self._ready, "/metrics": self._metrics}
        handler = routes.get(path)
        if handler is None:
            known = sorted([*routes, *self.actions, *(f"{q}..." for q in self.queries)])
            return _json(404, {"error": f"no such endpoint {path!r}", "endpoints": known})
        if method not in ("GET", "HEAD"):
            return _json(405, {"error": f"{method} is not allowed; use GET"})
        return handler()

    async def _action(self, method: str, path: str, headers: dict[str, str]) -> Response:
        if method != "POST":
            return _json(405, {"error": f"{method} is not allowed; use POST"})
        denied = self._denied(headers)
        if denied is not None:
            return denied
        status, payload = await self.actions[path]()
        return _json(status, payload)

    def _denied(self, headers: dict[str, str]) -> Response | None:
        if not self.token:
            return _json(403, {"error": "set [admin] token to enable this endpoint"})
        scheme, _, given = headers.get("authorization", "").partition(" ")
        # the scheme is case-insensitive (RFC 7235); the token is compared in constant time
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), self.token.encode()
        ):
            return _json(401, {"error": "missing or wrong bearer token"})
        return None

    def _switches(self) -> dict[str, bool]:
        return {s.cfg.name: s.up for s in self.pool.states}

    def _health(self) -> Response:
        return _json(200, {"status": "ok", "switches": self._switches(), **self.status()})

    def _ready(self) -> Response:
        ready = self.started() and any(s.up for s in self.pool.states)
        return _json(200 if ready else 503, {"ready": ready, "switches": self._switches()})

    def _metrics(self) -> Response:
        return 200, CONTENT_TYPE_LATEST, generate_latest(self.registry)

    async def serve_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        method = "GET"
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
            lines = head.decode("latin-1").split("\r\n")
            parts = lines[0].split(" ")
            if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
                status, ctype, body = _json(400, {"error": "malformed request line"})
            else:
                method = parts[0]
                headers = {}
                for line in lines[1:]:
                    name, sep, value = line.partition(":")
                    if sep:
                        headers[name.strip().lower()] = value.strip()
                length = headers.get("content-length", "0")
                if not length.isdigit() or int(length) > MAX_BODY:
                    status, ctype, body = _json(413, {"error": f"body over {MAX_BODY} bytes"})
                else:
                    # read what the client sent, so closing does not reset the connection
                    await asyncio.wait_for(reader.readexactly(int(length)), READ_TIMEOUT)
                    status, ctype, body = await self.handle(method, parts[1], headers)
        except asyncio.LimitOverrunError:
            status, ctype, body = _json(400, {"error": "request head too large"})
        except (TimeoutError, asyncio.IncompleteReadError):
            status, ctype, body = _json(408, {"error": "incomplete request"})
        except OSError:  # the client went away
            writer.close()
            return
        writer.write(
            f"HTTP/1.1 {status} {_STATUS.get(status, 'Error')}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        )
        if method != "HEAD":
            writer.write(body)
        try:
            await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def start(self, host: str, port: int) -> asyncio.Server:
        return await asyncio.start_server(self.serve_client, host, port, limit=MAX_REQUEST)


def _json(status: int, payload: object) -> Response:
    return status, "application/json", json.dumps(payload).encode() + b"\n"
