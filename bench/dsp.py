"""Real-time factor and instructions per sample of the firmware level meter.

Prints, for each MicroPython interpreter (`device`: the 32-bit,
single-precision ESP32 stand-in; `host`: the x86-64 port) and every supported
rate, how many times faster than real time the firmware's
`LevelMeter.process_block` runs (full chain: A and C weighting, energies,
Fast, block statistics; timed with time.ticks_us over many blocks of noise),
and, at 48 kHz in the same run, scipy's `sosfilt` on the float version of the
same chain (A and C, squares summed per block) in CPython, with their ratio.
DESIGN.md's budget: at least 400x real time at 48 kHz on this host as a proxy
for a quarter of an ESP32 core.

Seconds move with the machine's load; instructions do not.  With valgrind
installed, the same 48 kHz loop is run under `valgrind --tool=callgrind`
twice, with 8 and 24 blocks, and the difference of the instruction counts
divided by the samples in between is the per-sample cost (start-up and
imports cancel out), for each interpreter and for scipy's sosfilt.

    .venv/bin/python bench/dsp.py [--seconds 20] [--interpreter device|host|both]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

# Run as `python bench/dsp.py`, this script's folder comes first on sys.path
# and its own name would shadow the dsp package: the repo root goes first.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
from scipy import signal

from dsp import signals, weighting
from tools import upy

TARGET = 400.0

FIRMWARE = """
import time
from array import array
from hushlight.levelmeter import LevelMeter
m = LevelMeter(%(rate)d)
n = m.block_len
buf = array('i', bytes(4 * n))
seed = 12345
for i in range(n):
    # white-ish noise at about -20 dBFS from a small LCG: no allocation in the timed loop
    seed = (seed * 1103515245 + 12345) & 0x7FFFFFFF
    buf[i] = ((seed >> 8) - (1 << 22)) // 10 << 8
part = %(part)d
def one_block():
    if not part:
        m.process_block(buf)
        return
    p = 0
    while p < n:
        m.process_part(buf, part, 1 if p + part >= n else 0)
        p += part
one_block()
# one second of audio per run; the host is shared, so the caller keeps the
# fastest runs (least disturbed) and the median
runs = %(runs)d
if runs < 0:  # instruction count: process -runs blocks, print nothing
    k = 0
    while k < -runs:
        one_block()
        k += 1
r = 0
while r < runs:
    t0 = time.ticks_us()
    k = 0
    while k < 8:
        one_block()
        k += 1
    print(time.ticks_diff(time.ticks_us(), t0))
    r += 1
"""


SCIPY_LOOP = """
import sys
import numpy as np
from scipy import signal
from dsp import signals, weighting
rate, blocks = 48000, int(sys.argv[1])
n = rate // 8
x = signals.white_noise(rate, 1.0, rms_dbfs=-20.0, seed=3)
sos_a, sos_c = weighting.sos(rate, "A"), weighting.sos(rate, "C")
za, zc = np.zeros((sos_a.shape[0], 2)), np.zeros((sos_c.shape[0], 2))
for k in range(blocks):
    blk = x[(k % 8) * n : (k % 8 + 1) * n]
    ya, za = signal.sosfilt(sos_a, blk, zi=za)
    yc, zc = signal.sosfilt(sos_c, blk, zi=zc)
    float(np.dot(ya, ya))
    float(np.dot(yc, yc))
