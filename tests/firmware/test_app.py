"""firmware/hushlight/app.py in the MicroPython unix port: the capture loop
allocates nothing per block (heap locked while it runs), for each host source."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from dsp import signals
from dsp.wavfile import write_wav
from tests.firmware.upyrun import mp
from tools import upy
from tools.sensor import install_firmware

# Blocks 3..40 run with the heap locked: any allocation in the capture path
# (source, meter, pacer, bookkeeping) raises MemoryError there.
LOCKED_CAPTURE = """
import asyncio, json, micropython
from hushlight import app
a = app.App()
src = a.source
orig = src.read_block
calls = [0]
class Guard:
    live = False
    rate = src.rate
    def read_block(self, buf, n):
        calls[0] += 1
        if calls[0] == 3:
            micropython.heap_lock()
        if calls[0] == 40:
            micropython.heap_unlock()
            return False
        return orig(buf, n)
    def close(self):
        pass
a.source = Guard()
# the once-an-interval work allocates by design (a record is a new object)
def skip4(a, b, c, d):
    pass
def skip3(a, b, c):
    pass
a._interval = skip4
a._summary = skip3
asyncio.run(a.capture())
print(json.dumps([calls[0], a.audio_blocks]))
"""


def write_config(folder: Path, **values: object) -> None:
    cfg: dict[str, object] = {"id": "t", "site": "t", "broker": "mqtt://127.0.0.1:9"}
    cfg["console"] = "off"
    cfg.update(values)
    (folder / "config.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize("source", ["synthetic:street", "wav", "synthetic:cal94"])
def test_capture_allocates_nothing_per_block(tmp_path: Path, source: str) -> None:
    if source == "wav":
        wav = tmp_path / "a.wav"
        write_wav(wav, 44100, signals.pink_noise(44100, 6.0, -30.0, seed=2), "pcm24")
        source = f"wav:{wav}"
    write_config(tmp_path, source=source, speed=0)
    calls, blocks = mp(LOCKED_CAPTURE, tmp_path, compiled=True)
    assert (calls, blocks) == (40, 39)


def test_a_bad_config_stops_start_up_with_one_sentence(tmp_path: Path) -> None:
    write_config(tmp_path, source="synthetic:quiet", interval_s=0.3)
    proc = subprocess.run(
        upy.command("-c", "import main"),
        cwd=tmp_path,
        env=upy.firmware_env(install_firmware(tmp_path)),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "interval_s" in lines[0] and "0.3" in lines[0]
