"""`hushlight calibrate`: set a sensor's calibration offset with a sound calibrator.

The INMP441's sensitivity varies by +-3 dB from unit to unit, so every
sensor is calibrated once on site: a calibrator (a 1 kHz tone of known level,
usually 94.0 dB SPL) is seated on the microphone port and the sensor's `cal`
command measures it and stores the offset that makes it read the reference.

Then the tool checks the result through a different path: it streams the
sensor's ordinary interval records (`levels`) for a few seconds with the new
offset and compares their energy mean LAeq with the reference.  The
A weighting is 0 dB at 1 kHz (IEC 61672-1, Table 3), so a calibrator reads
the same in dB(A) as in dB SPL.  The residual should be within 0.1 dB.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from typing import Any

from tools.console import Console, is_final
from tools.errors import ToolError, UsageError
from tools.selftest import check_port

HELP = "calibrate a sensor with a sound calibrator (console `cal`), then check the residual"

TOLERANCE_DB = 0.1


@dataclass(frozen=True)
class Result:
    measured_db: float
    ref_db: float
    previous_offset_db: float
    offset_db: float
    check_db: float  # energy mean LAeq of the re-measurement, with the new offset
    records: int

    @property
    def residual_db(self) -> float:
        return self.check_db - self.ref_db


def energy_mean(levels: list[float]) -> float:
    """The level of the mean energy of equal-length intervals (dB)."""
    return 10 * math.log10(sum(10 ** (x / 10) for x in levels) / len(levels))


def measure_cal(
    console: Console, ref_db: float, seconds: float, on_progress: Any = None
) -> dict[str, Any]:
    """Run `cal REF SECONDS`; call `on_progress(fraction)` per progress line; the final reply."""
    line = f"cal {ref_db:g} {seconds:g}"
    console.send(line)
    # progress lines come about once a second while the tone is measured
    wait = max(5.0, seconds / 5 + 5.0)
    while True:
        reply = console.read_object(wait)
        if reply is None:
            raise ToolError(f"the sensor on {console.port} stopped answering during '{line}'")
        if reply.get("cmd") != "cal":
            continue
        if "progress" in reply and on_progress is not None:
            on_progress(float(reply["progress"]))
        if is_final("cal", reply):
            if not reply.get("ok"):
                raise ToolError(f"calibration failed: {reply.get('error', 'no reason given')}")
            return reply


def remeasure(console: Console, seconds: float) -> list[float]:
    """LAeq of each interval record streamed for `seconds`, skipping the first (it may
    straddle the change of offset) and any flagged while calibrating."""
    laeq: list[float] = []
    for number, record in enumerate(console.stream("levels", seconds=seconds + 1.5)):
        flags = record.get("flags", [])
        if "clipped" in flags:
            raise ToolError("the calibrator tone clipped during the check; use a lower level")
        if number == 0 or "calibrating" in flags:
            continue
        laeq.append(float(record["laeq"]))
    if not laeq:
        raise ToolError(
            f"no level records came from the sensor on {console.port} in {seconds:g} s; "
            "is it measuring? (hushlight monitor shows it)"
        )
    return laeq


def calibrate(
    port: str, ref_db: float, seconds: float, check_seconds: float, show: bool = True
) -> Result:
    from rich.progress import Progress

    with Console(port, timeout=10.0) as console:
        with Progress(transient=True, disable=not show) as bar:
            task = bar.add_task(f"measuring {ref_db:g} dB for {seconds:g} s", total=1.0)
            done = measure_cal(console, ref_db, seconds, lambda p: bar.update(task, completed=p))
        if show:
            print(
                f"measured {done['measured_db']:.2f} dB for the {ref_db:.2f} dB reference: "
                f"offset {done['previous_offset_db']:+.2f} -> {done['offset_db']:+.2f} dB (stored)"
            )
            print(f"checking: measuring {check_seconds:g} s of levels with the new offset ...")
        laeq = remeasure(console, check_seconds)
    return Result(
        measured_db=float(done["measured_db"]),
        ref_db=ref_db,
        previous_offset_db=float(done["previous_offset_db"]),
        offset_db=float(done["offset_db"]),
        check_db=energy_mean(laeq),
        records=len(laeq),
    )


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--port", required=True, help="console port: /dev/ttyUSB0, or a virtual sensor's /dev/pts/N"
    )
    parser.add_argument(
        "--ref-db", type=float, default=94.0, help="the calibrator's level (dB SPL, default 94.0)"
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="measuring time (default 10 s)")
    parser.add_argument(
        "--check-seconds", type=float, default=5.0, help="re-measuring time (default 5 s)"
    )
    parser.add_argument("--yes", action="store_true", help="do not wait for Enter before measuring")


def run(args: argparse.Namespace) -> int:
    check_port(args.port)
    if not 40.0 <= args.ref_db <= 140.0:
        raise UsageError(
            f"--ref-db {args.ref_db:g} is not a calibrator level; give 94.0 or 114.0 (40 to 140)"
        )
    if not 1.0 <= args.seconds <= 60.0:
        raise UsageError(f"--seconds {args.seconds:g} is out of range; give 1 to 60 (10 is usual)")
    if not 2.0 <= args.check_seconds <= 60.0:
        raise UsageError(f"--check-seconds {args.check_seconds:g} is out of range; give 2 to 60")
    print(
        f"1. Seat the calibrator ({args.ref_db:g} dB, 1 kHz) firmly on the microphone port of the "
        f"sensor on {args.port} and switch it on.\n"
        "2. Keep still and quiet: the level must stay steady (within 0.5 dB) while it measures."
    )
    if not args.yes and sys.stdin.isatty():
        input("Press Enter when the calibrator is on ... ")
    try:
        result = calibrate(args.port, args.ref_db, args.seconds, args.check_seconds)
    except ToolError as exc:
        print(f"hushlight calibrate: {exc}", file=sys.stderr)
        return 1
    ok = abs(result.residual_db) <= TOLERANCE_DB
    print(
        f"check: {result.check_db:.2f} dB(A) over {result.records} records, "
        f"residual {result.residual_db:+.2f} dB "
        f"({'within' if ok else 'OUTSIDE'} +-{TOLERANCE_DB} dB)"
    )
    if not ok:
        print(
            "hushlight calibrate: the residual is too large; the calibrator may have moved or the "
            "street is too loud: run the calibration again",
            file=sys.stderr,
        )
        return 1
    print("calibration done; switch the calibrator off and remove it")
    return 0
