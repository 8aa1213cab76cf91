"""A throwaway CA and a small HTTPS server on 127.0.0.1, for the STIR tests.

The server runs its own event loop in a thread, so it serves sync tests and
async tests alike, and its delays do not depend on the test's loop. Each
path answers as its :class:`Route` says (a certificate, a 404, a server that
hangs or trickles), and the server counts the requests per path.

    ca = ThrowawayCA()
    with HttpsServer(ca) as server:
        server.routes["/cert.pem"] = Route(body=pem, headers=(("Cache-Control", "max-age=60"),))
        fetcher = HttpsFetcher(allow_private=True, cafile=server.cafile)
        await fetcher(server.url("/cert.pem"))
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import shutil
import socket
import ssl
import tempfile
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from types import TracebackType

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.stir_ca import issue

HANG_LIMIT = 30.0  # a hanging route answers nothing for at most this long


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class ThrowawayCA:
    """A self-signed P-256 root that issues leaf certificates (built with
    the STI test CA's ``issue``)."""

    def __init__(self, name: str = "robocall-shield throwaway CA") -> None:
        now = datetime.datetime.now(datetime.UTC)
        self.root = issue(
            name,
            None,
            ca=True,
            not_before=now - datetime.timedelta(hours=1),
            not_after=now + datetime.timedelta(days=30),
        )
        self.key = self.root.key
        self.cert = self.root.cert

    def pem(self) -> bytes:
        return self.root.pem

    def issue(
        self,
        common_name: str,
        *,
        hosts: Sequence[str] = (),
        lifetime: datetime.timedelta = datetime.timedelta(days=7),
        server: bool = False,
    ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        """A leaf certificate and its key; ``hosts`` (IP addresses or DNS
        names) go in the subjectAltName, ``server`` adds serverAuth."""
        now = datetime.datetime.now(datetime.UTC)
        extra: list[tuple[x509.ExtensionType, bool]] = [
            (x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), False)
        ]
        if hosts:
            names: list[x509.GeneralName] = []
            for host in hosts:
                try:
                    names.append(x509.IPAddress(ipaddress.ip_address(host)))
                except ValueError:
                    names.append(x509.DNSName(host))
            extra.append((x509.SubjectAlternativeName(names), False))
        if server:
            extra.append((x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False))
        leaf = issue(
            common_name,
            self.root,
            ca=False,
            not_before=now - datetime.timedelta(minutes=5),
            not_after=now + lifetime,
            extra=extra,
        )
        return leaf.cert, leaf.key


@dataclass(frozen=True, slots=True)
class Route:
    """How the server answers one path.

    ``framing`` is how the body's end is marked: "length" (Content-Length),
    "chunked", or "close" (read to the end of the connection). ``delay``
    waits before answering; ``hang`` never answers (until HANG_LIMIT or
    stop); ``trickle`` sends the response a byte at a time, this many
    seconds apart; ``raw``, when set, is sent verbatim instead of a response
    built from the other fields."""

    status: int = 200
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    framing: str = "length"
    delay: float = 0.0
    hang: bool = False
    trickle: float = 0.0
    raw: bytes | None = None


class HttpsServer:
    """HTTPS (or plain HTTP with ``tls=False``) on 127.0.0.1, an ephemeral
    port, in a thread of its own. Unknown paths get a 404."""

    def __init__(self, ca: ThrowawayCA | None = None, *, tls: bool = True) -> None:
        self.ca = ca or ThrowawayCA()
        self.tls = tls
        self.routes: dict[str, Route] = {}
        self._requests: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._dir = Path(tempfile.mkdtemp(prefix="rs-https-"))
        self.cafile = str(self._dir / "ca.pem")
        Path(self.cafile).write_bytes(self.ca.pem())
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._finisher: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}{path}"

    def reset(self) -> None:
        """Forget the routes and the request counts (between tests)."""
        self.routes.clear()
        with self._lock:
            self._requests.clear()

    def requests(self, path: str) -> int:
        with self._lock:
            return self._requests[path]

    def start(self) -> HttpsServer:
        self._thread = threading.Thread(target=self._serve, name="https-test-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(10) or self.port == 0:
            raise RuntimeError("test HTTPS server did not start")
        return self

    def stop(self) -> None:
        loop = self._loop
        if loop is not None and self._thread is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                loop.call_soon_threadsafe(self._shutdown)
            self._thread.join(10)
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> HttpsServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        cert, key = self.ca.issue("127.0.0.1", hosts=("127.0.0.1", "localhost"), server=True)
        certfile, keyfile = self._dir / "server.pem", self._dir / "server.key"
        certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        keyfile.write_bytes(_pem_key(key))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certfile, keyfile)
        return context

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        loop.set_exception_handler(_quiet_handshakes)
        self._loop = loop
        try:
            self._server = loop.run_until_complete(
                asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self._context())
            )
            self.port = self._server.sockets[0].getsockname()[1]
            self._ready.set()
            loop.run_forever()
        finally:
            self._ready.set()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def _shutdown(self) -> None:
        loop = self._loop
        assert loop is not None
        if self._server is not None:
            self._server.close()
        for task in list(self._handlers):
            task.cancel()

        async def finish() -> None:
            if self._handlers:
                await asyncio.wait(list(self._handlers), timeout=5)
            loop.stop()

        self._finisher = loop.create_task(finish())

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            async with asyncio.timeout(HANG_LIMIT + 5):
                await self._answer(reader, writer)
                # Close, not abort: abort would drop what TLS has not sent yet.
                writer.close()
                await writer.wait_closed()
        except (
            asyncio.CancelledError,
            TimeoutError,
            OSError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
        ):
            pass  # the client went away, or the server is stopping
        finally:
            self._handlers.discard(task)
            if not writer.transport.is_closing():
                writer.transport.abort()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        path = head.split(b" ", 2)[1].decode("latin-1")
        with self._lock:
            self._requests[path] += 1
        route = self.routes.get(path, Route(status=404, body=b"not found\n"))
        if route.hang:
            await asyncio.sleep(HANG_LIMIT)
            return
        if route.delay:
            await asyncio.sleep(route.delay)
        response = _response(route) if route.raw is None else route.raw
        if route.trickle:
            for i in range(len(response)):
                writer.write(response[i : i + 1])
                await writer.drain()
                await asyncio.sleep(route.trickle)
        else:
            writer.write(response)
            await writer.drain()


def _quiet_handshakes(loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
    """Drop the loop's reports of handshakes a client broke off (the tests
    of untrusted servers do it on purpose); report anything else."""
    if isinstance(context.get("exception"), (ssl.SSLError, ConnectionError)):
        return
    loop.default_exception_handler(context)


def _response(route: Route) -> bytes:
    try:
        reason = HTTPStatus(route.status).phrase
    except ValueError:
        reason = "Whatever"
    lines = [f"HTTP/1.1 {route.status} {reason}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in route.headers]
    body = route.body
    if route.framing == "length":
        lines.append(f"Content-Length: {len(body)}")
    elif route.framing == "chunked":
        lines.append("Transfer-Encoding: chunked")
        step = 1000
        body = b"".join(
            b"%x\r\n%s\r\n" % (len(body[i : i + step]), body[i : i + step])
            for i in range(0, len(body), step)
        )
        body += b"0\r\n\r\n"
    elif route.framing != "close":
        raise ValueError(f"unknown framing {route.framing!r}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def dead_port() -> int:
    """A loopback TCP port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
