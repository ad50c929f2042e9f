"""The demo's scripted night on a simulated Naamsestraat, as one WAV per sensor.

Seven sensors hang on lamp posts 60 m apart along a straight street. Sound
sources move along the street's centre line (or sit in a window) and reach
each microphone with spherical spreading (-20 log10 of the distance, 1 m
reference) and the propagation delay of the distance (343 m/s), both varying
with time for a moving source, so a group walking by is heard first by
ns-01 and last by ns-07, and the car's pitch drops as it passes (Doppler).
Each sensor also hears its own quiet street background.

The script (seconds of audio; a real night's quiet gaps are cut short):

====  ======  ==============================================================
from  to      what
====  ======  ==============================================================
0     30      quiet street (about 40 dB(A))
30    90      a group walks by, shouting (three voices, bursts of syllables)
90    120     quiet
120   190     music from an open window near ns-03, bass-heavy (LCeq-LAeq)
200   235     a car passes at about 55 km/h
235   270     quiet again
====  ======  ==============================================================

Levels: samples are full scale 1 with the INMP441 convention of DESIGN.md
(0 dBFS = 120 dB SPL); source levels below are unweighted RMS at 1 m.
Everything is deterministic: fixed seeds, so the same WAVs every run.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt
from scipy import signal

from dsp import signals
from dsp.wavfile import write_wav

FloatArray = npt.NDArray[np.float64]

RATE: Final = 16000
SECONDS: Final = 270.0
SPEED_OF_SOUND: Final = 343.0
# A full-scale sine is 0 dBFS and, with the INMP441's -26 dBFS at 94 dB SPL, 120 dB SPL.
FULL_SCALE_SPL: Final = 120.0
SENSORS: Final = tuple(f"ns-{i:02d}" for i in range(1, 8))
SPACING_M: Final = 60.0
FIRST_M: Final = 30.0
# Microphones sit on lamp posts at the kerb, ~4 m up; sources walk or drive
# ~4 m from the kerb: the closest a source on the centre line gets is this.
LATERAL_M: Final = 6.0
BACKGROUND_SPL: Final = 42.0  # unweighted, pink: about 40 dB(A) of distant city


def position(sensor: int) -> float:
    """Where along the street (m) sensor number `sensor` (0-6) hangs."""
    return FIRST_M + SPACING_M * sensor


Generator = Callable[[int, int, int], FloatArray]


@dataclass(frozen=True)
class Event:
    """A sound source: active in [start_s, stop_s), moving from x0_m to x1_m along the street."""

    name: str
    start_s: float
    stop_s: float
    x0_m: float
    x1_m: float
    spl_1m: float  # unweighted RMS level at 1 m while active
    make: Generator  # (rate, samples, seed) -> source signal of RMS 1
    seed: int
    lateral_m: float = LATERAL_M

    def x_at(self, t: FloatArray) -> FloatArray:
        frac = (t - self.start_s) / (self.stop_s - self.start_s)
        return self.x0_m + (self.x1_m - self.x0_m) * frac


def _rms1(x: FloatArray) -> FloatArray:
    rms = math.sqrt(float(np.mean(x**2)))
    return x / rms if rms > 0 else x


def _bursts(
    rate: int, n: int, rng: np.random.Generator, on: tuple[float, float], off: tuple[float, float]
) -> FloatArray:
    """An on/off envelope of random bursts with smooth 30 ms edges."""
    env = np.zeros(n)
    i = int(rng.uniform(0, off[1]) * rate)
    while i < n:
        length = int(rng.uniform(*on) * rate)
        env[i : i + length] = rng.uniform(0.5, 1.0)
        i += length + int(rng.uniform(*off) * rate)
    smooth = np.hanning(max(3, int(0.03 * rate)))
    return np.asarray(signal.oaconvolve(env, smooth / smooth.sum(), mode="same"))


def voices(rate: int, n: int, seed: int) -> FloatArray:
    """Three shouting voices: harmonic complexes with vowel formants, in syllable bursts."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / rate
    out = np.zeros(n)
    for f0 in (180.0, 240.0, 310.0):
        pitch = f0 * (1 + 0.08 * np.sin(2 * np.pi * rng.uniform(0.2, 0.5) * t + rng.uniform(0, 6)))
        phase = 2 * np.pi * np.cumsum(pitch) / rate
        voice = np.zeros(n)
        formant = rng.uniform(650.0, 900.0)
        for k in range(1, int(0.45 * rate / f0)):
            weight = 1.0 / k + 2.0 / (1 + ((k * f0 - formant) / 300.0) ** 2)
            voice += weight * np.sin(k * phase + rng.uniform(0, 2 * np.pi))
        syllables = 0.6 + 0.4 * np.sin(2 * np.pi * 4.0 * t + rng.uniform(0, 6)) ** 2
        out += _rms1(voice) * syllables * _bursts(rate, n, rng, (0.4, 1.2), (0.3, 1.5))
    return _rms1(out)


