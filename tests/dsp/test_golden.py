"""Golden model: no int32 overflow for full-scale input at every rate, live checks, accuracy."""

from __future__ import annotations

import ast

import numpy as np
import numpy.typing as npt
import pytest

from dsp import codegen, golden, signals, weighting
from dsp import fixedpoint as fp


def words(x: npt.ArrayLike) -> npt.NDArray[np.int64]:
    return np.asarray(signals.to_i2s_words(x), dtype=np.int64)


def run(meter: golden.GoldenMeter, w: npt.NDArray[np.int64]) -> list[golden.BlockResult]:
    n = meter.block_len
    return [meter.process_block(w[k * n : (k + 1) * n]) for k in range(len(w) // n)]


def max_gain_hz(rate: int, name: str) -> float:
    f = np.geomspace(20.0, 0.49 * rate, 2000)
    return float(f[np.argmax(fp.response_db(fp.from_table(rate), name, f))])


@pytest.mark.parametrize("rate", weighting.RATES)
def test_full_scale_worst_cases_stay_inside_int32(rate: int) -> None:
    # squares at the frequency of largest gain, at 20 Hz (the high-pass states
    # swing most) and +-full scale at Nyquist (the differences peak), and a
    # full-scale sine at the largest gain; 125 ms each, one continuous stream
    n = int(0.125 * rate)
    x = np.concatenate(
        [
            signals.square(rate, max_gain_hz(rate, "A"), 0.125),
            signals.square(rate, 20.0, 0.125),
            np.where(np.arange(n) % 2 == 0, 1.0, -1.0),
            signals.sine(rate, max_gain_hz(rate, "C"), 0.125, 0.0),
            -signals.square(rate, 20.0, 0.125),
        ]
    )
    g = golden.GoldenMeter(rate)
    results = run(g, words(x))  # raises Int32OverflowError on any overflow
    assert all(results[k].clipped > 0 for k in (0, 1, 2, 4))  # the squares sit on the rails
    laeq, lafmax, lceq, clipped = g.take_interval()
    assert 115.0 < laeq < 125.0 and 115.0 < lceq < 125.0 and lafmax >= laeq and clipped > 0


def test_full_scale_low_square_with_equaliser_stays_inside_int32() -> None:
    g = golden.GoldenMeter(48000, mic="inmp441")
    run(g, words(signals.square(48000, 12.0, 0.25)))


def test_the_checks_are_live_and_name_stage_and_sample() -> None:
    g = golden.GoldenMeter(48000)
    g.fx = g.fx._replace(hf=g.fx.hf._replace(b0=2**22))  # a coefficient far too large
    block = words(signals.square(48000, 1000.0, 0.125))
    with pytest.raises(golden.Int32OverflowError, match=r"stage hf b0 product .* at sample \d+"):
        g.process_block(block)


@pytest.mark.parametrize(
    ("rate", "freq"), [(48000, 100.0), (48000, 1000.0), (48000, 10000.0), (16000, 6400.0)]
)
def test_sine_levels_match_the_quantised_response(rate: int, freq: float) -> None:
    # steady state of a -6 dBFS sine: 120 - 6 dB plus the weighting the
    # quantised coefficients give at that frequency (computed independently
    # from their transfer function)
    g = golden.GoldenMeter(rate)
    results = run(g, words(signals.sine(rate, freq, 0.375, -6.0)))
    assert len(results) == 3
    for name in ("A", "C"):
        expected = 114.0 + float(fp.response_db(g.fx, name, freq))
        energy = results[-1].a_sum if name == "A" else results[-1].c_sum
        off = g._off_a if name == "A" else g._off_c
        got = golden.level_db(float(energy), g.block_len, off)
        assert got == pytest.approx(expected, abs=0.01)


def test_a_30_db_tone_reads_within_a_tenth_of_a_db() -> None:
    # 1 kHz at -90 dBFS is 30 dB SPL: the quantisation noise must not show
    g = golden.GoldenMeter(48000)
    results = run(g, words(signals.sine(48000, 1000.0, 0.375, -90.0)))
    got = golden.level_db(float(results[-1].a_sum), g.block_len, g._off_a)
    assert got == pytest.approx(30.0, abs=0.1)


@pytest.mark.parametrize("mic", [None, "inmp441"])
def test_the_model_runs_the_committed_table(mic: str | None) -> None:
    # the firmware's coefficients, read here from its generated module on
    # their own, are the golden model's at every rate: never a design made
    # at run time, whose last bits belong to this machine's BLAS
    tree = ast.parse(codegen.DEFAULT_OUT.read_text())
    table = {
        t.targets[0].id: ast.literal_eval(t.value)  # type: ignore[attr-defined]
        for t in tree.body
        if isinstance(t, ast.Assign)
    }
    for rate in weighting.RATES:
        fx = golden.GoldenMeter(rate, mic=mic).fx
        hf = fx.hf
        chain = (fx.hp1.k, hf.b0, hf.b1, hf.b2, hf.a1, hf.a2, fx.hp2.k, fx.hp3.k, fx.fast_k)
        row = table["CHAINS"][rate]
        assert chain == (row[0], *row[2:7], row[8], row[10], row[13])
        gains = table["GAINS"][rate] if mic is None else table["EQ"][f"{rate}:{mic}"][4:]
        assert (fx.gain_db_a, fx.gain_db_c) == gains


def test_block_shape_is_checked() -> None:
    g = golden.GoldenMeter(16000)
    with pytest.raises(ValueError, match="a block is 2000 words at 16000 Hz"):
        g.process_block(np.zeros(1999, dtype=np.int64))


def test_wide_values_round_trip_through_limbs() -> None:
    value = (3 << 64) + (0xBEEF << 32) + 12345
    limbs = golden.limbs(value, 5)
    assert all(0 <= v < 2**16 for v in limbs[:4])
    assert sum(v << (16 * j) for j, v in enumerate(limbs)) == value
    assert golden.wide_float(value, 5) == float(value)


@pytest.mark.parametrize("burst_s", [0.2, 0.002, 0.00025])
def test_decimated_fast_weighting_matches_the_per_sample_exponential(burst_s: float) -> None:
    # the firmware updates the Fast state once per 1 ms sub-block; the float
    # reference runs the exact per-sample exponential of IEC 61672-1 5.7.
    # fixedpoint.py bounds the difference to 0.035 + 0.035 dB for a transient.
    from dsp import reference

    rate = 48000
    x = signals.toneburst(rate, 4000.0, burst_s, -10.0, total_s=0.75, lead_s=0.25)
    g = golden.GoldenMeter(rate)
    run(g, words(x))
    lafmax = g.take_interval()[1]
    want = reference.measure(rate, x, interval_s=0.75)[0].lafmax
    assert lafmax == pytest.approx(want, abs=0.08)


@pytest.mark.parametrize("rate", [48000, 16000])
def test_proved_bounds_hold_and_are_tight_on_worst_case_input(rate: int) -> None:
    # the L1-norm bounds of dsp.fixedpoint must cover what the integer code
    # really reaches on full-scale squares (20 Hz, Nyquist, near the largest
    # gain), and be near it: a bound far above reality would prove nothing
    n = rate // 8
    x = np.concatenate(
        [
            signals.square(rate, 20.0, 0.25),
            np.where(np.arange(n) % 2 == 0, 1.0, -1.0),
            signals.square(rate, max_gain_hz(rate, "A"), 0.125),
        ]
    )
    g = golden.GoldenMeter(rate, trace=True)
    run(g, words(x))
    bounds = g.fx.bounds
    pairs = {"hf sum": "hf.acc", "hf low sum": "hf.low"}
    for sec in ("hp1a", "hp1b", "hp2", "hp3"):
        pairs |= {
            f"{sec} state": f"{sec}.Y",
            f"{sec} sum": f"{sec}.sum",
            f"{sec} input": f"{sec}.d",
            f"{sec} product": f"{sec}.kY",
        }
    for stage, key in pairs.items():
        seen = g.largest[stage]
        assert seen <= bounds[key], (stage, seen, bounds[key])
        if stage.endswith(("state", "input")):
            assert seen >= bounds[key] / 4, (stage, seen, bounds[key])
