"""Tests of dsp/reference.py: level convention, Fast time weighting, block clock, intervals.

The mechanics are tested with an all-pass "weighting" (one identity section),
so every expectation follows from the definitions alone; the real weightings
are exercised in test_acoustics.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from dsp import reference, signals

FLAT = [[1.0, 0.0, 0.0, 1.0, 0.0, 0.0]]  # one pass-through second-order section


def flat_measure(
    rate: int, x: np.ndarray, interval_s: float = 1.0, **kw: float
) -> list[reference.Interval]:
    return reference.measure(rate, x, interval_s, sos_a=FLAT, sos_c=FLAT, **kw)


@pytest.mark.parametrize("rate", [48000, 44100, 32000, 16000])
def test_full_scale_sine_reads_94_minus_sensitivity(rate: int) -> None:
    x = signals.sine(rate, 1000.0, 1.0)
    (iv,) = flat_measure(rate, x)
    assert iv.laeq == pytest.approx(120.0, abs=1e-6)
    assert iv.lceq == pytest.approx(120.0, abs=1e-6)
    (iv,) = flat_measure(rate, x, sensitivity_dbfs=-38.0, calibration_offset_db=1.5)
    assert iv.laeq == pytest.approx(94.0 + 38.0 + 1.5, abs=1e-6)


def test_level_db_convention_and_floor() -> None:
    assert reference.level_db(0.5) == pytest.approx(120.0)
    assert reference.level_db(0.5e-6) == pytest.approx(60.0)
    assert reference.level_db(0.5, -26.0, -2.0) == pytest.approx(118.0)
    assert reference.level_db(0.0) == reference.LEVEL_FLOOR_DB
    assert reference.level_db(1e-40) == reference.LEVEL_FLOOR_DB


def test_fast_max_of_a_step_follows_the_exponential() -> None:
    # a DC step of mean square 1 switched on at t = 0: the Fast mean square is
    # 1 - exp(-t / 0.125 s), sampled; the first block's max is at its last sample
    rate = 16000
    x = np.ones(rate)
    meter = reference.ReferenceMeter(rate, sos_a=FLAT, sos_c=FLAT)
    blocks = meter.process(x)
    a = math.exp(-1 / (0.125 * rate))
    for b in blocks:
        n_end = b.start + b.samples  # samples seen so far
        assert b.fast_max == pytest.approx(1 - a**n_end, rel=1e-12)


@pytest.mark.parametrize(("burst_s", "iec_db"), [(0.2, -1.0), (0.002, -18.0), (0.00025, -27.0)])
def test_fast_toneburst_response_matches_iec_61672_1_table_4(burst_s: float, iec_db: float) -> None:
    # IEC 61672-1:2013 Table 4: Fast tone-burst response 10 lg(1 - exp(-Tb / tau)),
    # rounded to 0.1 dB in the table; the flat meter must hit the formula itself
    rate = 48000
    steady = signals.sine(rate, 4000.0, 1.0, -20.0)
    burst = signals.toneburst(rate, 4000.0, burst_s, -20.0, 1.0, lead_s=0.25)
    (ref,) = flat_measure(rate, steady)
    (iv,) = flat_measure(rate, burst)
    response = iv.lafmax - ref.laeq
    exact = 10 * math.log10(1 - math.exp(-burst_s / 0.125))
    assert response == pytest.approx(exact, abs=0.05)
    assert response == pytest.approx(iec_db, abs=0.1)


def test_44100_block_clock_alternates_5512_and_5513_samples() -> None:
    meter = reference.ReferenceMeter(44100, sos_a=FLAT, sos_c=FLAT)
    blocks = meter.process(np.zeros(44100 * 2))
    assert [b.samples for b in blocks[:4]] == [5512, 5513, 5512, 5513]
    assert len(blocks) == 16
    assert blocks[-1].start + blocks[-1].samples == 88200  # no drift over two seconds


def test_streaming_in_odd_chunks_gives_the_same_blocks_as_one_call() -> None:
    rate = 32000
    x = signals.pink_noise(rate, 1.3, -20.0, 4)
    whole = reference.ReferenceMeter(rate, sos_a=FLAT, sos_c=FLAT).process(x)
    meter = reference.ReferenceMeter(rate, sos_a=FLAT, sos_c=FLAT)
    pieces = []
    for chunk in np.array_split(x, [1, 777, 4000, 4001, 30000]):
        pieces.extend(meter.process(chunk))
    assert len(pieces) == len(whole) == 10  # 1.3 s: ten whole blocks, the rest dropped
    for p, w in zip(pieces, whole, strict=True):
        assert (p.index, p.start, p.samples) == (w.index, w.start, w.samples)
        assert p.sum_a == pytest.approx(w.sum_a, rel=1e-12)
        assert p.fast_max == pytest.approx(w.fast_max, rel=1e-12)


def test_intervals_are_whole_then_one_partial_if_a_block_is_left() -> None:
    rate = 16000
    # 2.4 s: two whole 1 s intervals, then 3 whole blocks (0.375 s), then 0.025 s dropped
    x = signals.white_noise(rate, 2.4, -30.0, 1)
    ivs = flat_measure(rate, x)
    assert [(iv.t0, iv.t1, iv.blocks) for iv in ivs] == [
        (0.0, 1.0, 8),
        (1.0, 2.0, 8),
        (2.0, 2.375, 3),
    ]
    # 2.1 s: the 0.1 s left is not a whole block, so no partial interval
    assert len(flat_measure(rate, x[: int(2.1 * rate)])) == 2


def test_interval_laeq_is_the_energy_mean_and_lafmax_the_loudest() -> None:
    rate = 16000
    quiet = signals.sine(rate, 1000.0, 0.5, -60.0)
    loud = signals.sine(rate, 1000.0, 0.5, -20.0)
    (iv,) = flat_measure(rate, np.concatenate([quiet, loud]))
    expected = 10 * math.log10((10 ** (-6) + 10 ** (-2)) / 2) + 120.0
    assert iv.laeq == pytest.approx(expected, abs=1e-3)
    # after 0.5 s of the loud tone the Fast level is within 1 - exp(-4) of steady
    assert iv.lafmax == pytest.approx(100.0 + 10 * math.log10(1 - math.exp(-4)), abs=0.02)


def test_silence_reads_the_floor_not_minus_infinity() -> None:
    (iv,) = flat_measure(16000, signals.silence(16000, 1.0))
    assert iv.laeq == iv.lafmax == iv.lceq == reference.LEVEL_FLOOR_DB
    assert iv.as_dict() == {"t0": 0.0, "t1": 1.0, "laeq": -100.0, "lafmax": -100.0, "lceq": -100.0}


@pytest.mark.parametrize("interval", [0.0, -1.0, 0.1, 1.3, float("nan")])
def test_interval_must_be_a_multiple_of_125_ms(interval: float) -> None:
    with pytest.raises(ValueError, match=r"not a positive multiple of 0\.125 s"):
        reference.intervals([], 48000, interval)


def test_bad_rate_is_refused() -> None:
    with pytest.raises(ValueError, match="sample rate 0"):
        reference.ReferenceMeter(0, sos_a=FLAT, sos_c=FLAT)
