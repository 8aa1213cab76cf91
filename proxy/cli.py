"""The ``robocall-shield`` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import Any

from blocklists import cli as blocklist_cli

from . import explain_cli, records_cli
from .config import Config, load_config
from .config_table import ConfigError
from .server import StartupError
from .serving import serve
from .supervisor import EXIT_STARTUP, Supervisor, WorkerRole, worker_count
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
    records_cli.add_parser(sub)
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
    if args.command in records_cli.COMMANDS:
        return records_cli.run(args, cfg)
    if args.command == "check-config":
        print(f"{args.config}: ok")
        return 0

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    logging.basicConfig(level=cfg.log.level.upper(), handlers=[handler])
    if worker_count(cfg) > 1:
        try:
            supervisor = Supervisor(cfg, lambda role: _run(cfg, args.config, args.loop, role))
        except OSError as exc:
            where = f"{cfg.sip.host}:{cfg.sip.port}"
            print(
                f"robocall-shield: cannot listen for SIP on {where}: {exc.strerror}",
                file=sys.stderr,
            )
            return 1
        return supervisor.run()
    return 1 if _run(cfg, args.config, args.loop, None) == EXIT_STARTUP else 0


def _run(cfg: Config, path: str | None, loop: str, role: WorkerRole | None) -> int:
    """One worker's event loop, to its end; EXIT_STARTUP if it never started."""
    if role is not None:
        _tag_log_records(role.index)
    runner = asyncio.run
    if loop == "uvloop":
        import uvloop

        runner = uvloop.run
    try:
        runner(serve(cfg, path, role))
    except StartupError as exc:
        where = f"worker {role.index}: " if role is not None else ""
        print(f"robocall-shield: {where}{exc}", file=sys.stderr)
        return EXIT_STARTUP
    except KeyboardInterrupt:
        pass
    return 0


def _tag_log_records(index: int) -> None:
    """Every log line of this process says which worker wrote it."""
    make = logging.getLogRecordFactory()

    def tagged(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make(*args, **kwargs)
        record.worker = index
        return record

    logging.setLogRecordFactory(tagged)


if __name__ == "__main__":
    sys.exit(main())
