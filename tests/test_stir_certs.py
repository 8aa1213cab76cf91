"""The STI certificate fetcher and cache (issue 8, parts 2 and 3): a real
HTTPS server on 127.0.0.1 with a throwaway CA, and injected clocks for the
cache's lifetimes. The tests run on the stdlib loop; the main paths run
again on uvloop, which the proxy runs on."""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import Awaitable, Callable, Iterator

import pytest
import uvloop
from cryptography.hazmat.primitives import serialization

from proxy.stir.certs import (
    CertEntry,
    CertificateCache,
    FetchError,
    FetchResult,
    HttpsFetcher,
    freshness,
    parse_head,
)
from tests.https_server import HttpsServer, Route, ThrowawayCA, dead_port

PEM = b"-----BEGIN CERTIFICATE-----\nnot parsed by the fake load_key\n-----END CERTIFICATE-----\n"


@pytest.fixture(scope="module")
def ca() -> ThrowawayCA:
    return ThrowawayCA()


@pytest.fixture(scope="module")
def server(ca: ThrowawayCA) -> Iterator[HttpsServer]:
    with HttpsServer(ca) as srv:
        yield srv


@pytest.fixture(autouse=True)
def _fresh_routes(server: HttpsServer) -> None:
    server.reset()


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Refused(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def fake_key(body: bytes, now: float) -> object:
    return ("key", body)


def fetcher_for(server: HttpsServer, **kwargs: float) -> HttpsFetcher:
    return HttpsFetcher(allow_private=True, cafile=server.cafile, **kwargs)  # type: ignore[arg-type]


async def fetch_error(fetch: Callable[[str], Awaitable[FetchResult]], url: str) -> FetchError:
    with pytest.raises(FetchError) as info:
        await fetch(url)
    return info.value


async def drain(cache: CertificateCache) -> None:
    """Wait (bounded) for the cache's background fetches to finish."""
    for _ in range(500):
        if cache.pending == 0:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("background fetches still running after 5 s")


# --- the fetcher against the local server ------------------------------------


async def test_fetch_returns_body_and_freshness(server: HttpsServer) -> None:
    server.routes["/c.pem"] = Route(body=PEM, headers=(("Cache-Control", "public, max-age=600"),))
    result = await fetcher_for(server)(server.url("/c.pem"))
    assert result == FetchResult(PEM, 600.0)
    assert server.requests("/c.pem") == 1


async def test_fetch_by_name_and_chunked(server: HttpsServer) -> None:
    body = PEM * 40  # several 1000-byte chunks
    server.routes["/chunked.pem"] = Route(body=body, framing="chunked")
    server.routes["/close.pem"] = Route(body=body, framing="close")
    fetch = fetcher_for(server)
    assert (await fetch(server.url("/chunked.pem", host="localhost"))).body == body
    result = await fetch(server.url("/close.pem"))
    assert result == FetchResult(body, None)


async def test_non_200_and_redirect_are_failures(server: HttpsServer) -> None:
    server.routes["/moved"] = Route(status=301, headers=(("Location", "https://example.com/"),))
    fetch = fetcher_for(server)
    assert (await fetch_error(fetch, server.url("/missing"))).reason == "http-status"
    assert (await fetch_error(fetch, server.url("/moved"))).reason == "http-status"


async def test_hanging_server_cut_at_timeout(server: HttpsServer) -> None:
    server.routes["/hang"] = Route(hang=True)
    fetch = fetcher_for(server, timeout=0.3)
    started = time.monotonic()
    assert (await fetch_error(fetch, server.url("/hang"))).reason == "timeout"
    assert 0.25 <= time.monotonic() - started < 1.5


async def test_trickling_server_cut_at_timeout(server: HttpsServer) -> None:
    # Every byte arrives well within any per-read timeout; only the total bounds it.
    server.routes["/trickle"] = Route(body=PEM * 10, trickle=0.02)
    fetch = fetcher_for(server, timeout=0.3)
    started = time.monotonic()
    assert (await fetch_error(fetch, server.url("/trickle"))).reason == "timeout"
    assert 0.25 <= time.monotonic() - started < 1.5


async def test_dead_port_fails_fast(server: HttpsServer) -> None:
    fetch = fetcher_for(server, timeout=5.0)
    started = time.monotonic()
    error = await fetch_error(fetch, f"https://127.0.0.1:{dead_port()}/c.pem")
    assert error.reason == "refused"
    assert time.monotonic() - started < 1.0  # not the timeout: the refusal itself


@pytest.mark.parametrize("framing", ["length", "chunked", "close"])
async def test_oversize_body_refused(server: HttpsServer, framing: str) -> None:
    server.routes["/big"] = Route(body=b"x" * (64 * 1024 + 1), framing=framing)
    server.routes["/fits"] = Route(body=b"x" * (64 * 1024), framing=framing)
    fetch = fetcher_for(server)
    assert (await fetch_error(fetch, server.url("/big"))).reason == "too-large"
    assert len((await fetch(server.url("/fits"))).body) == 64 * 1024


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 200 OK\r\nX-Padding: " + b"a" * 20000 + b"\r\n\r\n",  # head over 16 KiB
        b"SSH-2.0-OpenSSH_9.2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\ntruncated",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXY0\r\n\r\n",
        b"",  # closed without a word
    ],
)
async def test_malformed_responses_refused(server: HttpsServer, raw: bytes) -> None:
    server.routes["/raw"] = Route(raw=raw)
    assert (await fetch_error(fetcher_for(server), server.url("/raw"))).reason == "bad-response"


