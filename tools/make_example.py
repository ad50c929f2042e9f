"""Synthesise the bundled example recording `tools/data/example-night.wav`.

A 12 s night street, 16 kHz 16-bit mono (under 400 KB): quiet street noise
(pink noise with a low traffic rumble), a shout of two syllables from about
5 s to 7 s, then quiet again. The shout is a voice-like harmonic complex
with a gliding pitch and vowel-like formant emphasis, so the A and C
weightings see it as they would a voice. Deterministic (fixed seeds):
`python -m tools.make_example` rewrites the same bytes, and a test checks the
bundled file against a fresh synthesis.

Levels assume the default INMP441 sensitivity (-26 dBFS at 94 dB SPL, so
0 dBFS is 120 dB SPL): the street sits around 45 dB(A) (LCeq about 9 dB
higher, from the rumble), the shout reaches the low 80s dB(A).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt
from scipy import signal

from dsp import signals
from dsp.wavfile import write_wav

EXAMPLE: Final = Path(__file__).resolve().parent / "data" / "example-night.wav"
RATE: Final = 16000
SECONDS: Final = 12.0

FloatArray = npt.NDArray[np.float64]


def _envelope(rate: int, start_s: float, stop_s: float, total: int) -> FloatArray:
    """0 outside [start, stop), raised-cosine attack (40 ms) and release (150 ms) inside."""
    env = np.zeros(total)
    a, b = round(start_s * rate), round(stop_s * rate)
    env[a:b] = 1.0
    attack, release = round(0.04 * rate), round(0.15 * rate)
    env[a : a + attack] = 0.5 - 0.5 * np.cos(np.pi * np.arange(attack) / attack)
    env[b - release : b] *= 0.5 + 0.5 * np.cos(np.pi * np.arange(release) / release)
    return env


def _voice(rate: int, total: int, f0_hz: float, seed: int) -> FloatArray:
    """Harmonics of a gliding pitch, weighted by two vowel-like formants (~700, ~1200 Hz)."""
    t = np.arange(total) / rate
    rng = np.random.default_rng(seed)
    # pitch rises then falls by a few semitones, with a little vibrato
    f0 = f0_hz * (1.0 + 0.15 * np.sin(np.pi * t / t[-1])) * (1 + 0.01 * np.sin(2 * np.pi * 5.5 * t))
    phase = 2 * np.pi * np.cumsum(f0) / rate
    out = np.zeros(total)
    for k in range(1, 25):
        fk = k * f0_hz
        if fk >= rate / 2 * 0.9:
            break
        formants = 1.0 / (1 + ((fk - 700) / 250) ** 2) + 0.6 / (1 + ((fk - 1200) / 300) ** 2)
        out += (0.3 / k + formants) * np.sin(k * phase + rng.uniform(0, 2 * np.pi))
    return out


def night_street(rate: int = RATE, seconds: float = SECONDS) -> FloatArray:
    """The example's samples (full scale 1)."""
    total = round(seconds * rate)
    street = signals.pink_noise(rate, seconds, -72.0, seed=20)
    # traffic rumble far away: low-passed noise, most of its energy under 200 Hz
    sos = signal.butter(2, 200.0, fs=rate, output="sos")
    rumble = signal.sosfilt(sos, signals.white_noise(rate, seconds, 0.0, seed=21))
    rumble *= signals.dbfs_to_rms(-66.0) / np.sqrt(np.mean(rumble**2))
    shout = _voice(rate, total, 290.0, seed=22) * (
        0.7 * _envelope(rate, 5.0, 5.55, total) + _envelope(rate, 5.8, 6.9, total)
    )
    loud = shout[round(5.8 * rate) : round(6.9 * rate)]
    shout *= signals.dbfs_to_rms(-36.0) / np.sqrt(np.mean(loud**2))
    return np.asarray(street + rumble + shout, dtype=np.float64)


def write_example(path: Path = EXAMPLE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_wav(path, RATE, night_street(), "pcm16")
    return path


if __name__ == "__main__":
    print(write_example(Path(sys.argv[1]) if len(sys.argv) > 1 else EXAMPLE))
