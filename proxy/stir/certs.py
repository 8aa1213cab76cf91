"""STI certificates fetched from a PASSporT's x5u (or Identity info) URL,
validated by an injected callable and cached in memory.

The hot path only ever calls :meth:`CertificateCache.lookup`: a dict lookup,
no I/O. A miss either waits on :meth:`CertificateCache.get` within the
operator's budget or calls :meth:`CertificateCache.prefetch` and screens the
call as unverified; either way, every caller of one URL shares a single
fetch, and a caller that gives up (its budget ran out) never cancels the
fetch for the others.

The fetcher is plain asyncio streams rather than urllib in a thread pool: a
timeout or a cancellation closes the socket at once, where a thread blocked
in a read can only be abandoned (it holds a pool slot until the socket's
own timeout fires). The only thread it uses is the event loop's resolver.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import ssl
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from cryptography import x509

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class FetchResult:
    """A certificate body as served, and how long the server lets us keep it
    (seconds; 0 for no-store or no-cache; None when it did not say)."""

    body: bytes
    max_age: float | None


@dataclass(frozen=True, slots=True)
class CertEntry:
    """A cached outcome for one URL: the validated public key, or the reason
    it could not be had. ``expires`` is on the cache's (monotonic) clock."""

    key: object | None
    error: str | None
    expires: float
    # the certificate was fetched and refused (an untrusted or broken chain),
    # as opposed to not fetched at all: a verifier counts only this as failed
    refused: bool = False