async def test_untrusted_server_is_a_tls_failure(server: HttpsServer) -> None:
    server.routes["/c.pem"] = Route(body=PEM)
    other = ThrowawayCA("another CA")
    with HttpsServer(other) as stranger:
        stranger.routes["/c.pem"] = Route(body=PEM)
        # The system store does not know our CA; nor does a cafile of another.
        fetch = HttpsFetcher(allow_private=True)
        assert (await fetch_error(fetch, server.url("/c.pem"))).reason == "tls"
        assert (await fetch_error(fetcher_for(server), stranger.url("/c.pem"))).reason == "tls"


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/c.pem",
        "https://localhost/c.pem",
        "https://10.1.2.3/c.pem",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/c.pem",
        "https://[::ffff:127.0.0.1]/c.pem",
        "https://224.0.0.1/c.pem",
        "https://0.0.0.0/c.pem",
    ],
)
async def test_private_addresses_refused(url: str) -> None:
    # Refused before any connection: nothing is contacted.
    error = await fetch_error(HttpsFetcher(timeout=1.0), url)
    assert error.reason == "private-address"


async def test_private_address_refused_at_the_real_server(server: HttpsServer) -> None:
    server.routes["/c.pem"] = Route(body=PEM)
    fetch = HttpsFetcher(cafile=server.cafile)
    assert (await fetch_error(fetch, server.url("/c.pem"))).reason == "private-address"
    assert server.requests("/c.pem") == 0


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1/c.pem", "scheme"),
        ("ftp://127.0.0.1/c.pem", "scheme"),
        ("https:///c.pem", "bad-url"),
        ("https://user:pw@127.0.0.1/c.pem", "bad-url"),
        ("https://127.0.0.1:99999/c.pem", "bad-url"),
        ("https://127.0.0.1/a b", "bad-url"),
    ],
)
async def test_bad_urls_refused(url: str, reason: str) -> None:
    fetch = HttpsFetcher(allow_private=True, timeout=1.0)
    assert (await fetch_error(fetch, url)).reason == reason


async def test_plain_http_only_when_allowed(ca: ThrowawayCA) -> None:
    with HttpsServer(ca, tls=False) as plain:
        plain.routes["/c.pem"] = Route(body=PEM)
        fetch = HttpsFetcher(allow_private=True, allow_http=True)
        assert (await fetch(plain.url("/c.pem"))).body == PEM


def test_response_head_and_freshness_parsing() -> None:
    status, headers = parse_head(
        b"HTTP/1.1 200 OK\r\nCache-Control: max-age=300\r\nCache-Control: s-maxage=100\r\n"
        b"Age: 40\r\n\r\n"
    )
    assert status == 200
    assert freshness(headers) == 60.0  # s-maxage (we are a shared cache) less Age
    assert freshness({"cache-control": "max-age=300"}) == 300.0
    assert freshness({"cache-control": "no-cache, max-age=300"}) == 0.0
    assert freshness({"cache-control": "no-store"}) == 0.0
    assert freshness({"cache-control": "max-age=soon"}) == 0.0
    assert freshness({"cache-control": "public"}) is None
    assert freshness({}) is None
    for bad in (
        b"HTTP/2 200\r\n\r\n",
        b"ICY 200 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nNoColon\r\n\r\n",
    ):
        with pytest.raises(FetchError):
            parse_head(bad)
    with pytest.raises(FetchError):
        parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")


