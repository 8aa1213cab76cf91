"""Admin HTTP: /healthz, /readyz and /metrics on a small asyncio server.

Deliberately minimal HTTP/1.1 (one request per connection, bounded size and
time) so the proxy needs no web framework.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from .routing import SwitchPool

MAX_REQUEST = 8192
READ_TIMEOUT = 5.0
Response = tuple[int, str, bytes]
_STATUS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    503: "Service Unavailable",
}


class AdminApi:
    def __init__(self, pool: SwitchPool, registry: CollectorRegistry, started: Callable[[], bool]):
        self.pool = pool
        self.registry = registry
        self.started = started

    def handle(self, method: str, path: str) -> Response:
        path = path.split("?", 1)[0]
        routes = {"/healthz": self._health, "/readyz": self._ready, "/metrics": self._metrics}
        handler = routes.get(path)
        if handler is None:
            return _json(404, {"error": f"no such endpoint {path!r}", "endpoints": sorted(routes)})
        if method not in ("GET", "HEAD"):
            return _json(405, {"error": f"{method} is not allowed; use GET"})
        return handler()

    def _switches(self) -> dict[str, bool]:
        return {s.cfg.name: s.up for s in self.pool.states}

    def _health(self) -> Response:
        return _json(200, {"status": "ok", "switches": self._switches()})

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
            parts = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
            if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
                status, ctype, body = _json(400, {"error": "malformed request line"})
            else:
                method = parts[0]
                status, ctype, body = self.handle(method, parts[1])
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