def music(rate: int, n: int, seed: int) -> FloatArray:
    """Dance music through an open window: 120 bpm kick, a bass line, a soft chord."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / rate
    beat = 0.5
    since = np.mod(t, beat)
    # kick: a 50 Hz sine whose pitch drops from 110 Hz in the first 40 ms, decaying
    kick_f = 50.0 + 60.0 * np.exp(-since / 0.04)
    kick = np.sin(2 * np.pi * np.cumsum(kick_f) / rate) * np.exp(-since / 0.15)
    notes = np.array([55.0, 55.0, 73.4, 82.4])  # A1 A1 D2 E2, one per beat
    f = notes[(t // beat).astype(int) % len(notes)]
    saw = 2 * np.mod(np.cumsum(f) / rate, 1.0) - 1
    bass = signal.sosfilt(signal.butter(2, 250.0, fs=rate, output="sos"), saw)
    chord = sum(np.sin(2 * np.pi * fc * t + rng.uniform(0, 6)) for fc in (220.0, 277.2, 329.6))
    return _rms1(1.0 * _rms1(kick) + 0.8 * _rms1(bass) + 0.12 * _rms1(np.asarray(chord)))


def car(rate: int, n: int, seed: int) -> FloatArray:
    """A passing car: engine firing harmonics around 60 Hz and broadband tyre noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / rate
    engine = sum(np.sin(2 * np.pi * 60.0 * k * t + rng.uniform(0, 6)) / k for k in range(1, 6))
    tyres = signal.sosfilt(
        signal.butter(2, (400.0, 2500.0), btype="bandpass", fs=rate, output="sos"),
        rng.standard_normal(n),
    )
    return _rms1(0.5 * _rms1(np.asarray(engine)) + _rms1(tyres))


SCRIPT: Final = (
    Event("a group walks by, shouting", 30.0, 90.0, -20.0, 440.0, 97.0, voices, seed=31),
    Event(
        "music from an open window",
        120.0,
        190.0,
        160.0,
        160.0,
        104.0,
        music,
        seed=32,
        lateral_m=10.0,
    ),
    Event("a car passes", 200.0, 235.0, -80.0, 460.0, 92.0, car, seed=33),
)
QUIET: Final = "quiet street"


def happening(t: float) -> str:
    """What the script says is going on at `t` seconds of audio."""
    if t < 0:
        return "before the night: the street settles"
    for event in SCRIPT:
        if event.start_s <= t < event.stop_s:
            return event.name
    return QUIET


