"""The `hushlight` console script: one program, one subcommand per job.

Each subcommand lives in its own module, which provides::

    HELP: str                                   # one line for `hushlight --help`
    def configure(parser: argparse.ArgumentParser) -> None
    def run(args: argparse.Namespace) -> int    # exit status

Modules are imported only for the subcommand that runs (and for its help), so
`hushlight --help` stays fast and a missing optional piece breaks only its own
command.  A `UsageError` raised anywhere becomes a one-line message and exit
status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from types import ModuleType

from tools.errors import UsageError

# subcommand -> module providing HELP, configure(), run()
COMMANDS: dict[str, str] = {
    # level meter
    "replay": "tools.replay",
    "dsp-report": "tools.dsp_report",
    "gen-coeffs": "tools.gen_coeffs",
    # sensor
    "sensor": "tools.sensor",
    # wire protocol
    "schemas": "tools.schemas",
    # gateway side
    "gateway": "tools.gateway_cli",
    "lights-sim": "tools.lights_sim",
    "cluster": "tools.rabbit_cluster",
    "report": "tools.report",
    # technician
    "build": "tools.build",
    "flash": "tools.flash",
    "provision": "tools.provision",
    "calibrate": "tools.calibrate",
    "monitor": "tools.monitor",
    "selftest": "tools.selftest",
    # firmware updates over the air
    "keygen": "tools.keygen",
    "release": "tools.release",
    "fleet": "tools.fleet",
    "ota": "tools.ota",
    # newcomer
    "demo": "tools.demo",
}


def _load(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(COMMANDS[name])
    except ModuleNotFoundError as exc:
        if exc.name == COMMANDS[name]:
            return None  # command not built yet in this checkout
        raise


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hushlight",
        description="Noise-nudging public lighting: sensors, gateway and technician tools.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        if only is not None and name != only:
            # other commands are listed without importing them
            sub.add_parser(name, add_help=False)
            continue
        module = _load(name)
        if module is None:
            continue
        sp = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.configure(sp)
        sp.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    only = args_list[0] if args_list and args_list[0] in COMMANDS else None
    parser = build_parser(only)
    args = parser.parse_args(args_list)
    run = getattr(args, "_run", None)
    if run is None:
        parser.print_help()
        return 2
    try:
        status = run(args)
    except UsageError as exc:
        print(f"hushlight {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return int(status)


if __name__ == "__main__":
    sys.exit(main())