"""
_COLLECTED = re.compile(r"Collected : (\d+)")
CALLGRIND_BLOCKS = (8, 24)
# words per part of a block as the sensor measures its microphone (hushlight.capture)
SENSOR_PART = 240


def _callgrind(argv: list[str], env: dict[str, str]) -> int:
    proc = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=1200,
        check=False,
    )
    m = _COLLECTED.search(proc.stderr)
    if proc.returncode != 0 or m is None:
        raise RuntimeError(f"callgrind failed on {argv[0]}: {proc.stderr[-800:]}")
    return int(m.group(1))


def instructions_per_sample(run_blocks: Callable[[int], int], block_len: int) -> float:
    lo, hi = (run_blocks(b) for b in CALLGRIND_BLOCKS)
    return (hi - lo) / ((CALLGRIND_BLOCKS[1] - CALLGRIND_BLOCKS[0]) * block_len)


def firmware_ips(name: str, rate: int = 48000, part: int = 0) -> float:
    """x86 instructions per sample of the meter on interpreter `name` (whole
    blocks, or parts of `part` words)."""
    env = upy.firmware_env()

    def blocks(b: int) -> int:
        code = FIRMWARE % {"rate": rate, "runs": -b, "part": part}
        return _callgrind(upy.command("-c", code, name=name), env)

    return instructions_per_sample(blocks, rate // 8)


def scipy_ips(rate: int = 48000) -> float:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
    # one BLAS thread (idle workers add a varying count of spin instructions) and a
    # fixed hash seed (dict and set probes differ from run to run otherwise)
    env.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", PYTHONHASHSEED="0")

    def blocks(b: int) -> int:
        return _callgrind([sys.executable, "-c", SCIPY_LOOP, str(b)], env)

    return instructions_per_sample(blocks, rate // 8)


def firmware_rtf(rate: int, seconds: float, name: str, part: int = 0) -> tuple[float, float]:
    """(best, median) real-time factor over one-second runs; `part` > 0 measures
    each block in parts of that many words, as the sensor reads its microphone."""
    runs = max(3, int(seconds))
    code = FIRMWARE % {"rate": rate, "runs": runs, "part": part}
    out = upy.run_code(code, timeout=600, name=name)
    times_us = sorted(int(v) for v in out.split())
    audio_us = 8 * (rate // 8) * 1e6 / rate
    return audio_us / times_us[0], audio_us / times_us[len(times_us) // 2]


def scipy_rtf(rate: int, seconds: float) -> tuple[float, float]:
    """(best, median) real-time factor of sosfilt on the float A and C chains."""
    x = signals.white_noise(rate, 1.0, rms_dbfs=-20.0, seed=3)
    sos_a = weighting.sos(rate, "A")
    sos_c = weighting.sos(rate, "C")
    n = rate // 8
    za = np.zeros((sos_a.shape[0], 2))
    zc = np.zeros((sos_c.shape[0], 2))
    rtfs = []
    for _ in range(max(3, int(seconds))):
        t0 = time.perf_counter()
        # block by block as the meter works: filter state carried, squares summed
        for k in range(8):
            blk = x[k * n : (k + 1) * n]
            ya, za = signal.sosfilt(sos_a, blk, zi=za)
            yc, zc = signal.sosfilt(sos_c, blk, zi=zc)
            float(np.dot(ya, ya))
            float(np.dot(yc, yc))
        rtfs.append(8 * n / rate / (time.perf_counter() - t0))
    rtfs.sort(reverse=True)
    return rtfs[0], rtfs[len(rtfs) // 2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seconds", type=float, default=20.0, help="one-second runs per rate (default 20)"
    )
    parser.add_argument(
        "--interpreter",
        choices=(*upy.NAMES, "both"),
        default="both",
        help="MicroPython to measure (default both: device, the 32-bit ESP32 stand-in, and host)",
    )
    parser.add_argument(
        "--no-callgrind", action="store_true", help="skip the instruction counts (valgrind)"
    )
    args = parser.parse_args()
    names = upy.NAMES if args.interpreter == "both" else (args.interpreter,)
    best48: dict[str, float] = {}
    for name in names:
        print(f"firmware level meter in MicroPython, {upy.interpreter(name).describe()}")
        for rate in weighting.RATES:
            best, median = firmware_rtf(rate, args.seconds, name)
            if rate == 48000:
                best48[name] = best
            print(
                f"  {rate:>6} Hz: best {best:6.0f}x real time ({1000 / best:5.2f} ms per s of"
                f" audio), median {median:6.0f}x"
            )
        best, median = firmware_rtf(48000, args.seconds, name, SENSOR_PART)
        print(
            f"   48000 Hz in parts of {SENSOR_PART} words, as the sensor reads: best {best:6.0f}x,"
            f" median {median:6.0f}x"
        )
    sp_best, sp_median = scipy_rtf(48000, args.seconds)
    print(
        f"scipy sosfilt, float64 A+C chain, CPython, 48000 Hz: best {sp_best:6.0f}x,"
        f" median {sp_median:6.0f}x"
    )
    for name, fw in best48.items():
        verdict = "meets" if fw >= TARGET else "MISSES"
        print(
            f"{name:>6}: ratio firmware / scipy at 48000 Hz (best runs) {fw / sp_best:.3f};"
            f" target {TARGET:.0f}x: {verdict} ({fw:.0f}x, best run)"
        )
    if args.no_callgrind:
        return 0
    if shutil.which("valgrind") is None:
        print("instructions per sample: valgrind is not installed (apt-get install valgrind)")
        return 0
    print(
        "instructions per sample at 48000 Hz (valgrind --tool=callgrind, "
        f"{CALLGRIND_BLOCKS[1]} minus {CALLGRIND_BLOCKS[0]} blocks):"
    )
    ref = scipy_ips()
    for name in names:
        ips = firmware_ips(name)
        print(f"  firmware, {name:>6}: {ips:8.1f}   ratio to scipy sosfilt {ips / ref:.3f}")
        ips = firmware_ips(name, part=SENSOR_PART)
        print(
            f"  firmware, {name:>6}, parts of {SENSOR_PART} words: {ips:8.1f}"
            f"   ratio to scipy sosfilt {ips / ref:.3f}"
        )
    print(f"  scipy sosfilt, float64 A+C, CPython: {ref:8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
