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
    rate: int,
    x: np.ndarray,
    interval_s: float = 1.0,
    sensitivity_dbfs: float = -26.0,
    calibration_offset_db: float = 0.0,
) -> list[reference.Interval]:
    return reference.measure(
        rate,
        x,
        interval_s,
        sensitivity_dbfs=sensitivity_dbfs,
        calibration_offset_db=calibration_offset_db,
        sos_a=FLAT,
        sos_c=FLAT,
    )


@pytest.mark.parametrize("rate", [48000, 44100, 32000, 16000])
def test_full_scale_sine_reads_94_minus_sensitivity(rate: int) -> None:
    # 1 kHz over eight blocks: whole periods except at 44.1 kHz, where the
    # 8 * 5512 samples end mid-period; the expectation uses the samples' own
    # mean square, so only the convention is under test
    x = signals.sine(rate, 1000.0, 1.0)
    n = 8 * (rate // 8)
    excess = 10 * math.log10(np.mean(x[:n] ** 2) / 0.5)
    assert abs(excess) < 0.01
    (iv,) = flat_measure(rate, x)
    assert iv.laeq == pytest.approx(120.0 + excess, abs=1e-6)
    assert iv.lceq == pytest.approx(120.0 + excess, abs=1e-6)
    (iv,) = flat_measure(rate, x, sensitivity_dbfs=-38.0, calibration_offset_db=1.5)
    assert iv.laeq == pytest.approx(94.0 + 38.0 + 1.5 + excess, abs=1e-6)


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


def test_44100_blocks_are_the_firmware_blocks_of_5512_samples() -> None:
    # rate // 8, as the firmware, whose 1 ms Fast sub-blocks (53 samples) divide it
    meter = reference.ReferenceMeter(44100, sos_a=FLAT, sos_c=FLAT)
    blocks = meter.process(np.zeros(44100 * 2))
    assert {b.samples for b in blocks} == {5512}
    assert len(blocks) == 16  # 88200 samples: 16 blocks and 8 samples short of another
    ivs = list(reference.intervals(blocks, 44100, 1.0))
    assert [(iv.t0, iv.t1) for iv in ivs] == [(0.0, 44096 / 44100), (44096 / 44100, 88192 / 44100)]


def test_default_filters_are_the_weighting_design() -> None:
    # 1 kHz reads the same through A and C (both 0 dB there), 100 Hz does not:
    # A is about 19 dB down, C a fraction of a dB (IEC 61672-1 Table 3)
    rate = 48000
    (k1,) = reference.measure(rate, signals.sine(rate, 1000.0, 1.0, -20.0))
    (h1,) = reference.measure(rate, signals.sine(rate, 100.0, 1.0, -20.0))
    assert k1.laeq == pytest.approx(100.0, abs=0.1) and k1.lceq == pytest.approx(100.0, abs=0.1)
    assert h1.laeq == pytest.approx(100.0 - 19.1, abs=0.3)
    assert h1.lceq == pytest.approx(100.0 - 0.3, abs=0.3)


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


def test_summary_percentiles_are_nearest_rank_of_the_block_levels() -> None:
    # 16 blocks of a 1 kHz tone at 50, 51, ... 65 dB (shuffled): each 125 ms
    # block holds whole periods at 16 kHz, so each block reads its level exactly
    rate = 16000
    order = [7, 0, 15, 3, 12, 9, 1, 14, 4, 11, 6, 2, 13, 8, 10, 5]
    x = np.concatenate([signals.sine(rate, 1000.0, 0.125, 50.0 + k - 120.0) for k in order])
    blocks = reference.ReferenceMeter(rate, sos_a=FLAT, sos_c=FLAT).process(x)
    s = reference.summary(blocks, rate)
    # loudest first: 65, 64, ... 50; L10 is rank ceil(1.6) = 2, L50 rank 8, L90 rank ceil(14.4) = 15
    assert s.l10 == pytest.approx(64.0, abs=1e-9)
    assert s.l50 == pytest.approx(58.0, abs=1e-9)
    assert s.l90 == pytest.approx(51.0, abs=1e-9)
    assert s.lamin == pytest.approx(50.0, abs=1e-9)
    energy = np.mean([10 ** ((50.0 + k) / 10) for k in range(16)])
    assert s.laeq == pytest.approx(10 * math.log10(energy), abs=1e-9)
    assert (s.t0, s.t1, s.peaks) == (0.0, 2.0, 0)  # no threshold given: no peaks
    assert s.as_dict()["l50"] == 58.0


def test_peaks_are_upward_crossings_of_the_fast_level() -> None:
    # three 300 ms shouts at 90 dB over a 40 dB street, one straddling a block
    # edge and the stream split into odd chunks: three peaks over 70 dB
    rate = 16000
    quiet = signals.sine(rate, 500.0, 4.0, 40.0 - 120.0)
    x = quiet.copy()
    for start in (0.5, 1.7, 3.01):
        a = round(start * rate)
        x[a : a + round(0.3 * rate)] = signals.sine(rate, 500.0, 0.3, 90.0 - 120.0)
    meter = reference.ReferenceMeter(
        rate, sos_a=FLAT, sos_c=FLAT, peak_threshold_ms=reference.mean_square(70.0)
    )
    blocks = [b for chunk in np.array_split(x, 7) for b in meter.process(chunk)]
    assert reference.summary(blocks, rate).peaks == 3
    assert [b.index for b in blocks if b.peaks] == [4, 13, 24]
    assert reference.level_db(reference.mean_square(70.0, -30.0, 2.0), -30.0, 2.0) == 70.0


def test_summary_needs_a_block() -> None:
    with pytest.raises(ValueError, match="no blocks to summarise"):
        reference.summary([], 48000)


@pytest.mark.parametrize("interval", [0.0, -1.0, 0.1, 1.3, float("nan")])
def test_interval_must_be_a_multiple_of_125_ms(interval: float) -> None:
    with pytest.raises(ValueError, match=r"not a positive multiple of 0\.125 s"):
        reference.intervals([], 48000, interval)


def test_bad_rate_is_refused() -> None:
    with pytest.raises(ValueError, match="sample rate 0"):
        reference.ReferenceMeter(0, sos_a=FLAT, sos_c=FLAT)


def test_the_summary_has_the_wire_summary_fields() -> None:
    # the reference meter's minute summary is what a sensor sends, less its
    # sequence number and flags: the field names come from the protocol's table
    from dataclasses import fields

    from protocol import schema

    wire = [name for name, *_ in schema.SUMMARY if name not in ("seq", "flags")]
    assert [f.name for f in fields(reference.Summary)] == wire
