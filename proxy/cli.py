"""The ``robocall-shield`` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from blocklists import cli as blocklist_cli

from . import explain_cli
from .config import load_config
from .config_table import ConfigError
from .server import StartupError, serve
from .verdict_log import JsonFormatter


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="robocall-shield", description="SIP call-blocking proxy for carriers"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_serve = sub.add_parser("serve", help="run the proxy")
    p_serve.add_argument("--config", help="TOML file; without it the embedded defaults apply")
    p_serve.add_argument(
        "--loop",
        choices=("uvloop", "asyncio"),
        default="uvloop",
        help="event loop (asyncio only to measure what uvloop buys)",
    )
    p_check = sub.add_parser("check-config", help="validate a configuration file and exit")
    p_check.add_argument("config")
    blocklist_cli.add_parser(sub)
    explain_cli.add_parser(sub)
    args = parser.parse_args(argv)

    try:
        cfg = load_config(getattr(args, "config", None))
    except ConfigError as exc:
        print(f"robocall-shield: config error: {exc}", file=sys.stderr)
        return 2
    if args.command == "blocklist":
        return blocklist_cli.run(args, cfg.blocklists.fp_rate)
    if args.command == "explain":
        return explain_cli.run(args, cfg)
    if args.command == "check-config":
        print(f"{args.config}: ok")
        return 0

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    logging.basicConfig(level=cfg.log.level.upper(), handlers=[handler])
    runner = asyncio.run
    if args.loop == "uvloop":
        import uvloop

        runner = uvloop.run
    try:
        runner(serve(cfg, args.config))
    except StartupError as exc:
        print(f"robocall-shield: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
