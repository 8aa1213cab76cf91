"""`robocall-shield explain NUMBER`: asks the running proxy's admin API
(the score lives in the proxy's memory) and prints the breakdown, which
covers every worker of the node that answered (``workers`` in the answer)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from .config import Config

TOKEN_ENV = "ROBOCALL_SHIELD_TOKEN"


def add_parser(sub: Any) -> None:
    p = sub.add_parser("explain", help="show a number's reputation score, signal by signal")
    p.add_argument("number", help="caller number, E.164 or NANP")
    p.add_argument("--config", help="TOML file naming the admin address and token")
    p.add_argument("--url", help="admin base URL (default: from the config)")
    p.add_argument("--json", action="store_true", help="print the raw JSON answer")


def run(args: argparse.Namespace, cfg: Config) -> int:
    base = args.url or f"http://{cfg.admin.host}:{cfg.admin.port}"
    token = os.environ.get(TOKEN_ENV) or cfg.admin.token
    url = f"{base.rstrip('/')}/admin/reputation/{urllib.parse.quote(args.number, safe='')}"
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            answer = json.load(response)
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace").strip()
        print(f"robocall-shield explain: {exc.code} from {base}: {detail}", file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        print(
            f"robocall-shield explain: cannot reach the proxy at {base}: {reason}", file=sys.stderr
        )
        return 1
    if args.json:
        print(json.dumps(answer, indent=2))
    else:
        print(render(answer))
    return 0


def render(a: dict[str, Any]) -> str:
    lines = [f"{a['number']}: score {a['score']} (carrier policy {a['carrier_policy']}: "
             f"{a['action_by_policy'][a['carrier_policy']]})"]  # fmt: skip
    for s in a["signals"]:
        mode = "" if s["mode"] == "enforce" else "  [observe]"
        lines.append(
            f"  {s['points']:+6.1f}  {s['signal']:<20} {s['what']} "
            f"(weight {s['weight']}, strength {s['strength']}){mode}"
        )
    if not a["signals"]:
        lines.append("  no signal fired")
    for title, key in (("traffic", "traffic"), ("thousands-block", "thousands_block")):
        if a.get(key):
            figures = ", ".join(f"{k}={v}" for k, v in a[key].items())
            lines.append(f"  {title}: {figures}")
    workers = a.get("workers")
    if workers and workers["answered"] < workers["of"]:
        lines.append(
            f"  (partial: only {workers['answered']} of the node's {workers['of']} workers "
            "answered in time; the others' calls are not counted)"
        )
    lines.append(f"  ({a['not_included']})")
    return "\n".join(lines)
