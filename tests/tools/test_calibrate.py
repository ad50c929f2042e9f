"""`hushlight calibrate` against a virtual sensor playing a 94 dB SPL calibrator tone.

The synthetic `cal94` scene is a 1 kHz sine at 94 dB SPL under the
microphone convention of DESIGN.md (0 dBFS = 120 dB SPL for the INMP441), and
the A weighting is 0 dB at 1 kHz: a correctly calibrated sensor reads it as
94.0 dB(A).  A sensor mis-set by a known offset must be brought back to it.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.tools.console_sensor import console_sensor
from tools import calibrate
from tools.broker import Mosquitto
from tools.console import Console

MISSET_DB = 2.5


def _calibrate(port: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tools.cli", "calibrate", "--port", port, "--yes", *extra],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def test_calibration_brings_a_misset_sensor_back(tmp_path: Path, broker: Mosquitto) -> None:
    audio = ("--synthetic", "cal94", "--speed", "4")
    with console_sensor(tmp_path, broker.url, *audio) as (_, port):
        with Console(port) as console:
            [reply] = console.command(f"set calibration_offset_db {MISSET_DB}")
            assert reply["ok"], reply
        proc = _calibrate(port, "--ref-db", "94.0", "--seconds", "4", "--check-seconds", "3")
        with Console(port) as console:
            [stored] = console.command("get calibration_offset_db")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    measured = float(re.search(r"measured (\S+) dB", proc.stdout).group(1))  # type: ignore[union-attr]  # asserted by the float()
    # Mis-set by +2.5 dB, the sensor reads the 94 dB tone 2.5 dB high.
    assert abs(measured - (94.0 + MISSET_DB)) <= 0.1
    # ...and the stored offset undoes exactly that.
    assert abs(stored["value"]) <= 0.1
    residual = float(re.search(r"residual (\S+) dB", proc.stdout).group(1))  # type: ignore[union-attr]  # as above
    assert abs(residual) <= calibrate.TOLERANCE_DB
    assert "within" in proc.stdout


def test_without_a_calibrator_nothing_is_stored(tmp_path: Path, broker: Mosquitto) -> None:
    # The quiet street is ~55 dB below the reference: the sensor refuses the offset.
    with console_sensor(tmp_path, broker.url, "--synthetic", "street", "--speed", "4") as (_, port):
        proc = _calibrate(port, "--seconds", "2")
        with Console(port) as console:
            [stored] = console.command("get calibration_offset_db")
    assert proc.returncode == 1
    assert "calibration failed" in proc.stderr
    assert "94.00 dB reference" in proc.stderr
    assert stored["value"] == 0.0


def test_bad_reference_is_a_usage_error(tmp_path: Path) -> None:
    proc = _calibrate("/dev/null", "--ref-db", "9.4")
    assert proc.returncode == 2
    assert "--ref-db 9.4" in proc.stderr


def test_energy_mean() -> None:
    # two equal intervals at 90 and 100 dB: 10 log10((10^9 + 10^10) / 2)
    assert abs(calibrate.energy_mean([90.0, 100.0]) - 97.4036) < 1e-4
