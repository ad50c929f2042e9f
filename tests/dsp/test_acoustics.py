"""Acoustic tests of the level meter: the FIRMWARE meter (in MicroPython) against the
level convention, the float64 reference meter and IEC 61672-1:2013.

Every expectation is derived independently of the code under test:

- linearity: DESIGN.md's convention, level = 94 - S + dBFS, with the
  A weighting at 1 kHz = 0 dB (IEC 61672-1:2013, Table 3);
- pink noise: the float64 reference meter (`dsp.reference`, scipy) fed the
  very same 24-bit words as the firmware;
- tone bursts: IEC 61672-1:2013, Table 4 (5.9), Fast time weighting,
  reference responses and class 1 acceptance limits.

Each test feeds one signal stream per sample rate to one MicroPython run, so
the whole file costs a few interpreter start-ups per rate.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from dsp import reference, signals
from tools.replay import Settings, firmware_levels

RATES = [48000, 44100, 32000, 16000]
SENSITIVITY_DBFS = -26.0  # INMP441; full-scale sine = 94 + 26 = 120 dB


def words_to_float(words: np.ndarray) -> np.ndarray:
    """The exact samples the firmware sees, as floats (full scale 1)."""
    return np.asarray(words, dtype=np.float64) / 2.0**31


def both_meters(
    rate: int, x: np.ndarray, interval_s: float
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    words = signals.to_i2s_words(x)
    fw = firmware_levels(rate, words, Settings(interval_s))
    ref = [
        iv.as_dict(digits=6) for iv in reference.measure(rate, words_to_float(words), interval_s)
    ]
    times_fw = [t for r in fw for t in (r["t0"], r["t1"])]
    times_ref = [t for r in ref for t in (r["t0"], r["t1"])]
    assert times_fw == pytest.approx(times_ref, abs=1e-6)
    return fw, ref


LINEARITY_SPL = list(range(30, 121, 10))


@pytest.mark.parametrize("rate", RATES)
def test_1khz_linearity_30_to_120_db(rate: int) -> None:
    # one second per level, quietest first so that no filter tail of a louder
    # step reaches into the next; the second half-second of each is measured
    x = np.concatenate(
        [signals.sine(rate, 1000.0, 1.0, spl - 94.0 + SENSITIVITY_DBFS) for spl in LINEARITY_SPL]
    )
    fw, ref = both_meters(rate, x, 0.5)
    assert len(fw) == 2 * len(LINEARITY_SPL)
    for i, spl in enumerate(LINEARITY_SPL):
        steady_fw, steady_ref = fw[2 * i + 1], ref[2 * i + 1]
        assert steady_fw["laeq"] == pytest.approx(spl, abs=0.1), f"firmware at {spl} dB"
        assert steady_ref["laeq"] == pytest.approx(spl, abs=0.1), f"reference at {spl} dB"
        # C weighting is 0 dB at 1 kHz as well (Table 3)
        assert steady_fw["lceq"] == pytest.approx(spl, abs=0.1), f"firmware LCeq at {spl} dB"


@pytest.mark.parametrize("rate", RATES)
def test_pink_noise_laeq_matches_the_reference(rate: int) -> None:
    # a loud and a quiet street: -30 and -70 dBFS RMS (about 90 and 50 dB)
    x = np.concatenate(
        [
            signals.pink_noise(rate, 2.0, -30.0, seed=rate),
            signals.pink_noise(rate, 2.0, -70.0, seed=rate + 1),
        ]
    )
    fw, ref = both_meters(rate, x, 1.0)
    assert len(fw) == 4
    for f, r in zip(fw, ref, strict=True):
        assert f["laeq"] == pytest.approx(r["laeq"], abs=0.1), (f, r)
        assert f["lceq"] == pytest.approx(r["lceq"], abs=0.1), (f, r)
        assert f["lafmax"] == pytest.approx(r["lafmax"], abs=0.1), (f, r)
    # the meters are not both silent or both broken: pink noise at -30 dBFS RMS
    # is 90 dB unweighted, and A removes a few dB of its low end
    assert 80.0 < ref[1]["laeq"] < 90.0


# IEC 61672-1:2013, Table 4 (5.9): 4 kHz tone-burst duration Tb (s), reference
# responses (dB re the steady level) for the Fast maximum and for the sound
# exposure level, and the class 1 acceptance limits (lower, upper) they share.
TONEBURST_TABLE_4 = [
    (0.00025, -27.0, -36.0, (-3.0, 1.0)),
    (0.0005, -24.0, -33.0, (-2.5, 1.0)),
    (0.001, -21.0, -30.0, (-2.0, 1.0)),
    (0.002, -18.0, -27.0, (-1.5, 1.0)),
    (0.005, -14.1, -23.0, (-1.0, 1.0)),
    (0.01, -11.1, -20.0, (-1.0, 1.0)),
    (0.02, -8.3, -17.0, (-1.0, 1.0)),
    (0.05, -4.8, -13.0, (-1.0, 1.0)),
    (0.1, -2.6, -10.0, (-1.0, 1.0)),
    (0.2, -1.0, -7.0, (-0.5, 0.5)),
    (0.5, -0.1, -3.0, (-0.5, 0.5)),
    (1.0, 0.0, 0.0, (-0.5, 0.5)),
]
SLOT_S = 2.0  # one burst per interval


@pytest.mark.parametrize("rate", RATES)
def test_4khz_toneburst_responses_within_class_1(rate: int) -> None:
    level = -10.0  # dBFS: 110 dB, clear of the noise floor by the 36 dB the shortest burst needs
    # one burst per 2 s interval, shortest first so that each burst's Fast
    # tail has died (by 40 dB) before the next, longer one; then the steady tone
    parts = [signals.silence(rate, SLOT_S)]
    parts += [
        signals.toneburst(rate, 4000.0, burst, level, SLOT_S, lead_s=0.25)
        for burst, *_ in TONEBURST_TABLE_4
    ]
    parts.append(signals.sine(rate, 4000.0, 2 * SLOT_S, level))
    fw, ref = both_meters(rate, np.concatenate(parts), SLOT_S)
    assert len(fw) == 1 + len(TONEBURST_TABLE_4) + 2
    for levels, meter in ((fw, "firmware"), (ref, "reference")):
        steady = levels[-1]["laeq"]  # the tone's second interval: filters settled
        for i, (burst, fast, sel, (low, high)) in enumerate(TONEBURST_TABLE_4, start=1):
            # sound exposure level re 1 s from the interval's LAeq
            exposure = levels[i]["laeq"] + 10 * math.log10(SLOT_S / 1.0)
            for what, got, want in (
                ("LAFmax", levels[i]["lafmax"] - steady, fast),
                ("LAE", exposure - steady, sel),
            ):
                assert want + low <= got <= want + high, (
                    f"{meter} at {rate} Hz: {burst * 1000:g} ms burst {what} reads "
                    f"{got:+.2f} dB, IEC 61672-1 Table 4 wants {want:+.1f} dB "
                    f"({low:+.1f}/{high:+.1f})"
                )


def test_toneburst_reference_values_follow_the_standard_equations() -> None:
    # Table 4's reference responses are 10 lg(1 - exp(-Tb / tau)) for Fast
    # and 10 lg(Tb / T0), T0 = 1 s, for exposure, rounded to 0.1 dB
    # (IEC 61672-1:2013, 5.9): check the table as typed above
    for burst, fast, sel, _ in TONEBURST_TABLE_4:
        assert round(10 * math.log10(1 - math.exp(-burst / 0.125)), 1) == fast
        assert round(10 * math.log10(burst / 1.0), 1) == sel


@pytest.mark.parametrize("rate", [48000, 16000])
def test_minute_statistics_match_the_reference(rate: int) -> None:
    # 20 s of street (pink noise, 50 dB) with three shouts (pink, 85 dB,
    # 0.4 s) well over the 70 dB peak threshold and a louder stretch in the
    # middle so that L10, L50 and L90 differ
    x = signals.pink_noise(rate, 20.0, 50.0 - 120.0, seed=3)
    x[8 * rate : 12 * rate] *= 10 ** (12 / 20)
    for i, start in enumerate((2.0, 9.5, 15.3)):
        a = round(start * rate)
        x[a : a + round(0.4 * rate)] = signals.pink_noise(rate, 0.4, 85.0 - 120.0, seed=10 + i)
    words = signals.to_i2s_words(x)
    fw = firmware_levels(rate, words, Settings(1.0), summary=True)[-1]
    assert fw.pop("summary") is True
    meter = reference.ReferenceMeter(rate, peak_threshold_ms=reference.mean_square(70.0))
    ref = reference.summary(meter.process(words_to_float(words)), rate).as_dict()
    assert fw["peaks"] == ref["peaks"] == 3
    for key in ("laeq", "lafmax", "lamin", "l10", "l50", "l90", "lceq"):
        assert fw[key] == pytest.approx(ref[key], abs=0.1), key
    assert ref["l90"] < ref["l50"] < ref["l10"] - 5  # the statistics see the loud stretch
