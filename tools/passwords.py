"""The MQTT password of a command: from a file or the environment, never the command line.

A password on the command line is readable by every user of the machine
(`ps`, /proc/PID/cmdline) and stays in the shell's history, so the commands
that log in to a broker (`hushlight sensor`, `hushlight lights-sim`) take it
from `--password-file FILE` or from the environment variable
`HUSHLIGHT_MQTT_PASSWORD`, and refuse `--password` with the way to do it.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from tools.errors import UsageError

__all__ = ["PASSWORD_ENV", "add_arguments", "password"]

PASSWORD_ENV = "HUSHLIGHT_MQTT_PASSWORD"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`--password-file FILE`, and a hidden `--password` that `password()` refuses."""
    parser.add_argument(
        "--password-file",
        type=Path,
        default=None,
        metavar="FILE",
        help=f"file holding the MQTT password (or set {PASSWORD_ENV}; never on the command "
        "line, where other users of the machine can read it)",
    )
    parser.add_argument("--password", default=None, help=argparse.SUPPRESS)


def password(args: argparse.Namespace) -> str | None:
    """The MQTT password `args` point at: the file (without its line end), else the
    environment variable, else None; UsageError for `--password` or a bad file."""
    if getattr(args, "password", None) is not None:
        raise UsageError(
            "--password puts the secret where other users of the machine can read it "
            "(ps, shell history); write it to a file readable by you only and give "
            f"--password-file FILE, or set {PASSWORD_ENV}"
        )
    path: Path | None = args.password_file
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(
                f"--password-file {path}: cannot read it ({exc}); give a UTF-8 text file "
                "holding the password"
            ) from None
        secret = text.strip("\r\n")
        if not secret:
            raise UsageError(f"--password-file {path} is empty; write the password into it")
        return secret
    return os.environ.get(PASSWORD_ENV) or None
