"""firmware/hushlight/console.py pieces in the MicroPython unix port (the
whole console runs over a pseudo-terminal in tests/tools/test_console.py)."""

from __future__ import annotations

import math
from pathlib import Path

from tests.firmware.upyrun import mp


def test_set_values_are_json_or_bare_words(tmp_path: Path) -> None:
    got = mp(
        "import json\nfrom hushlight.console import parse_value\n"
        "print(json.dumps([parse_value(v) for v in "
        "['2', '72.5', '\"quoted\"', 'bare', 'null', 'true', '[1']]))",
        tmp_path,
    )
    assert got == [2, 72.5, "quoted", "bare", None, True, "[1"]


def test_calibration_statistics(tmp_path: Path, on_interpreter: str) -> None:
    levels = [93.9, 94.0, 94.1, 94.05, 93.95]
    got = mp(
        "import json\nfrom hushlight.console import CalRun\n"
        f"r = CalRun({len(levels)})\n"
        + "".join(f"r.add({v}, 0)\n" for v in levels)
        + "r.add(120.0, 5)\n"  # past the measuring time: ignored
        + "print(json.dumps([r.done(), r.progress(), r.spread(), r.mean_db(), r.clipped]))",
        tmp_path,
    )
    done, progress, spread, mean, clipped = got
    # energy mean, as a sound level meter averages (IEC 61672-1, equivalent level)
    expected = 10 * math.log10(sum(10 ** (v / 10) for v in levels) / len(levels))
    assert done is True and progress == 1.0 and clipped == 0
    assert math.isclose(spread, 0.2, abs_tol=1e-9)
    # a float32 result is itself 8e-6 dB coarse at 94 dB and MicroPython
    # prints it with 7 digits: 2e-5 dB, 500 times finer than the 0.01 dB a
    # calibration stores
    assert math.isclose(mean, expected, abs_tol=1e-6 if on_interpreter == "host" else 2e-5)
