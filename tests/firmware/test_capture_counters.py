"""The capture loop's counters stay small ints on the 32-bit device: one past
2**30 would be a long int, allocated anew on every part of every block."""

from __future__ import annotations

from pathlib import Path

from tests.firmware.test_app import LOCKED_CAPTURE, write_config
from tests.firmware.upyrun import mp

# 18 min of DSP time already counted when the capture starts (a busy DSP and a
# 3600 s status period get there), with the heap locked from the third part
BUSY = LOCKED_CAPTURE.replace(
    "asyncio.run(a.run())",
    "a.dsp_us = (1 << 30) - 1\na.audio_blocks = 1 << 20\nasyncio.run(a.run())",
).replace(
    "print(json.dumps([calls[0], a.audio_blocks]))",
    "print(json.dumps([calls[0], a.dsp_us, a.audio_blocks]))",
)


def test_dsp_time_never_outgrows_a_small_int(tmp_path: Path) -> None:
    write_config(tmp_path, source="synthetic:street", speed=0)
    calls, dsp_us, parts = mp(BUSY, tmp_path, compiled=True)
    assert calls == 40
    assert dsp_us < 2**30
    # both counts were halved together: the load they give is the one preset,
    # plus what 39 parts of DSP added
    assert 0.4 < (dsp_us / parts) / (2**30 / 2**20) < 1.1
