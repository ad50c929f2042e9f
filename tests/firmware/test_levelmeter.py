"""The firmware level meter in the real MicroPython interpreter, against the golden model.

Bit-exactness with `dsp.golden` (which checks every intermediate against
int32) is what carries the overflow proof from the host to the ESP32.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from dsp import golden, signals
from tools import upy

RATES = (48000, 44100, 32000, 16000)

RUNNER = """
import sys, json
from hushlight.levelmeter import LevelMeter
m = LevelMeter(%(rate)d, mic=%(mic)r, peak_threshold_db=%(thr)r)
n = m.block_len
buf = bytearray(4 * n)
mv = memoryview(buf)
st = m._st
def wide(o, k):
    v = 0
    j = o + k - 1
    while j >= o:
        v = (v << 16) + st[j]
        j -= 1
    return v
inp = sys.stdin.buffer
for b in range(%(blocks)d):
    got = 0
    while got < 4 * n:
        got += inp.readinto(mv[got:])
    m.process_block(buf)
    print(json.dumps(["B", wide(24, 5), wide(29, 5), wide(34, 5), st[39], st[40],
                      m.last_block_laeq()]))
    if (b + 1) %% %(per)d == 0:
        print(json.dumps(["I"] + list(m.take_interval())))
print(json.dumps(["S", m.take_summary()]))
"""


def run_firmware(
    rate: int, words: npt.NDArray[np.int64], per: int, mic: str | None = None, thr: float = 70.0
) -> list[Any]:
    n = rate // 8
    blocks = len(words) // n
    code = RUNNER % {"rate": rate, "mic": mic, "thr": thr, "blocks": blocks, "per": per}
    data = np.asarray(words[: blocks * n], dtype="<i4").tobytes()
    return [json.loads(line) for line in upy.run_code(code, input=data).splitlines()]


def run_golden(
    rate: int, words: npt.NDArray[np.int64], per: int, mic: str | None = None, thr: float = 70.0
) -> list[Any]:
    g = golden.GoldenMeter(rate, mic=mic, peak_threshold_db=thr)
    n = g.block_len
    out: list[Any] = []
    for b in range(len(words) // n):
        r = g.process_block(words[b * n : (b + 1) * n])
        out.append(["B", r.a_sum, r.c_sum, r.fast_max, r.clipped, r.peaks, g.last_block_laeq()])
        if (b + 1) % per == 0:
            out.append(["I", *g.take_interval()])
    out.append(["S", g.take_summary()])
    return out


def mixed_signal(rate: int) -> npt.NDArray[np.int64]:
    """Silence, noise, a 30 dB SPL tone, a loud high tone and full-scale squares."""
    part = 0.125  # one block each: the golden model is plain Python
    peak_a = 2500.0  # near the largest gain of A (+1.3 dB)
    x = np.concatenate(
        [
            signals.silence(rate, part),
            signals.white_noise(rate, part, rms_dbfs=-20.0, seed=7),
            signals.sine(rate, 1000.0, part, dbfs=-90.0),
            signals.sine(rate, 0.3 * rate, part, dbfs=-3.0),
            signals.square(rate, peak_a, part),
            signals.square(rate, 50.0, part),
            # +-full scale alternating: the Nyquist frequency, where the differences peak
            np.where(np.arange(int(rate * part / 2)) % 2 == 0, 1.0, -1.0),
        ]
    )
    return np.asarray(signals.to_i2s_words(x), dtype=np.int64)


@pytest.mark.parametrize("rate", RATES)
def test_firmware_equals_golden_bit_for_bit(rate: int) -> None:
    words = mixed_signal(rate)
    fw = run_firmware(rate, words, per=3)
    gm = run_golden(rate, words, per=3)
    assert len(fw) == len(gm)
    for got, want in zip(fw, gm, strict=True):
        assert got == want
    # the stream is not trivial: clipping, several intervals and peaks were seen
    assert sum(r[4] for r in gm if r[0] == "B") > 0
    assert gm[-1][1]["peaks"] >= 1


@pytest.mark.parametrize(("rate", "mic"), [(48000, "inmp441"), (16000, "ics43434")])
def test_firmware_equals_golden_with_microphone_equaliser(rate: int, mic: str) -> None:
    words = mixed_signal(rate)
    assert run_firmware(rate, words, per=4, mic=mic) == run_golden(rate, words, per=4, mic=mic)


@pytest.mark.parametrize("rate", RATES)
def test_full_scale_1khz_sine_reads_120_db(rate: int) -> None:
    # DESIGN.md: sensitivity -26 dBFS maps a 0 dBFS sine to 94 + 26 = 120 dB SPL;
    # A and C are 0 dB at 1 kHz by definition (IEC 61672-1, Annex E)
    words = np.asarray(signals.to_i2s_words(signals.sine(rate, 1000.0, 1.0, 0.0)), np.int64)
    lines = run_firmware(rate, words, per=4)
    second = [r for r in lines if r[0] == "I"][1]  # the 20.6 Hz transient is over
    laeq, lafmax, lceq = second[1:4]
    assert laeq == pytest.approx(120.0, abs=0.015)
    assert lceq == pytest.approx(120.0, abs=0.015)
    assert lafmax == pytest.approx(120.0, abs=0.015)


ALLOC = """
import gc
from array import array
from hushlight.levelmeter import LevelMeter
m = LevelMeter(%d)
n = m.block_len
buf = array('i', bytes(4 * n))
for i in range(n):
    # a loud square and small noise-like values: every energy range and carry path
    loud = (1 << 31) - 256 if (i // 7) %% 2 else -(1 << 31)
    buf[i] = loud if i %% 3 else (i * 977 %% 4096) << 8
m.process_block(buf)

def measure(meter, block):
    # locals only: a new module global would grow the globals dict mid-measurement
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    k = 0
    while k < 40:  # a `for` over a range object would allocate its iterator
        meter.process_block(block)
        k += 1
    after = gc.mem_alloc()
    gc.enable()
    return after - before

grown = measure(m, buf)
print(grown, m.take_interval()[3])
"""


@pytest.mark.parametrize("rate", [48000, 16000])
def test_process_block_allocates_nothing(rate: int) -> None:
    grown, clipped = upy.run_code(ALLOC % rate).split()
    assert int(clipped) > 0  # the loud paths really ran
    assert int(grown) == 0


def test_bad_rate_preset_and_short_buffer_are_refused_with_a_sentence() -> None:
    code = """
from hushlight.levelmeter import LevelMeter
try:
    LevelMeter(22050)
except ValueError as e:
    print(e)
try:
    LevelMeter(48000, mic='sm58')
except ValueError as e:
    print(e)
from array import array
try:
    LevelMeter(48000).process_block(array('i', bytes(400)))
except ValueError as e:
    print(e)
"""
    out = upy.run_code(code).splitlines()
    assert "22050" in out[0] and "48000" in out[0]
    assert "sm58" in out[1] and "inmp441" in out[1]
    assert "6000 int32 words" in out[2] and "100" in out[2]


def test_calibration_and_summary_statistics() -> None:
    # 4 s: 2.5 s at -40 dBFS then 1.5 s at -20 dBFS (1 kHz): 20 quiet and 12 loud
    # blocks, so (nearest rank) L10 is loud, L50 and L90 are quiet
    rate = 16000
    x = np.concatenate(
        [signals.sine(rate, 1000.0, 2.5, -40.0), signals.sine(rate, 1000.0, 1.5, -20.0)]
    )
    words = np.asarray(signals.to_i2s_words(x), np.int64)
    code = RUNNER.replace("m = LevelMeter", "m = LevelMeter").replace(
        "inp = sys.stdin.buffer", "inp = sys.stdin.buffer\nm.set_calibration(1.5)"
    )
    n = rate // 8
    data = words.astype("<i4").tobytes()
    params = {"rate": rate, "mic": None, "thr": 95.0, "blocks": len(words) // n, "per": 8}
    lines = [json.loads(s) for s in upy.run_code(code % params, input=data).splitlines()]
    summary = lines[-1][1]
    # 120 - 40 + 1.5 and 120 - 20 + 1.5
    assert summary["l10"] == pytest.approx(101.5, abs=0.02)
    assert summary["l90"] == pytest.approx(81.5, abs=0.3)  # first blocks carry the transient
    assert summary["l50"] == pytest.approx(81.5, abs=0.02)
    assert summary["lamin"] < 81.5
    expected = 10 * np.log10((2.5 * 10**8.15 + 1.5 * 10**10.15) / 4)
    assert summary["laeq"] == pytest.approx(expected, abs=0.05)
    assert summary["peaks"] == 1  # one upward crossing of 95 dB


def test_viper_integer_semantics_the_meter_relies_on(on_interpreter: str) -> None:
    # arithmetic right shift and two's-complement `&` on negative ints, and a
    # ptr32 load that zero-extends on the 64-bit host but is signed already on
    # the 32-bit device (the ESP32's word size): the meter's sign fix, with
    # its own constant 2**30 - 1, gives the signed value on both
    code = """
import micropython
from array import array
@micropython.viper
def probe(a: ptr32) -> int:
    v = a[0]
    raw = v
    if v > 0x3FFFFFFF:
        v = v - 0x3FFFFFFF - 0x3FFFFFFF - 0x3FFFFFFF - 0x3FFFFFFF - 4
    a[1] = (v >> 12) * 4096 + (v & 4095)
    a[2] = raw > 0x3FFFFFFF
    return (-5 >> 1) * 1000 + ((-5) & 4095)
a = array('i', [-123456789, 0, 0])
print(probe(a), a[1], a[2])
"""
    got = upy.run_code(code).split()
    assert got[:2] == [str(-3 * 1000 + 4091), "-123456789"]
    zero_extended = {"host": "1", "device": "0"}[on_interpreter]
    assert got[2] == zero_extended


def test_minute_statistics_keep_the_last_480_blocks() -> None:
    # 10 loud blocks then 480 quiet ones: the ring keeps only the quiet ones,
    # while the summary LAeq still counts every block
    rate = 16000
    loud = signals.sine(rate, 1000.0, 10 / 8, -20.0)
    quiet = signals.sine(rate, 1000.0, 480 / 8, -50.0)
    words = np.asarray(signals.to_i2s_words(np.concatenate([loud, quiet])), np.int64)
    lines = run_firmware(rate, words, per=490)
    summary = lines[-1][1]
    assert summary["l10"] == pytest.approx(70.0, abs=0.02)
    assert summary["lamin"] == pytest.approx(70.0, abs=0.05)
    expected = 10 * np.log10((10 * 10**10.0 + 480 * 10**7.0) / 490)
    assert summary["laeq"] == pytest.approx(expected, abs=0.02)
    assert summary["lafmax"] == pytest.approx(100.0, abs=0.05)
