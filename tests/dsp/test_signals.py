"""Tests of dsp/signals.py: levels per AES17, spectra, tone bursts, I2S words."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest

from dsp import signals


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x))))


@pytest.mark.parametrize("rate", [48000, 44100, 32000, 16000])
@pytest.mark.parametrize("dbfs", [0.0, -6.0, -40.0])
def test_sine_level_follows_aes17(rate: int, dbfs: float) -> None:
    # one second of a 1 kHz sine holds whole periods at every rate, so its
    # mean square is exactly peak^2 / 2
    x = signals.sine(rate, 1000.0, 1.0, dbfs)
    assert x.size == rate
    peak = 10 ** (dbfs / 20)
    # the sampled maximum lies within half a sample of the true peak
    assert peak * math.cos(math.pi * 1000 / rate) <= np.max(np.abs(x)) <= peak * (1 + 1e-12)
    assert rms(x) == pytest.approx(peak / math.sqrt(2), rel=1e-9)
    # the convention in one line: RMS level re the full-scale sine
    assert 20 * math.log10(rms(x) * math.sqrt(2)) == pytest.approx(dbfs, abs=1e-9)


def test_sine_frequency_is_where_the_spectrum_peaks() -> None:
    rate = 16000
    x = signals.sine(rate, 1250.0, 0.5)
    spectrum = np.abs(np.fft.rfft(x))
    assert np.fft.rfftfreq(x.size, 1 / rate)[np.argmax(spectrum)] == 1250.0
    assert x[0] == 0.0 and x[1] > 0  # starts at phase 0, rising


@pytest.mark.parametrize("make", [signals.white_noise, signals.pink_noise])
def test_noise_rms_matches_the_requested_level_and_seed_repeats(
    make: Callable[[int, float, float, int], np.ndarray],
) -> None:
    gen = make
    x = gen(48000, 0.5, -30.0, 7)
    assert rms(x) == pytest.approx(10 ** (-30 / 20) / math.sqrt(2), rel=1e-12)
    assert np.array_equal(x, gen(48000, 0.5, -30.0, 7))
    assert not np.array_equal(x, gen(48000, 0.5, -30.0, 8))


def _octave_powers(x: np.ndarray, rate: int, centres: list[float]) -> np.ndarray:
    spectrum = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(x.size, 1 / rate)
    out = []
    for fc in centres:
        band = (freqs >= fc / math.sqrt(2)) & (freqs < fc * math.sqrt(2))
        out.append(spectrum[band].sum())
    return np.asarray(10 * np.log10(np.array(out)), dtype=np.float64)


def test_pink_noise_has_equal_power_per_octave() -> None:
    rate = 48000
    centres = [125.0, 250.0, 500.0, 1000.0, 2000.0, 4000.0, 8000.0]
    levels = _octave_powers(signals.pink_noise(rate, 4.0, -20.0, 1), rate, centres)
    assert np.ptp(levels) < 0.6  # 1/f power: every octave holds the same power


def test_white_noise_gains_3_db_per_octave() -> None:
    rate = 48000
    centres = [250.0, 500.0, 1000.0, 2000.0, 4000.0]
    levels = _octave_powers(signals.white_noise(rate, 4.0, -20.0, 1), rate, centres)
    # flat density: power per octave doubles with the octave's width
    assert np.diff(levels) == pytest.approx(np.full(4, 10 * math.log10(2)), abs=0.4)


def test_square_swings_between_plus_and_minus_amplitude() -> None:
    x = signals.square(48000, 1000.0, 0.01, amplitude=0.5)
    assert set(np.unique(x)) == {-0.5, 0.5}
    assert x[:24].tolist() == [0.5] * 24 and x[24:48].tolist() == [-0.5] * 24
    assert np.mean(x) == 0.0


def test_silence_is_zeros_of_the_right_length() -> None:
    x = signals.silence(44100, 0.125)
    assert x.shape == (5512,) and not x.any()  # round(0.125 * 44100) = 5512.5 -> 5512


@pytest.mark.parametrize(("rate", "burst_s"), [(48000, 0.2), (48000, 0.002), (48000, 0.00025)])
def test_toneburst_is_whole_cycles_of_the_steady_sine(rate: int, burst_s: float) -> None:
    freq, lead = 4000.0, 0.25
    x = signals.toneburst(rate, freq, burst_s, -10.0, 1.0, lead_s=lead)
    start = round(lead * rate)
    length = round(burst_s * rate)  # 4 kHz at 48 kHz: 12 samples a cycle
    steady = signals.sine(rate, freq, burst_s, -10.0)
    np.testing.assert_allclose(x[start : start + length], steady, rtol=0, atol=1e-12)
    assert not x[:start].any() and not x[start + length :].any()
    # whole cycles: the burst sums to zero and its energy is the steady one's
    assert abs(x.sum()) < 1e-9
    assert np.sum(x * x) == pytest.approx(np.sum(steady * steady), rel=1e-12)


def test_toneburst_at_a_rate_without_whole_sample_periods_keeps_its_window() -> None:
    rate, freq, burst = 44100, 4000.0, 0.002  # 11.025 samples a cycle
    x = signals.toneburst(rate, freq, burst, 0.0, 0.5, lead_s=0.1)
    nz = np.nonzero(x)[0]
    # samples at times [0, 2 ms) after the burst start, the first one at phase 0 (zero)
    first = math.ceil(0.1 * rate)
    assert nz[0] == first + 1 and nz[-1] <= first + math.ceil(burst * rate) - 1
    energy = float(np.sum(x * x)) / rate
    assert energy == pytest.approx(burst / 2, rel=0.01)


def test_i2s_words_are_24_bit_left_justified() -> None:
    x = [0.0, 1.0, -1.0, 0.5, -0.5, 2.0**-23, 2.0**-24, 3 * 2.0**-24, 5.0, -5.0]
    words = signals.to_i2s_words(x)
    assert words.dtype == np.int32
    expected = [
        0,
        (2**23 - 1) * 256,  # +1.0 saturates at the largest 24-bit code
        -(2**31),
        2**30,
        -(2**30),
        256,
        0,  # half an LSB rounds to even (0)
        2 * 256,  # one and a half LSB rounds to even (2)
        (2**23 - 1) * 256,
        -(2**31),
    ]
    assert words.tolist() == expected
    assert not (words & 0xFF).any()


def test_i2s_words_refuse_nan() -> None:
    with pytest.raises(ValueError, match="NaN"):
        signals.to_i2s_words([0.0, float("nan")])


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: signals.sine(0, 1000.0, 1.0), "sample rate 0"),
        (lambda: signals.sine(48000.0, 1000.0, 1.0), "sample rate 48000.0"),  # type: ignore[arg-type]
        (lambda: signals.sine(16000, 8000.0, 1.0), "frequency 8000.0 Hz"),
        (lambda: signals.sine(16000, -1.0, 1.0), "Nyquist"),
        (lambda: signals.sine(16000, 100.0, -1.0), "duration -1.0 s"),
        (lambda: signals.sine(16000, 100.0, 1.0, float("inf")), "level inf dBFS"),
        (lambda: signals.white_noise(16000, 1.0, float("nan"), 1), "RMS level nan"),
        (lambda: signals.square(16000, 100.0, 1.0, amplitude=0.0), "amplitude 0.0"),
        (lambda: signals.toneburst(48000, 4000.0, 0.0003, 0.0, 1.0), "whole number"),
        (lambda: signals.toneburst(48000, 4000.0, 0.2, 0.0, 0.5, lead_s=0.4), "exceed the total"),
    ],
)
def test_bad_arguments_raise_a_sentence(call: Callable[[], object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()