# --- the cache, over the real fetcher ----------------------------------------


async def test_fetch_then_cache_hit(server: HttpsServer) -> None:
    server.routes["/c.pem"] = Route(body=PEM)
    seen: list[tuple[float, bool]] = []
    cache = CertificateCache(
        fetcher_for(server), fake_key, on_fetch=lambda s, ok: seen.append((s, ok))
    )
    url = server.url("/c.pem")
    assert cache.lookup(url) is None
    entry = await cache.get(url)
    assert entry.key == ("key", PEM) and entry.error is None
    assert cache.lookup(url) is entry
    assert await cache.get(url) is entry
    assert server.requests("/c.pem") == 1
    assert (cache.hits, cache.misses, cache.fetches, cache.fetch_errors) == (1, 1, 1, 0)
    assert len(seen) == 1 and seen[0][1] is True and 0 <= seen[0][0] < 2


async def test_cache_control_max_age_honoured(server: HttpsServer) -> None:
    server.routes["/short.pem"] = Route(body=PEM, headers=(("Cache-Control", "max-age=120"),))
    server.routes["/plain.pem"] = Route(body=PEM)
    server.routes["/nocache.pem"] = Route(body=PEM, headers=(("Cache-Control", "no-cache"),))
    server.routes["/long.pem"] = Route(body=PEM, headers=(("Cache-Control", "max-age=999999"),))
    clock = Clock()
    cache = CertificateCache(
        fetcher_for(server), fake_key, clock=clock, default_ttl=3600, max_ttl=86400
    )
    lifetimes = {}
    for path in ("/short.pem", "/plain.pem", "/nocache.pem", "/long.pem"):
        lifetimes[path] = (await cache.get(server.url(path))).expires - clock.now
    assert lifetimes == {
        "/short.pem": 120,
        "/plain.pem": 3600,  # default_ttl when the server says nothing
        "/nocache.pem": 60,  # min_ttl: the hot path cannot fetch on every call
        "/long.pem": 86400,  # max_ttl
    }
    clock.now += 119
    assert cache.lookup(server.url("/short.pem")) is not None
    clock.now += 2
    assert cache.lookup(server.url("/short.pem")) is None
    await cache.get(server.url("/short.pem"))
    assert server.requests("/short.pem") == 2
    assert server.requests("/plain.pem") == 1


async def test_lifetime_capped_at_certificate_expiry(server: HttpsServer, ca: ThrowawayCA) -> None:
    cert, _ = ca.issue("SHAKEN 1234", lifetime=datetime.timedelta(seconds=300))
    body = cert.public_bytes(serialization.Encoding.PEM) + ca.pem()
    server.routes["/expiring.pem"] = Route(body=body, headers=(("Cache-Control", "max-age=3600"),))
    cache = CertificateCache(fetcher_for(server), fake_key)
    entry = await cache.get(server.url("/expiring.pem"))
    assert entry.key is not None
    assert 290 < entry.expires - time.monotonic() <= 300


async def test_404_cached_negative_then_retried(server: HttpsServer) -> None:
    clock = Clock()
    cache = CertificateCache(fetcher_for(server), fake_key, clock=clock, negative_ttl=60)
    url = server.url("/late.pem")
    entry = await cache.get(url)
    assert (entry.key, entry.error) == (None, "http-status")
    assert cache.lookup(url) is entry
    assert await cache.get(url) is entry
    assert server.requests("/late.pem") == 1
    assert (cache.negative_hits, cache.fetch_errors) == (1, 1)
    server.routes["/late.pem"] = Route(body=PEM)
    clock.now += 59
    assert cache.lookup(url) is entry
    clock.now += 2
    assert cache.lookup(url) is None
    assert (await cache.get(url)).key == ("key", PEM)
    assert server.requests("/late.pem") == 2


