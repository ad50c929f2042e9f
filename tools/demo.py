"""`hushlight demo` (interim): replay the bundled night-street recording with the firmware meter.

Runs the sensor's own meter in MicroPython over `tools/data/example-night.wav`
(quiet street, a shout, quiet again) and prints what the sensor would report
each second, marking the seconds whose LAFmax reaches the 70 dB(A) the Leuven
pilot used as its trigger.
"""

from __future__ import annotations

import argparse
from typing import Final

from tools import replay
from tools.make_example import EXAMPLE

HELP = "replay the bundled night-street recording with the firmware meter and print its levels"

PEAK_DB: Final = 70.0


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--engine",
        choices=replay.ENGINES,
        default="firmware",
        help="firmware: the sensor's meter in MicroPython (default); reference: float64 meter",
    )


def run(args: argparse.Namespace) -> int:
    wav = replay.open_wav(EXAMPLE)
    print(f"{EXAMPLE.name}: {wav.describe()}, {args.engine} meter")
    print(f"{'seconds':>11}  {'LAeq':>6}  {'LAFmax':>6}  {'LCeq':>6}")
    for rec in replay.replay(wav, args.engine):
        mark = f"  <- peak >= {PEAK_DB:g} dB(A)" if rec["lafmax"] >= PEAK_DB else ""
        span = f"{rec['t0']:g}-{rec['t1']:g}"
        print(f"{span:>11}  {rec['laeq']:6.1f}  {rec['lafmax']:6.1f}  {rec['lceq']:6.1f}{mark}")
    return 0