def _fade(n: int, rate: int) -> FloatArray:
    """Raised-cosine 0.5 s fade in and out so no source starts with a click."""
    ramp = min(n // 2, int(0.5 * rate))
    env = np.ones(n)
    edge = 0.5 - 0.5 * np.cos(np.pi * np.arange(ramp) / ramp)
    env[:ramp] = edge
    env[n - ramp :] = edge[::-1]
    return env


def _heard(event: Event, source: FloatArray, at_m: float, rate: int, total: int) -> FloatArray:
    """The event's signal at a microphone at `at_m`: delayed by and attenuated with distance."""
    out = np.zeros(total)
    first = int(event.start_s * rate)
    last = min(total, int(event.stop_s * rate) + int(2 * rate))  # the tail still in flight
    t = np.arange(first, last) / rate
    # Emission time solves t = te + d(te)/c; one fixed-point step from te = t is
    # within a microsecond at street speeds, far below a sample.
    te = t - _distance(event, t, at_m) / SPEED_OF_SOUND
    te = t - _distance(event, te, at_m) / SPEED_OF_SOUND
    index = (te - event.start_s) * rate
    inside = (index >= 0) & (index < len(source) - 1)
    heard = np.interp(index, np.arange(len(source)), source) * inside
    out[first:last] = heard / _distance(event, te, at_m)
    return out


def _distance(event: Event, t: FloatArray, at_m: float) -> FloatArray:
    x = event.x_at(np.clip(t, event.start_s, event.stop_s))
    return np.hypot(x - at_m, event.lateral_m)


def _background(rate: int, seconds: float, seed: int) -> FloatArray:
    """Pink noise above 30 Hz at BACKGROUND_SPL: a distant city, without infrasonic swells.

    Pink noise reaches down to the lowest frequency its length allows, whose
    slow swings would make a quiet half minute read a dB or two off; a street
    microphone's own high-pass removes them anyway.
    """
    noise = signals.pink_noise(rate, seconds, 0.0, seed=seed)
    noise = signal.sosfilt(signal.butter(2, 30.0, "highpass", fs=rate, output="sos"), noise)
    return np.asarray(_rms1(noise) * signals.dbfs_to_rms(BACKGROUND_SPL - FULL_SCALE_SPL))


def _active(seconds: float) -> list[Event]:
    return [event for event in SCRIPT if event.start_s < seconds]


def sources(rate: int = RATE, seconds: float = SECONDS) -> list[FloatArray]:
    """The signal at 1 m, scaled to its level, of each event starting within `seconds`."""
    out = []
    for event in _active(seconds):
        n = int((event.stop_s - event.start_s) * rate)
        sig = event.make(rate, n, event.seed) * _fade(n, rate)
        out.append(sig * signals.dbfs_to_rms(event.spl_1m - FULL_SCALE_SPL))
    return out


def night(
    sensor: int, rate: int = RATE, seconds: float = SECONDS, *, made: list[FloatArray] | None = None
) -> FloatArray:
    """The whole script as heard by sensor number `sensor` (0-6), full scale 1."""
    if not 0 <= sensor < len(SENSORS):
        raise ValueError(f"sensor number {sensor} does not exist; give 0 to {len(SENSORS) - 1}")
    total = round(seconds * rate)
    made = sources(rate, seconds) if made is None else made
    at_m = position(sensor)
    out = _background(rate, seconds, seed=100 + sensor)
    for event, source in zip(_active(seconds), made, strict=True):
        out += _heard(event, source, at_m, rate, total)
    return out


def write_night(folder: Path, rate: int = RATE, seconds: float = SECONDS) -> dict[str, Path]:
    """One 16-bit WAV per sensor in `folder`: {sensor id: path}."""
    folder.mkdir(parents=True, exist_ok=True)
    made = sources(rate, seconds)
    paths = {}
    for number, sensor in enumerate(SENSORS):
        path = folder / f"{sensor}.wav"
        write_wav(path, rate, night(number, rate, seconds, made=made), "pcm16")
        paths[sensor] = path
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description="write the demo night as one WAV per sensor")
    parser.add_argument("folder", type=Path)
    parser.add_argument("--seconds", type=float, default=SECONDS)
    args = parser.parse_args()
    for sensor, path in write_night(args.folder, seconds=args.seconds).items():
        print(sensor, path)


if __name__ == "__main__":
    main()