async def test_load_key_refusal_cached_negative_then_retried(server: HttpsServer) -> None:
    server.routes["/c.pem"] = Route(body=PEM)
    clock = Clock()
    verdicts: list[object] = [Refused("unknown-ca"), ValueError("garbage"), "the key"]

    def load_key(body: bytes, now: float) -> object:
        verdict = verdicts.pop(0)
        if isinstance(verdict, Exception):
            raise verdict
        return verdict

    cache = CertificateCache(fetcher_for(server), load_key, clock=clock, negative_ttl=30)
    url = server.url("/c.pem")
    assert (await cache.get(url)).error == "unknown-ca"
    assert (await cache.get(url)).error == "unknown-ca"  # cached, not refetched
    clock.now += 31
    assert (await cache.get(url)).error == "invalid-certificate"  # no reason attribute
    clock.now += 31
    assert (await cache.get(url)).key == "the key"
    assert server.requests("/c.pem") == 3
    assert (cache.invalid, cache.fetch_errors) == (2, 0)


async def test_concurrent_gets_share_one_fetch(server: HttpsServer) -> None:
    server.routes["/c.pem"] = Route(body=PEM, delay=0.1)
    cache = CertificateCache(fetcher_for(server), fake_key)
    url = server.url("/c.pem")
    entries = await asyncio.gather(*(cache.get(url) for _ in range(20)))
    assert server.requests("/c.pem") == 1
    assert cache.fetches == 1
    assert all(entry is entries[0] for entry in entries)
    assert entries[0].key == ("key", PEM)


async def test_cancelled_waiter_does_not_cancel_shared_fetch(server: HttpsServer) -> None:
    server.routes["/slow.pem"] = Route(body=PEM, delay=0.3)
    cache = CertificateCache(fetcher_for(server), fake_key)
    url = server.url("/slow.pem")
    impatient = asyncio.wait_for(cache.get(url), 0.05)
    patient = asyncio.wait_for(cache.get(url), 2.0)
    started = time.monotonic()
    first, second = await asyncio.gather(impatient, patient, return_exceptions=True)
    assert isinstance(first, TimeoutError)
    assert isinstance(second, CertEntry) and second.key == ("key", PEM)
    assert server.requests("/slow.pem") == 1
    assert time.monotonic() - started < 1.5


async def test_budget_on_a_hanging_server_leaves_fetch_to_its_timeout(
    server: HttpsServer,
) -> None:
    server.routes["/hang"] = Route(hang=True)
    cache = CertificateCache(fetcher_for(server, timeout=1.0), fake_key)
    url = server.url("/hang")
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):  # the per-call budget
            await cache.get(url)
    assert time.monotonic() - started < 0.5
    assert cache.pending == 1 and cache.fetches == 0  # goes on in the background
    await drain(cache)
    entry = cache.lookup(url)
    assert entry is not None and entry.error == "timeout"


async def test_hanging_server_holds_up_no_other_url(server: HttpsServer) -> None:
    server.routes["/hang"] = Route(hang=True)
    server.routes["/c.pem"] = Route(body=PEM)
    cache = CertificateCache(fetcher_for(server, timeout=1.0), fake_key)
    cache.prefetch(server.url("/hang"))
    started = time.monotonic()
    entry = await asyncio.wait_for(cache.get(server.url("/c.pem")), 0.5)
    assert entry.key == ("key", PEM)
    assert time.monotonic() - started < 0.5
    assert cache.pending == 1  # the hanging one, still within its timeout
    cache.close()


async def test_prefetch_then_lookup_hits(server: HttpsServer) -> None:
    server.routes["/c.pem"] = Route(body=PEM, delay=0.05)
    cache = CertificateCache(fetcher_for(server), fake_key)
    url = server.url("/c.pem")
    assert cache.lookup(url) is None
    cache.prefetch(url)
    cache.prefetch(url)  # already running: no second fetch
    assert cache.pending == 1
    await drain(cache)
    entry = cache.lookup(url)
    assert entry is not None and entry.key == ("key", PEM)
    cache.prefetch(url)  # fresh: nothing to do
    assert cache.pending == 0
    assert server.requests("/c.pem") == 1


# --- the cache alone, over a fake fetch ---------------------------------------


class FakeFetch:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.release = asyncio.Event()
        self.block = False

    async def __call__(self, url: str) -> FetchResult:
        self.calls.append(url)
        if self.block:
            await asyncio.wait_for(self.release.wait(), 5)
        return FetchResult(url.encode(), None)


