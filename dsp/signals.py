"""Test signals for the level meter, and the I2S word layout of the microphone.

Conventions used by every function here:

- Samples are float64 with digital full scale at 1.0 (a sample of 1.0 is the
  largest positive value the converter can deliver).
- Levels are dBFS per AES17: a sine whose peak is at full scale is 0 dBFS.
  A sine of level ``L`` dBFS therefore has peak ``10**(L/20)`` and RMS
  ``10**(L/20) / sqrt(2)``; a noise "at ``L`` dBFS RMS" has the RMS of that sine.
- The sample rate is always an explicit parameter (Hz, positive integer), and
  durations are seconds; the number of samples is ``round(seconds * rate)``.
- Nothing is clipped here: a level above full scale stays above 1.0 until it
  is converted with `to_i2s_words`, which clips as the microphone would.

`to_i2s_words` turns such samples into what the ESP32 I2S peripheral delivers
for a 24-bit INMP441 word: the sample rounded to 24-bit two's complement
(``round(x * 2**23)`` clipped to ``[-2**23, 2**23 - 1]``) and left-justified in
a 32-bit slot (shifted left by 8, the low byte zero).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

__all__ = [
    "I2S_SHIFT",
    "I2S_WORD_MAX",
    "I2S_WORD_MIN",
    "dbfs_to_peak",
    "dbfs_to_rms",
    "pink_noise",
    "silence",
    "sine",
    "square",
    "to_i2s_words",
    "toneburst",
    "white_noise",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int32]

# INMP441: 24-bit two's complement, MSB first, in a 32-bit I2S slot.
_BITS = 24
I2S_SHIFT = 32 - _BITS
I2S_WORD_MIN = -(1 << (_BITS - 1))
I2S_WORD_MAX = (1 << (_BITS - 1)) - 1


def _check_rate(rate: int) -> None:
    if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or rate <= 0:
        raise ValueError(f"sample rate {rate!r} is not valid; give a positive integer in Hz")


def _check_seconds(name: str, seconds: float) -> None:
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{name} {seconds!r} s is not valid; give a finite duration >= 0 s")


def _check_level(name: str, level: float) -> None:
    if not math.isfinite(level):
        raise ValueError(f"{name} {level!r} dBFS is not valid; give a finite level in dBFS")


def _check_freq(rate: int, freq: float) -> None:
    if not math.isfinite(freq) or freq <= 0 or freq >= rate / 2:
        raise ValueError(
            f"frequency {freq!r} Hz is not valid at {rate} Hz; give a frequency "
            f"between 0 and the Nyquist frequency {rate / 2:g} Hz (both excluded)"
        )


def _count(rate: int, seconds: float) -> int:
    return round(seconds * rate)


def dbfs_to_peak(dbfs: float) -> float:
    """Peak amplitude (full scale 1) of a sine at `dbfs` (AES17)."""
    return math.pow(10.0, dbfs / 20.0)


def dbfs_to_rms(dbfs: float) -> float:
    """RMS (full scale 1) of a signal at `dbfs` (AES17: the RMS of a sine of that level)."""
    return dbfs_to_peak(dbfs) / math.sqrt(2.0)


def silence(rate: int, seconds: float) -> FloatArray:
    """Digital silence: `seconds` of zeros."""
    _check_rate(rate)
    _check_seconds("duration", seconds)
    return np.zeros(_count(rate, seconds))


def sine(rate: int, freq: float, seconds: float, dbfs: float = 0.0) -> FloatArray:
    """A sine of `freq` Hz at `dbfs` (peak ``10**(dbfs/20)``), starting at phase 0."""
    _check_rate(rate)
    _check_freq(rate, freq)
    _check_seconds("duration", seconds)
    _check_level("level", dbfs)
    n = np.arange(_count(rate, seconds), dtype=np.float64)
    return dbfs_to_peak(dbfs) * np.sin(2.0 * np.pi * freq * n / rate)


def square(rate: int, freq: float, seconds: float, amplitude: float = 1.0) -> FloatArray:
    """A square wave of `freq` Hz swinging between +`amplitude` and -`amplitude`.

    Not band-limited on purpose: the full-scale square is the hardest input for
    the fixed-point filters (largest sustained energy at every harmonic).
    """
    _check_rate(rate)
    _check_freq(rate, freq)
    _check_seconds("duration", seconds)
    if not math.isfinite(amplitude) or amplitude <= 0:
        raise ValueError(f"amplitude {amplitude!r} is not valid; give a positive number")
    n = np.arange(_count(rate, seconds), dtype=np.float64)
    # fractional position in the period decides the half: high first, as a sine starts rising
    phase = np.mod(n * freq / rate, 1.0)
    return np.where(phase < 0.5, amplitude, -amplitude).astype(np.float64)


def _normalise_rms(x: FloatArray, rms_dbfs: float) -> FloatArray:
    rms = float(np.sqrt(np.mean(x * x))) if x.size else 0.0
    if rms == 0.0:
        return x
    return x * (dbfs_to_rms(rms_dbfs) / rms)


def white_noise(rate: int, seconds: float, rms_dbfs: float, seed: int) -> FloatArray:
    """Gaussian white noise whose RMS is exactly that of a sine at `rms_dbfs`.

    The same `seed` gives the same samples; peaks reach about 4.5 times the
    RMS, so stay below about -16 dBFS RMS to avoid clipping in `to_i2s_words`.
    """
    _check_rate(rate)
    _check_seconds("duration", seconds)
    _check_level("RMS level", rms_dbfs)
    rng = np.random.default_rng(seed)
    return _normalise_rms(rng.standard_normal(_count(rate, seconds)), rms_dbfs)


def pink_noise(rate: int, seconds: float, rms_dbfs: float, seed: int) -> FloatArray:
    """Pink (1/f power, -3 dB per octave) noise, RMS exactly that of a sine at `rms_dbfs`.

    Made by shaping the spectrum of white Gaussian noise by ``1/sqrt(f)`` in
    one FFT, so every band of equal relative width (octave, 1/3 octave) holds
    the same power, down to the lowest bin ``rate / n``; the DC bin is zero.
    """
    _check_rate(rate)
    _check_seconds("duration", seconds)
    _check_level("RMS level", rms_dbfs)
    count = _count(rate, seconds)
    if count < 2:
        return np.zeros(count)
    rng = np.random.default_rng(seed)
    spectrum = np.fft.rfft(rng.standard_normal(count))
    freqs = np.fft.rfftfreq(count, d=1.0 / rate)
    gain = np.zeros_like(freqs)
    gain[1:] = 1.0 / np.sqrt(freqs[1:])
    pink = np.fft.irfft(spectrum * gain, n=count)
    return _normalise_rms(pink, rms_dbfs)


def toneburst(
    rate: int,
    freq: float,
    burst_s: float,
    level_dbfs: float,
    total_s: float,
    lead_s: float = 0.5,
) -> FloatArray:
    """A tone burst as in IEC 61672-1:2013 (5.9, Table 4): silence, burst, silence.

    The burst is cut from the steady sine of `freq` Hz at `level_dbfs`: it
    holds a whole number of cycles (``burst_s * freq`` must be an integer),
    starts on a rising zero crossing `lead_s` seconds into the signal and ends
    on a zero crossing; everything else up to `total_s` is silence. At rates
    where the period is not a whole number of samples, the burst holds the
    samples that fall inside its ``burst_s`` window.
    """
    _check_rate(rate)
    _check_freq(rate, freq)
    _check_seconds("burst duration", burst_s)
    _check_seconds("total duration", total_s)
    _check_seconds("lead-in", lead_s)
    _check_level("level", level_dbfs)
    cycles = burst_s * freq
    if burst_s <= 0 or abs(cycles - round(cycles)) > 1e-6 or round(cycles) < 1:
        raise ValueError(
            f"burst of {burst_s!r} s at {freq!r} Hz holds {cycles:g} cycles; give a duration "
            "holding a whole number (>= 1) of cycles, as IEC 61672-1 tone bursts do"
        )
    if lead_s + burst_s > total_s:
        raise ValueError(
            f"lead-in {lead_s!r} s plus burst {burst_s!r} s exceed the total {total_s!r} s; "
            "give a longer total duration"
        )
    out = np.zeros(_count(rate, total_s))
    start = math.ceil(lead_s * rate - 1e-9)
    t0 = start / rate - lead_s  # sub-sample offset when lead_s * rate is not whole
    # samples whose time since the burst start lies in [0, burst_s): whole cycles only
    length = math.ceil((round(cycles) / freq - t0) * rate - 1e-9)
    k = np.arange(min(length, out.size - start), dtype=np.float64)
    out[start : start + k.size] = dbfs_to_peak(level_dbfs) * np.sin(
        2.0 * np.pi * freq * (k / rate + t0)
    )
    return out


def to_i2s_words(x: npt.ArrayLike) -> IntArray:
    """Float samples (full scale 1) -> int32 words as the ESP32 I2S reads an INMP441.

    ``round(x * 2**23)`` (half to even), clipped to the 24-bit range as the
    microphone's converter saturates, then left-justified in 32 bits.
    """
    samples = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(samples)):
        raise ValueError("samples contain NaN or infinity; give finite samples (full scale 1)")
    words = np.clip(np.rint(samples * float(1 << (_BITS - 1))), I2S_WORD_MIN, I2S_WORD_MAX)
    return (words.astype(np.int64) << I2S_SHIFT).astype(np.int32)
