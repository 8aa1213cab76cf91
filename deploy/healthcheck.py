"""The container's HEALTHCHECK: GET /healthz from the proxy in this container.

The address, port and scheme come from the same config file `serve` reads
(ROBOCALL_SHIELD_CONFIG), so the check follows [admin] without a second
setting; ROBOCALL_SHIELD_HEALTH_URL overrides it. Exit 0 on 200, else 1 with
the reason printed (`docker inspect` shows it). Only the standard library
and the project's config loader: no curl in the image.
"""

from __future__ import annotations

import os
import ssl
import sys
import urllib.error
import urllib.request

from proxy.config import load_config
from proxy.config_table import ConfigError

CONFIG_ENV = "ROBOCALL_SHIELD_CONFIG"
URL_ENV = "ROBOCALL_SHIELD_HEALTH_URL"
DEFAULT_CONFIG = "/etc/robocall-shield/robocall-shield.toml"
TIMEOUT_SECONDS = 5.0
# a wildcard listener is reached on this container's own loopback
_LOOPBACK_FOR = {"0.0.0.0": "127.0.0.1", "::": "::1"}


def health_url(config_path: str) -> str:
    """The /healthz URL of the admin server that ``config_path`` configures."""
    admin = load_config(config_path).admin
    if not admin.enabled:
        raise ConfigError("admin.enabled", "the admin server is off: there is no /healthz")
    host = _LOOPBACK_FOR.get(admin.host, admin.host)
    if ":" in host:
        host = f"[{host}]"
    scheme = "https" if admin.tls_cert else "http"
    return f"{scheme}://{host}:{admin.port}/healthz"


def _unverified_tls() -> ssl.SSLContext:
    # The certificate names the public host, not loopback; this only asks
    # whether the process in this same container answers.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def check(url: str) -> str | None:
    """None when ``url`` answers 200, else why not."""
    context = _unverified_tls() if url.startswith("https:") else None
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS, context=context) as answer:
            status = int(answer.status)
    except urllib.error.HTTPError as exc:
        return f"{url} answered {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return f"{url}: {exc}"
    return None if status == 200 else f"{url} answered {status}"


def main() -> int:
    try:
        url = os.environ.get(URL_ENV) or health_url(os.environ.get(CONFIG_ENV, DEFAULT_CONFIG))
    except ConfigError as exc:
        print(f"unhealthy: config error: {exc}", file=sys.stderr)
        return 1
    problem = check(url)
    if problem is not None:
        print(f"unhealthy: {problem}", file=sys.stderr)
        return 1
    print(f"healthy: {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
