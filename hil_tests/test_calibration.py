"""Calibration with a 94 dB SPL tone, through `hushlight calibrate`'s own code.

On the virtual sensor the tone is the firmware's synthetic `cal94` scene: a
1 kHz sine at 94 dB SPL under the INMP441 convention (0 dBFS = 120 dB SPL),
A-weighted 0 dB at 1 kHz.  On a real board a sound calibrator must sit on
the microphone: give its level with ``--calibrator-db``.
"""

from __future__ import annotations

import pytest

from hil_tests.conftest import Target
from tools.calibrate import TOLERANCE_DB, calibrate

MISSET_DB = -1.7


@pytest.fixture
def reference_db(request: pytest.FixtureRequest, target: Target) -> float:
    if target.virtual is not None:
        return 94.0
    level = request.config.getoption("--calibrator-db")
    if level is None:
        pytest.skip("seat a sound calibrator on the microphone and give --calibrator-db 94.0")
    return float(level)


def test_calibration_residual_within_a_tenth_of_a_db(target: Target, reference_db: float) -> None:
    with target.console() as console:
        [before] = console.command("get calibration_offset_db")
        if target.virtual is not None:
            # start from a known wrong offset, so the flow has something to correct
            console.command(f"set calibration_offset_db {MISSET_DB}")
    result = calibrate(target.port, reference_db, seconds=4.0, check_seconds=3.0, show=False)
    assert abs(result.residual_db) <= TOLERANCE_DB, result
    if target.virtual is not None:
        assert result.previous_offset_db == MISSET_DB
        assert abs(result.measured_db - (reference_db + MISSET_DB)) <= TOLERANCE_DB
        assert abs(result.offset_db) <= TOLERANCE_DB
        with target.console() as console:
            console.command(f"set calibration_offset_db {before['value']}")
