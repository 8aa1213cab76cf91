"""Signed, expiring self-service links: the carrier's portal asks the API
for one and sends the subscriber there. No passwords in this project."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import secrets


class BadLink(ValueError):
    pass


class LinkSigner:
    def __init__(self, secret: bytes, base_url: str, ttl: float) -> None:
        self.secret = secret
        self.base_url = base_url.rstrip("/")
        self.ttl = ttl

    def token(self, number: int, expires: int) -> str:
        text = f"{number}.{expires}"
        mac = hmac.new(self.secret, text.encode(), hashlib.sha256).digest()[:16]
        return f"{text}.{base64.urlsafe_b64encode(mac).decode().rstrip('=')}"

    def link(self, number: int, now: float) -> tuple[str, int]:
        expires = int(now + self.ttl)
        return f"{self.base_url}/self-service?t={self.token(number, expires)}", expires

    def verify(self, token: str, now: float) -> int:
        """The subscriber number a valid token is for."""
        if not token.isascii():
            raise BadLink("this link is not valid")
        parts = token.split(".")
        if len(parts) != 3 or not all(p.isascii() and p.isdigit() for p in parts[:2]):
            raise BadLink("this link is not valid")
        number, expires = int(parts[0]), int(parts[1])
        if not hmac.compare_digest(self.token(number, expires), token):
            raise BadLink("this link is not valid")
        if now > expires:
            raise BadLink("this link has expired; ask for a new one from your account page")
        return number


LINK_SECRET_ENV = "ROBOCALL_SHIELD_LINK_SECRET"


def link_secret(configured: str) -> bytes:
    """The key of self-service links: [subscribers] link_secret, else the
    environment, else (with a warning) random: links then stop working at
    restart."""
    secret = configured or os.environ.get(LINK_SECRET_ENV, "")
    if secret:
        return secret.encode()
    logging.getLogger("robocall_shield").warning(
        "no [subscribers] link_secret or %s: self-service links stop working at restart",
        LINK_SECRET_ENV,
    )
    return secrets.token_bytes(32)
