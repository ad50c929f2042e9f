"""firmware/hushlight/timesync.py in the MicroPython unix port: epoch times
stay exact on the 32-bit, single-precision ESP32 stand-in."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from tests.firmware.upyrun import mp
from tools.sensor import origin_text

STAMPS = """
import json
from hushlight import timesync
from hushlight.errors import ConfigError
out = []
for origin in json.loads({origins!r}):
    try:
        clock = timesync.Clock(origin)
        # a record 7 h into the night, and one at the origin
        out.append([clock.stamp(0, 0), clock.stamp(25200125, 0)])
    except ConfigError as e:
        out.append(str(e))
print(json.dumps(out))
"""


def stamps(origins: Sequence[object], tmp_path: Path) -> list[object]:
    got: list[object] = mp(STAMPS.format(origins=json.dumps(origins)), tmp_path)
    return got


def test_whole_and_decimal_origins_stamp_to_the_millisecond(tmp_path: Path) -> None:
    origins = [1781298000, "1781298000.125", "1781298000.5", "0", 4102444799]
    got = stamps(origins, tmp_path)
    want = [[1781298000000, 1781323200125], [1781298000125, 1781323200250]]
    want += [[1781298000500, 1781323200625], [0, 25200125], [4102444799000, 4102469999125]]
    assert got == want


def test_the_sensor_tool_writes_origins_that_stay_exact(tmp_path: Path) -> None:
    # what `hushlight sensor --time-origin X` puts in config.json, read back
    # by the firmware: the same ms as the host computes from X
    origins = [1781298000.0, 1781298000.5, 1781298000.125, 1700000000.001]
    texts = [origin_text(x) for x in origins]
    got = stamps(texts, tmp_path)
    assert [g[0] for g in got] == [round(x * 1000) for x in origins]  # type: ignore[index]


def test_bad_origins_are_refused_with_the_value(tmp_path: Path, on_interpreter: str) -> None:
    bad: list[object] = [-1, 4102444800, "17812980.1234", "1e9", "", "5.", " 5", True, [1]]
    got = stamps(bad, tmp_path)
    for origin, message in zip(bad, got, strict=True):
        assert isinstance(message, str) and "time_origin is" in message, origin
    # a float is exact where floats are doubles, and refused where a float32
    # would shift it by up to a minute
    got = stamps([1781298000.5], tmp_path)
    if on_interpreter == "host":
        assert got == [[1781298000500, 1781323200625]]
    else:
        assert "single-precision" in str(got[0]), got