async def test_lru_bound_evicts_least_recently_used() -> None:
    fetch = FakeFetch()
    cache = CertificateCache(fetch, fake_key, max_entries=2)
    await cache.get("https://a/")
    await cache.get("https://b/")
    assert cache.lookup("https://a/") is not None  # a is now the more recent
    await cache.get("https://c/")
    assert len(cache) == 2
    assert cache.lookup("https://b/") is None
    assert cache.lookup("https://a/") is not None
    assert cache.lookup("https://c/") is not None
    await cache.get("https://b/")
    assert fetch.calls == ["https://a/", "https://b/", "https://c/", "https://b/"]


async def test_fetches_bounded_beyond_is_busy() -> None:
    fetch = FakeFetch()
    fetch.block = True
    clock = Clock()
    cache = CertificateCache(fetch, fake_key, max_fetches=2, busy_ttl=1.0, clock=clock)
    cache.prefetch("https://a/")
    cache.prefetch("https://b/")
    cache.prefetch("https://c/")
    busy = await cache.get("https://d/")
    assert busy.error == "busy" and cache.busy == 2
    entry = cache.lookup("https://c/")
    assert entry is not None and entry.error == "busy"
    assert cache.pending == 2
    fetch.release.set()
    await drain(cache)
    clock.now += 1.5
    assert (await cache.get("https://c/")).key == ("key", b"https://c/")
    assert fetch.calls == ["https://a/", "https://b/", "https://c/"]


async def test_close_cancels_pending_fetches() -> None:
    fetch = FakeFetch()
    fetch.block = True
    cache = CertificateCache(fetch, fake_key)
    waiter = asyncio.ensure_future(cache.get("https://a/"))
    cache.prefetch("https://b/")
    await asyncio.sleep(0.01)
    assert cache.pending == 2
    cache.close()
    assert cache.pending == 0
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert (await cache.get("https://a/")).error == "closed"
    cache.prefetch("https://c/")
    assert cache.pending == 0 and len(cache) == 0


async def test_fetcher_exception_without_reason_and_failing_hook() -> None:
    async def broken(url: str) -> FetchResult:
        raise RuntimeError("boom")

    def hook(seconds: float, ok: bool) -> None:
        raise ZeroDivisionError

    cache = CertificateCache(broken, fake_key, on_fetch=hook)
    assert (await cache.get("https://a/")).error == "fetch-error"


# --- the same on uvloop --------------------------------------------------------


def test_main_paths_on_uvloop(server: HttpsServer) -> None:
    server.routes["/c.pem"] = Route(body=PEM, headers=(("Cache-Control", "max-age=600"),))
    server.routes["/chunked.pem"] = Route(body=PEM * 40, framing="chunked")
    server.routes["/big"] = Route(body=b"x" * (64 * 1024 + 1), framing="close")
    server.routes["/hang"] = Route(hang=True)
    server.routes["/slow.pem"] = Route(body=PEM, delay=0.3)

    async def scenario() -> None:
        fetch = fetcher_for(server, timeout=0.3)
        assert await fetch(server.url("/c.pem")) == FetchResult(PEM, 600.0)
        assert (await fetch(server.url("/chunked.pem", host="localhost"))).body == PEM * 40
        assert (await fetch_error(fetch, server.url("/big"))).reason == "too-large"
        assert (await fetch_error(fetch, server.url("/missing"))).reason == "http-status"
        started = time.monotonic()
        assert (await fetch_error(fetch, server.url("/hang"))).reason == "timeout"
        assert time.monotonic() - started < 1.5
        refused = await fetch_error(fetch, f"https://127.0.0.1:{dead_port()}/")
        assert refused.reason == "refused"
        untrusted = HttpsFetcher(allow_private=True)
        assert (await fetch_error(untrusted, server.url("/c.pem"))).reason == "tls"
        private = HttpsFetcher(cafile=server.cafile)
        assert (await fetch_error(private, server.url("/c.pem"))).reason == "private-address"

        cache = CertificateCache(fetcher_for(server), fake_key)
        url = server.url("/slow.pem")
        results = await asyncio.gather(
            asyncio.wait_for(cache.get(url), 0.05),
            *(asyncio.wait_for(cache.get(url), 2.0) for _ in range(5)),
            return_exceptions=True,
        )
        assert isinstance(results[0], TimeoutError)
        assert all(isinstance(r, CertEntry) and r.key == ("key", PEM) for r in results[1:])
        assert server.requests("/slow.pem") == 1

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(scenario())
