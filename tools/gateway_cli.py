"""`hushlight gateway --config site.toml`: run the gateway service for one site.

The gateway's errors (a bad site file, a database it cannot open, a broker it
cannot reach) become `UsageError` here: one line and exit status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import logging

from gateway.clock import add_clock_arguments, clock_from_args
from gateway.config import load_config
from gateway.errors import ConfigError, GatewayError, StorageError
from tools.errors import UsageError

__all__ = ["HELP", "configure", "run"]

HELP = "run the gateway: sensor levels in, light overrides and nudges out"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", required=True, metavar="SITE.toml", help="site configuration file"
    )
    parser.add_argument(
        "--on-stop",
        choices=("leave", "release"),
        default="leave",
        help="on SIGTERM, leave overrides to expire (default: a restart resumes them) "
        "or release them at once",
    )
    parser.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        default="info",
        help="how much to log (default info)",
    )
    parser.add_argument(
        "--explain",
        action="store_true",
        help="every 10 s, log per zone what it is doing and why it is not nudging "
        "(its trigger against each sensor's levels, schedule, cooldown)",
    )
    add_clock_arguments(parser)


def run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
        clock = clock_from_args(args)
    except (ConfigError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # imported here so that `hushlight --help` does not load aiomqtt and aiohttp
    from gateway.service import Gateway

    try:
        gateway = Gateway(config, clock=clock, on_stop=args.on_stop, explain=args.explain)
    except StorageError as exc:
        raise UsageError(str(exc)) from None
    try:
        asyncio.run(gateway.run())
    except GatewayError as exc:
        raise UsageError(str(exc)) from None
    return 0