class FetchError(Exception):
    """A fetch that failed, with a short machine-readable ``reason``:
    bad-url, scheme, dns, private-address, refused, connect, tls, timeout,
    http-status, too-large, bad-response."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def reason_of(exc: BaseException, default: str) -> str:
    """The ``reason`` attribute of an exception when it has a string one."""
    reason = getattr(exc, "reason", None)
    return reason if isinstance(reason, str) and reason else default


# --- the cache ---------------------------------------------------------------


class CertificateCache:
    """A bounded LRU of certificate outcomes, keyed by URL.

    Positive entries live for the server's Cache-Control freshness (s-maxage
    over max-age, less the Age header), ``default_ttl`` when it gave none,
    clamped to [``min_ttl``, ``max_ttl``] and never past the earliest
    notAfter in the chain. ``no-store``, ``no-cache`` and ``max-age=0`` are
    kept for ``min_ttl`` (60 s) all the same: honouring them literally would
    mean one HTTPS fetch per INVITE, which is exactly what the cache is for
    avoiding, and RFC 8224 verifiers may cache a certificate for its
    lifetime. Set ``min_ttl=0`` to honour them (each call then waits on, or
    goes unverified for, its own fetch).

    Failures (fetch or validation) are cached for ``negative_ttl``, so a dead
    certificate server costs one fetch a minute, not one per call. When
    ``max_fetches`` fetches are already running, a new URL gets a "busy"
    negative entry for ``busy_ttl`` instead of a queue slot.

    Counters are plain ints for the metrics exporter: ``hits``, ``misses``
    and ``negative_hits`` are counted by :meth:`lookup` only (the hot path
    looks up first and calls :meth:`get` or :meth:`prefetch` on a miss, so
    counting in both would count a miss twice); ``fetches`` (completed, so
    fetches - fetch_errors - invalid is the ones that gave a key),
    ``fetch_errors`` (the fetch failed), ``invalid`` (fetched, but
    ``load_key`` refused it) and ``busy`` (refused at ``max_fetches``). ``on_fetch`` is
    called with each fetch's duration and whether the fetch succeeded.
    """

    def __init__(
        self,
        fetch: Callable[[str], Awaitable[FetchResult]],
        load_key: Callable[[bytes, float], object],
        *,
        max_entries: int = 1000,
        default_ttl: float = 3600,
        min_ttl: float = 60,
        max_ttl: float = 86400,
        negative_ttl: float = 60,
        busy_ttl: float = 1.0,
        max_fetches: int = 32,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        on_fetch: Callable[[float, bool], None] | None = None,
    ) -> None:
        if max_entries < 1 or max_fetches < 1:
            raise ValueError("max_entries and max_fetches must be at least 1")
        if not 0 <= min_ttl <= max_ttl:
            raise ValueError("need 0 <= min_ttl <= max_ttl")
        self._fetch = fetch
        self._load_key = load_key
        self.max_entries = max_entries
        self.default_ttl = default_ttl
        self.min_ttl = min_ttl
        self.max_ttl = max_ttl
        self.negative_ttl = negative_ttl
        self.busy_ttl = busy_ttl
        self.max_fetches = max_fetches
        self._clock = clock
        self._wall = wall
        self._on_fetch = on_fetch
        self._entries: OrderedDict[str, CertEntry] = OrderedDict()
        # One task per URL being fetched; a task removes itself when done,
        # and this dict is what keeps it from being garbage collected.
        self._pending: dict[str, asyncio.Task[CertEntry]] = {}
        self._closed = False
        self.hits = 0
        self.misses = 0
        self.negative_hits = 0
        self.fetches = 0
        self.fetch_errors = 0
        self.invalid = 0
        self.busy = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def pending(self) -> int:
        """Fetches running now."""
        return len(self._pending)

    def lookup(self, url: str) -> CertEntry | None:
        """The fresh entry for ``url`` (positive or negative), or None. For
        the hot path: O(1), no I/O, counted."""
        entry = self._fresh(url)
        if entry is None:
            self.misses += 1
        elif entry.key is None:
            self.negative_hits += 1
        else:
            self.hits += 1
        return entry

    async def get(self, url: str) -> CertEntry:
        """The fresh entry for ``url``, else the outcome of the shared fetch
        (started here if none is running). Cancelling the caller, e.g. by
        ``asyncio.timeout``, leaves the fetch running for the others."""
        entry = self._fresh(url)
        if entry is not None:
            return entry
        started = self._start(url)
        if isinstance(started, CertEntry):
            return started
        return await asyncio.shield(started)

    def prefetch(self, url: str) -> None:
        """Start the shared fetch for ``url`` in the background, unless one is
        running or a fresh entry is cached ("unverified now, verified next
        time"). Must be called from the event loop."""
        if self._fresh(url) is None:
            self._start(url)

    def close(self) -> None:
        """Cancel the running fetches (at shutdown); later calls fetch nothing."""
        self._closed = True
        for task in list(self._pending.values()):
            task.cancel()
        self._pending.clear()

    def _fresh(self, url: str) -> CertEntry | None:
        entry = self._entries.get(url)
        if entry is None:
            return None
        if entry.expires <= self._clock():
            del self._entries[url]
            return None
        self._entries.move_to_end(url)
        return entry

    def _store(self, url: str, entry: CertEntry) -> None:
        self._entries[url] = entry
        self._entries.move_to_end(url)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def _start(self, url: str) -> asyncio.Task[CertEntry] | CertEntry:
        """The running fetch for ``url``, a new one, or a negative entry when
        closed or at the concurrency bound."""
        task = self._pending.get(url)
        if task is not None:
            return task
        if self._closed:
            return CertEntry(None, "closed", self._clock())
        if len(self._pending) >= self.max_fetches:
            self.busy += 1
            entry = CertEntry(None, "busy", self._clock() + self.busy_ttl)
            self._store(url, entry)
            return entry
        task = asyncio.get_running_loop().create_task(
            self._run(url), name=f"stir-cert-fetch {url[:80]}"
        )
        self._pending[url] = task
        return task

    async def _run(self, url: str) -> CertEntry:
        try:
            entry = await self._fetch_and_validate(url)
        finally:
            # Only our own task: close() may have replaced it meanwhile.
            if self._pending.get(url) is asyncio.current_task():
                del self._pending[url]
        if not self._closed:
            self._store(url, entry)
        return entry

    async def _fetch_and_validate(self, url: str) -> CertEntry:
        started = self._clock()
        try:
            result = await self._fetch(url)
        except Exception as exc:  # any fetcher failure is a negative entry
            self.fetches += 1
            self.fetch_errors += 1
            self._report(self._clock() - started, ok=False)
            log.info("certificate fetch failed for %s: %s", url, exc)
            return self._negative(reason_of(exc, "fetch-error"))
        self.fetches += 1
        self._report(self._clock() - started, ok=True)
        now = self._wall()
        try:
            key = self._load_key(result.body, now)
        except Exception as exc:  # the validator's refusal, whatever its type
            self.invalid += 1
            log.info("certificate from %s refused: %s", url, exc)
            return self._negative(reason_of(exc, "invalid-certificate"), refused=True)
        return CertEntry(key, None, self._clock() + self._ttl(result, now))

    def _ttl(self, result: FetchResult, now: float) -> float:
        ttl = self.default_ttl if result.max_age is None else result.max_age
        ttl = min(max(ttl, self.min_ttl), self.max_ttl)
        not_after = earliest_not_after(result.body)
        if not_after is not None:
            # A key must not outlive its certificate, whatever the server says.
            ttl = min(ttl, max(0.0, not_after - now))
        return ttl

    def _negative(self, reason: str, refused: bool = False) -> CertEntry:
        return CertEntry(None, reason, self._clock() + self.negative_ttl, refused)

    def _report(self, seconds: float, *, ok: bool) -> None:
        if self._on_fetch is None:
            return
        try:
            self._on_fetch(seconds, ok)
        except Exception:  # a metrics hook must not fail the fetch for every waiter
            log.exception("certificate fetch hook failed")


def earliest_not_after(body: bytes) -> float | None:
    """The earliest notAfter (POSIX seconds) of the PEM certificates in
    ``body``, or None when it holds none that parse."""
    try:
        certs = x509.load_pem_x509_certificates(body)
    except ValueError:
        return None
    return min(cert.not_valid_after_utc.timestamp() for cert in certs)


# --- the fetcher -------------------------------------------------------------

_ACCEPT = "application/pem-certificate-chain, application/x-pem-file;q=0.9, */*;q=0.5"


class HttpsFetcher:
    """GET one certificate URL over HTTPS, bounded in time and size.

    - Only https (http with ``allow_http``); default port 443.
    - The host is resolved once and every address checked: loopback,
      private, link-local, multicast, reserved and unspecified addresses are
      refused unless ``allow_private`` (a PASSporT names the URL, so an
      unchecked fetch would let any caller make the proxy probe the
      operator's own network). The connection goes to the checked address,
      so a second resolution cannot swap in another one.
    - The server is verified against the system trust store, or ``cafile``.
    - Redirects are not followed: a 3xx is an ``http-status`` failure like
      any status but 200. Certificate repositories serve the URL they sign
      into the PASSporT; following a Location would reopen the address
      checks for a second host within the same time budget.
    - ``timeout`` bounds everything, resolution to last byte; a server that
      accepts and never answers, or trickles, is cut there. The body is
      capped at ``max_bytes`` (Content-Length, chunked or read to close).
    """

    def __init__(
        self,
        *,
        timeout: float = 2.0,
        max_bytes: int = 64 * 1024,
        max_header_bytes: int = 16 * 1024,
        allow_http: bool = False,
        allow_private: bool = False,
        cafile: str | None = None,
    ) -> None:
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.max_header_bytes = max_header_bytes
        self.allow_http = allow_http
        self.allow_private = allow_private
        self._ssl = ssl.create_default_context(cafile=cafile)

    async def __call__(self, url: str) -> FetchResult:
        try:
            async with asyncio.timeout(self.timeout):
                return await self._get(url)
        except TimeoutError:
            raise FetchError("timeout", f"no complete answer in {self.timeout:g} s") from None

    async def _get(self, url: str) -> FetchResult:
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise FetchError("bad-url", str(exc)) from None
        scheme = parts.scheme.lower()
        if scheme != "https" and not (scheme == "http" and self.allow_http):
            raise FetchError("scheme", repr(parts.scheme))
        host = parts.hostname
        if not host or parts.username is not None or parts.password is not None:
            raise FetchError("bad-url", "no host, or credentials in the URL")
        port = port or (443 if scheme == "https" else 80)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if not (path + parts.netloc).isascii() or any(c <= " " or c == "\x7f" for c in path):
            raise FetchError("bad-url", "a non-ASCII host, or a space or control in the path")
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nAccept: {_ACCEPT}\r\n"
            "User-Agent: robocall-shield\r\nConnection: close\r\n\r\n"
        ).encode("ascii")
        addresses = await self._resolve(host, port)
        reader, writer = await self._connect(addresses, host, port, scheme == "https")
        try:
            writer.write(request)
            await writer.drain()
            result = await self._read_response(reader)
        except ssl.SSLError as exc:
            raise FetchError("tls", str(exc)) from None
        except (asyncio.IncompleteReadError, OSError) as exc:
            raise FetchError("bad-response", f"connection ended early: {exc!r}") from None
        finally:
            # Abort, not close: no TLS close_notify to wait for on a timeout.
            writer.transport.abort()
        return result

    async def _resolve(self, host: str, port: int) -> list[str]:
        try:
            literal = ipaddress.ip_address(host)
        except ValueError:
            pass
        else:
            self._check_address(literal)
            return [str(literal)]
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
            )
        except (OSError, UnicodeError) as exc:
            raise FetchError("dns", f"{host}: {exc}") from None
        addresses: list[str] = []
        for info in infos:
            address = str(info[4][0]).split("%", 1)[0]  # drop an IPv6 zone
            self._check_address(ipaddress.ip_address(address))
            if address not in addresses:
                addresses.append(address)
        if not addresses:
            raise FetchError("dns", f"{host}: no address")
        return addresses

    def _check_address(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
        if self.allow_private:
            return
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if not ip.is_global or ip.is_multicast:
            raise FetchError("private-address", str(ip))

    async def _connect(
        self, addresses: list[str], host: str, port: int, tls: bool
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        failure = FetchError("connect", host)
        for address in addresses:  # in resolver order; the timeout bounds the whole
            try:
                return await asyncio.open_connection(
                    address,
                    port,
                    ssl=self._ssl if tls else None,
                    server_hostname=host if tls else None,
                    limit=self.max_header_bytes,
                )
            except ssl.SSLError as exc:
                raise FetchError("tls", str(exc)) from None
            except ConnectionRefusedError:
                failure = FetchError("refused", f"{address} port {port}")
            except OSError as exc:
                failure = FetchError("connect", f"{address} port {port}: {exc}")
        raise failure

    async def _read_response(self, reader: asyncio.StreamReader) -> FetchResult:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            raise FetchError("bad-response", "headers too long") from None
        status, headers = parse_head(head)
        if status != 200:
            raise FetchError("http-status", str(status))
        encoding = headers.get("transfer-encoding", "").lower()
        if encoding and encoding != "chunked":
            raise FetchError("bad-response", f"transfer-encoding {encoding}")
        if encoding == "chunked":
            body = await self._read_chunked(reader)
        elif "content-length" in headers:
            length = headers["content-length"]
            if not length.isdigit():
                raise FetchError("bad-response", f"content-length {length!r}")
            if int(length) > self.max_bytes:
                raise FetchError("too-large", f"{length} bytes")
            body = await reader.readexactly(int(length))
        else:
            body = await reader.read(self.max_bytes + 1)
            while len(body) <= self.max_bytes:
                more = await reader.read(self.max_bytes + 1 - len(body))
                if not more:
                    break
                body += more
            if len(body) > self.max_bytes:
                raise FetchError("too-large", f"over {self.max_bytes} bytes")
        return FetchResult(body, freshness(headers))

    async def _read_chunked(self, reader: asyncio.StreamReader) -> bytes:
        body = bytearray()
        while True:  # each pass adds a chunk or ends; the cap and the timeout bound it
            line = await self._line(reader)
            size_text = line.split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise FetchError("bad-response", f"chunk size {size_text!r}") from None
            if size == 0:
                break
            if len(body) + size > self.max_bytes:
                raise FetchError("too-large", f"over {self.max_bytes} bytes")
            chunk = await reader.readexactly(size + 2)
            if chunk[-2:] != b"\r\n":
                raise FetchError("bad-response", "chunk not followed by CRLF")
            body += chunk[:-2]
        for _ in range(64):  # trailer fields, up to the blank line
            if not await self._line(reader):
                return bytes(body)
        raise FetchError("bad-response", "too many trailer fields")

    async def _line(self, reader: asyncio.StreamReader) -> bytes:
        try:
            return (await reader.readuntil(b"\r\n"))[:-2]
        except asyncio.LimitOverrunError:
            raise FetchError("bad-response", "line too long") from None


def parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    """Status code and headers (lower-cased names; repeats joined by commas)
    of a response head ending in CRLF CRLF."""
    try:
        text = head.decode("latin-1")
        status_line, *lines = text[:-4].split("\r\n")
        version, code, *_ = status_line.split(" ", 2)
        if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
            raise ValueError(status_line)
    except ValueError as exc:
        raise FetchError("bad-response", f"status line {exc}") from None
    headers: dict[str, str] = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise FetchError("bad-response", f"header line {line[:60]!r}")
        key = name.lower()
        value = value.strip()
        if key == "content-length" and key in headers and headers[key] != value:
            raise FetchError("bad-response", "conflicting content-length")
        headers[key] = (
            f"{headers[key]}, {value}" if key in headers and key != "content-length" else value
        )
    return int(code), headers


def freshness(headers: dict[str, str]) -> float | None:
    """Seconds the response stays fresh for a shared cache (RFC 9111):
    s-maxage, else max-age, less Age; 0 for no-store or no-cache; None when
    Cache-Control says nothing about it."""
    directives: dict[str, str] = {}
    for item in headers.get("cache-control", "").split(","):
        name, _, value = item.strip().partition("=")
        directives[name.strip().lower()] = value.strip().strip('"')
    if "no-store" in directives or "no-cache" in directives:
        return 0.0
    for name in ("s-maxage", "max-age"):
        if name in directives:
            value = directives[name]
            if not value.isdigit():
                return 0.0  # an invalid max-age is stale (RFC 9111 section 4.2.1)
            age = headers.get("age", "0")
            return max(0.0, float(int(value) - (int(age) if age.isdigit() else 0)))
    return None
