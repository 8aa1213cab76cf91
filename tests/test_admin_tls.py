"""The admin API over HTTPS, when [admin] names a certificate and key."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from proxy.config import Config, parse_config
from proxy.config_table import ConfigError
from proxy.server import StartupError, Worker
from tests.https_server import ThrowawayCA
from tests.test_server import free_port


def write_pair(tmp_path: Path) -> tuple[ThrowawayCA, Path, Path]:
    ca = ThrowawayCA()
    cert, key = ca.issue("127.0.0.1", hosts=["127.0.0.1"], server=True)
    cert_path, key_path = tmp_path / "admin.pem", tmp_path / "admin.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca, cert_path, key_path


def config(tmp_path: Path, admin: dict[str, object]) -> Config:
    return parse_config(
        {
            "sip": {"host": "127.0.0.1", "port": free_port()},
            "admin": {"host": "127.0.0.1", "port": free_port(), **admin},
            "routing": {"health_checks": False},
            "log": {"verdict_log": ""},
            "subscribers": {"data_dir": str(tmp_path)},
        }
    )


async def get(port: int, ctx: ssl.SSLContext | None, path: str) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return data


async def test_the_admin_api_speaks_https(tmp_path: Path) -> None:
    ca, cert, key = write_pair(tmp_path)
    cfg = config(tmp_path, {"tls_cert": str(cert), "tls_key": str(key)})
    assert cfg.public_url.startswith("https://")
    worker = Worker(cfg)
    await worker.start()
    try:
        port = cfg.admin.port
        (tmp_path / "ca.pem").write_bytes(ca.pem())
        client = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
        answer = await get(port, client, "/healthz")
        assert answer.startswith(b"HTTP/1.1 200 ")
        plain = await get(port, None, "/healthz")  # plain HTTP gets no answer
        assert not plain.startswith(b"HTTP/1.1"), plain
    finally:
        await worker.stop()


def test_half_a_pair_is_a_config_error(tmp_path: Path) -> None:
    _, cert, _ = write_pair(tmp_path)
    with pytest.raises(ConfigError, match=r"admin\.tls_key"):
        config(tmp_path, {"tls_cert": str(cert)})
    with pytest.raises(ConfigError, match=r"admin\.tls_cert"):
        config(tmp_path, {"tls_cert": str(tmp_path / "missing.pem"), "tls_key": str(cert)})


async def test_a_key_that_does_not_fit_stops_start_up(tmp_path: Path) -> None:
    _, cert, _ = write_pair(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    _, _, other_key = write_pair(other)
    worker = Worker(config(tmp_path, {"tls_cert": str(cert), "tls_key": str(other_key)}))
    with pytest.raises(StartupError, match="admin TLS"):
        await worker.start()
    await worker.stop()
