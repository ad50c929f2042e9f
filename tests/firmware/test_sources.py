"""firmware/hushlight/sources.py in the MicroPython unix port."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from dsp import signals
from dsp.wavfile import read_i2s, write_wav
from tests.firmware.upyrun import mp, mp_lines

# one line with the rate, then one hex line of little-endian int32 words per block
READ_ALL = """
import array, binascii
from hushlight import sources
raw = bytearray({raw})
src = sources.WavSource({path!r}, raw)
n = src.rate // 8
buf = array.array("i", bytes(4 * n))
print(src.rate)
while src.read_block(buf, n):
    print(binascii.hexlify(buf).decode())
"""


def words_of(lines: list[str]) -> list[int]:
    data = b"".join(bytes.fromhex(line) for line in lines)
    return [int(w) for w in np.frombuffer(data, dtype="<i4")]


@pytest.mark.parametrize(
    ("encoding", "channels", "rate", "raw"),
    [
        ("pcm16", 1, 48000, 4000),
        ("pcm24", 2, 44100, 3000),  # frames straddle several raw reads
        ("pcm32", 1, 16000, 24000),
    ],
)
def test_wav_words_equal_the_host_reader(
    tmp_path: Path, encoding: str, channels: int, rate: int, raw: int
) -> None:
    seconds = 0.6
    x = signals.pink_noise(rate, seconds, -20.0, seed=1) + signals.sine(rate, 997.0, seconds, -8.0)
    x = np.clip(x, -1, 1 - 2**-23)
    frames = np.stack([x, -x], axis=1) if channels == 2 else x
    wav = tmp_path / "x.wav"
    write_wav(wav, rate, frames, encoding)
    lines = mp_lines(READ_ALL.format(path=str(wav), raw=raw), tmp_path)
    got_rate, words = int(lines[0]), words_of(lines[1:])
    host_rate, host = read_i2s(wav)
    block = rate // 8
    whole = len(host) // block * block  # the firmware plays whole 125 ms blocks only
    assert got_rate == host_rate == rate
    assert words == host[:whole].tolist()


def test_wav_that_is_not_pcm_is_refused_with_its_name(tmp_path: Path) -> None:
    wav = tmp_path / "float.wav"
    write_wav(wav, 48000, signals.sine(48000, 1000.0, 0.2, -6.0), "float32")
    code = (
        "from hushlight import sources\nfrom hushlight.errors import ConfigError\n"
        f"try:\n    sources.WavSource({str(wav)!r}, bytearray(100))\n"
        "except ConfigError as e:\n    print(repr(str(e)))"
    )
    out = mp(
        code.replace("print(repr(str(e)))", "import json; print(json.dumps(str(e)))"), tmp_path
    )
    assert "float.wav" in out and "PCM" in out


def test_stdin_pcm_is_s16le_left_justified(tmp_path: Path) -> None:
    samples = np.array([0, 1, -1, 32767, -32768, 1234] * 1100, dtype="<i2")  # 1.1 blocks
    code = (
        "import array, binascii, sys\nfrom hushlight import sources\n"
        "src = sources.PcmSource(sys.stdin.buffer, 48000, bytearray(1000))\n"
        "buf = array.array('i', bytes(4 * 6000))\n"
        "while src.read_block(buf, 6000):\n"
        "    print(binascii.hexlify(buf).decode())\n"
    )
    words = words_of(mp_lines(code, tmp_path, stdin=samples.tobytes()))
    # one whole block; the partial one at the end of the stream is not audio time
    assert words == [int(s) << 16 for s in samples[:6000]]


SCENE_LEVEL = """
import array, json, math
from hushlight import sources
src = sources.SyntheticSource({scene!r}, {rate}, {rate} // 8)
n = {rate} // 8
buf = array.array("i", bytes(4 * n))
acc = 0.0
count = 0
peak = 0
for _ in range({blocks}):
    src.read_block(buf, n)
    for v in buf:
        acc += (v / 2147483648.0) ** 2
        if abs(v) > peak:
            peak = abs(v)
        if v & 0xFF:
            raise ValueError("low byte set: not a 24-bit word")
    count += n
print(json.dumps([acc / count, peak]))
"""


def spl(mean_square: float) -> float:
    # AES17 / INMP441: a full-scale sine (mean square 1/2) is 94 + 26 = 120 dB SPL
    return 120.0 + 10 * math.log10(mean_square / 0.5)


@pytest.mark.parametrize("rate", [48000, 44100])
def test_cal94_is_a_94_db_tone(tmp_path: Path, rate: int) -> None:
    ms, peak = mp(SCENE_LEVEL.format(scene="cal94", rate=rate, blocks=2), tmp_path)
    assert abs(spl(ms) - 94.0) < 0.01
    assert abs(peak / 2**31 - 10 ** ((94 - 120) / 20)) < 1e-4


def test_silence_is_zero_and_quiet_is_quiet(tmp_path: Path) -> None:
    ms, peak = mp(SCENE_LEVEL.format(scene="silence", rate=48000, blocks=1), tmp_path)
    assert (ms, peak) == (0.0, 0)
    ms, _ = mp(SCENE_LEVEL.format(scene="quiet", rate=48000, blocks=2), tmp_path)
    # white noise: its unweighted level sits a little above the 40 dB(A) it is meant to give
    assert 39.0 < spl(ms) < 44.0


NOISE_WORDS = """
import array, json
from hushlight import sources
src = sources.SyntheticSource("quiet", 16000, 2000)
buf = array.array("i", bytes(4 * 2000))
src.read_block(buf, 2000)
print(json.dumps([src._quiet, list(buf)]))
"""


def test_noise_is_xorshift32_bit_for_bit(tmp_path: Path) -> None:
    # the host model: Marsaglia's xorshift32 (13, 17, 5) on unsigned 32-bit
    # words, its top 16 bits centred and scaled, the low byte cleared
    gain, words = mp(NOISE_WORDS, tmp_path)
    x = 0x2545F491
    want = []
    for _ in range(2000):
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        want.append((((x >> 16) - 32768) * gain) >> 8 << 8)
    assert words == want
    # and it is unbiased: the mean is far below the RMS
    assert abs(np.mean(words)) < 0.1 * np.sqrt(np.mean(np.square(np.asarray(words, float))))


def test_an_unknown_scene_and_rate_are_refused(tmp_path: Path) -> None:
    code = (
        "import json\nfrom hushlight import sources\nfrom hushlight.errors import ConfigError\n"
        "out = []\n"
        "for args in (('rain', 48000), ('quiet', 22050)):\n"
        "    try:\n        sources.SyntheticSource(args[0], args[1], 100)\n"
        "    except ConfigError as e:\n        out.append(str(e))\n"
        "print(json.dumps(out))"
    )
    rain, rate = mp(code, tmp_path)
    assert "'rain'" in rain and "quiet" in rain
    assert "22050" in rate and "48000" in rate
