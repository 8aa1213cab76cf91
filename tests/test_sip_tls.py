"""SIP over TLS ([sip] tls_port), and mutual TLS with [sip] tls_peer_ca."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from proxy.config import Config, parse_config
from proxy.config_table import ConfigError
from proxy.server import Worker
from proxy.sip import parse_datagram
from tests.https_server import ThrowawayCA
from tests.sipmsg import request
from tests.test_server import Peer, free_port, open_peer


def write(path: Path, cert: object, key: object) -> tuple[Path, Path]:
    cert_path, key_path = path.with_suffix(".pem"), path.with_suffix(".key")
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))  # type: ignore[attr-defined]
    key_path.write_bytes(
        key.private_bytes(  # type: ignore[attr-defined]
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def config(tmp_path: Path, switch_port: int, **sip: object) -> Config:
    return parse_config(
        {
            "sip": {"host": "127.0.0.1", "port": free_port(), **sip},
            "switches": [{"name": "sw", "host": "127.0.0.1", "port": switch_port}],
            "routing": {"health_checks": False},
            "admin": {"enabled": False},
            "log": {"verdict_log": ""},
            "subscribers": {"data_dir": str(tmp_path)},
        }
    )


@asynccontextmanager
async def tls_worker(
    tmp_path: Path, mutual: bool = False
) -> AsyncIterator[tuple[Worker, Peer, ThrowawayCA, int]]:
    ca = ThrowawayCA()
    cert, key = write(tmp_path / "proxy", *ca.issue("127.0.0.1", hosts=["127.0.0.1"], server=True))
    (tmp_path / "ca.pem").write_bytes(ca.pem())
    switch, switch_port = await open_peer()
    tls_port = free_port()
    sip: dict[str, object] = {"tls_port": tls_port, "tls_cert": str(cert), "tls_key": str(key)}
    if mutual:
        sip["tls_peer_ca"] = str(tmp_path / "ca.pem")
    worker = Worker(config(tmp_path, switch_port, **sip))
    await worker.start()
    try:
        yield worker, switch, ca, tls_port
    finally:
        await worker.stop()
        assert switch.transport is not None
        switch.transport.close()


def client_context(tmp_path: Path, ca: ThrowawayCA, with_cert: bool) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
    if with_cert:
        cert, key = write(tmp_path / "peer", *ca.issue("peer.example.net", hosts=["127.0.0.1"]))
        ctx.load_cert_chain(str(cert), str(key))
    return ctx


async def invite_over_tls(
    port: int, ctx: ssl.SSLContext
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Send an INVITE over a new TLS connection; keep the writer, or the
    connection closes with it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    local = writer.get_extra_info("sockname")[1]
    data = request(
        ruri=f"sip:+13125550187@127.0.0.1:{port};transport=tls",
        via_host=f"127.0.0.1:{local}",
        transport="TLS",
        call_id="tls-1@test",
    )
    writer.write(data)
    await writer.drain()
    return reader, writer


async def test_a_call_over_tls_is_forwarded_and_answered_on_its_connection(
    tmp_path: Path,
) -> None:
    async with tls_worker(tmp_path) as (worker, switch, ca, tls_port):
        reader, writer = await invite_over_tls(tls_port, client_context(tmp_path, ca, False))
        got, addr = await switch.get()
        msg = parse_datagram(got)
        assert msg is not None
        vias = msg.header_values("via")
        assert vias[0].startswith("SIP/2.0/UDP ") and vias[1].startswith("SIP/2.0/TLS ")
        assert "rport=" in vias[1], "a connection's peer always gets rport"
        routes = msg.header_values("record-route")
        assert f"<sip:127.0.0.1:{tls_port};transport=tls;lr>" in routes
        assert len(routes) == 2, "RFC 5658: one Record-Route per transport"
        # the switch answers over UDP; the proxy relays on the TLS connection
        head = got.split(b"\r\n\r\n")[0].split(b"\r\n")[1:]
        keep = [h for h in head if h.split(b":")[0].lower() in (b"via", b"from", b"to",
                                                              b"call-id", b"cseq")]  # fmt: skip
        answer = b"\r\n".join([b"SIP/2.0 200 OK", *keep, b"Content-Length: 0", b"", b""])
        assert switch.transport is not None
        switch.transport.sendto(answer, addr)
        line = await asyncio.wait_for(reader.readline(), 5)
        assert line == b"SIP/2.0 200 OK\r\n"
        assert worker.tls is not None and len(worker.tls.connections) == 1
        writer.close()


async def test_mutual_tls_refuses_a_peer_without_a_certificate(tmp_path: Path) -> None:
    async with tls_worker(tmp_path, mutual=True) as (_, switch, ca, tls_port):
        bare = client_context(tmp_path, ca, with_cert=False)
        with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
            reader, _writer = await invite_over_tls(tls_port, bare)
            # TLS 1.3 reports a missing certificate only on the first read
            if not await asyncio.wait_for(reader.read(1), 5):
                raise ConnectionError("closed without an answer")
        with pytest.raises(TimeoutError):
            await switch.get(timeout=0.5)
        _, writer = await invite_over_tls(tls_port, client_context(tmp_path, ca, with_cert=True))
        got, _ = await switch.get()
        assert got.startswith(b"INVITE ")
        writer.close()


def test_tls_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"sip\.tls_cert"):
        config(tmp_path, 5080, tls_port=5061)
    with pytest.raises(ConfigError, match=r"sip\.tls_port"):
        cert = tmp_path / "c.pem"
        cert.write_text("x")
        config(tmp_path, 5080, port=5061, tls_port=5061, tls_cert=str(cert), tls_key=str(cert))
    with pytest.raises(ConfigError, match=r"sip\.tls_peer_ca"):
        config(tmp_path, 5080, tls_peer_ca=str(tmp_path / "missing.pem"))
