"""IEC 61672-1:2013 module: the analytic curves against Table 3 and the standard's constants."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dsp import iec61672_1 as iec


def test_table_3_has_34_bands_from_10_hz_to_20_khz() -> None:
    bands = iec.bands()
    assert len(bands) == 34
    assert bands[0].nominal_hz == 10.0
    assert bands[-1].nominal_hz == 20000.0
    # base-ten exact frequencies: 1 kHz is band 0, a decade is ten bands
    assert bands[20].exact_hz == pytest.approx(1000.0)
    assert bands[30].exact_hz == pytest.approx(10000.0)


def test_analytic_curves_round_to_table_3() -> None:
    # Table 3 prints the equations of Annex E at the exact frequencies to 0.1 dB
    for b in iec.bands():
        assert iec.a_weighting_db(b.exact_hz) == pytest.approx(b.a_db, abs=0.051)
        assert iec.c_weighting_db(b.exact_hz) == pytest.approx(b.c_db, abs=0.051)


def test_both_weightings_are_zero_at_1_khz() -> None:
    assert abs(float(iec.a_weighting_db(1000.0))) < 0.002
    assert abs(float(iec.c_weighting_db(1000.0))) < 0.002


def test_pole_frequencies_follow_annex_e_equations() -> None:
    # E.3/E.4: f1, f4 from fL = 10**1.5, fH = 10**3.9, fr = 1000, D = sqrt(1/2)
    fl, fh, fr, d = 10**1.5, 10**3.9, 1000.0, math.sqrt(0.5)
    c = fl**2 * fh**2
    b = (1 / (1 - d)) * (fr**2 + fl**2 * fh**2 / fr**2 - d * (fl**2 + fh**2))
    f1 = math.sqrt((-b - math.sqrt(b * b - 4 * c)) / 2)
    f4 = math.sqrt((-b + math.sqrt(b * b - 4 * c)) / 2)
    assert f1 == pytest.approx(iec.F1_HZ, rel=1e-6)
    assert f4 == pytest.approx(iec.F4_HZ, rel=1e-6)
    # E.7/E.8: f2, f3 from fA = 10**2.45
    fa = 10**2.45
    assert (3 - math.sqrt(5)) / 2 * fa == pytest.approx(iec.F2_HZ, rel=1e-6)
    assert (3 + math.sqrt(5)) / 2 * fa == pytest.approx(iec.F3_HZ, rel=1e-6)


def test_a_is_c_times_two_high_passes() -> None:
    f = np.geomspace(10, 20000, 50)
    hp = 10 * np.log10(f**2 / (f**2 + iec.F2_HZ**2)) + 10 * np.log10(f**2 / (f**2 + iec.F3_HZ**2))
    expected = iec.c_weighting_db(f) + iec.C1000_DB + hp - iec.A1000_DB
    np.testing.assert_allclose(iec.a_weighting_db(f), expected, atol=1e-12)


def test_limits_and_bad_input() -> None:
    band = iec.bands()[20]
    assert band.limits(1) == (-0.7, 0.7)
    assert band.limits(2) == (-1.0, 1.0)
    assert iec.bands()[0].limits(1)[0] == -math.inf
    with pytest.raises(ValueError, match="class must be 1 or 2"):
        band.limits(3)
    with pytest.raises(ValueError, match="'Z'"):
        iec.weighting_db(1000.0, "Z")
    with pytest.raises(ValueError, match="above 0 Hz"):
        iec.a_weighting_db([100.0, -1.0])
