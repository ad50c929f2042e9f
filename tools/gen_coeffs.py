"""`hushlight gen-coeffs`: write the firmware's coefficient module (text from `dsp.codegen`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Final

from dsp import codegen
from tools.errors import UsageError

__all__ = ["HELP", "configure", "run"]

HELP: Final = "generate the firmware's fixed-point filter coefficients (hushlight/coeffs.py)"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out",
        type=Path,
        default=codegen.DEFAULT_OUT,
        help="file to write (default: firmware/hushlight/coeffs.py)",
    )


def run(args: argparse.Namespace) -> int:
    out: Path = args.out
    if not out.parent.is_dir():
        raise UsageError(f"directory {out.parent} does not exist; create it or pick another --out")
    out.write_text(codegen.render())
    print(f"wrote {out}")
    return 0
