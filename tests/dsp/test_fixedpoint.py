"""Quantised chains: int32 bounds, shared sections, quantisation error, Fast constants."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from dsp import fixedpoint as fp
from dsp import weighting
from dsp.errors import CoefficientTableError

VARIANTS = [(rate, mic) for rate in weighting.RATES for mic in (None, "inmp441", "ics43434")]


@pytest.mark.parametrize(("rate", "mic"), VARIANTS)
def test_every_intermediate_is_proved_inside_int32(rate: int, mic: str | None) -> None:
    fx = fp.fixed(rate, mic)
    assert max(fx.bounds.values()) <= fp.INT32_MAX
    # states are stored and sign-fixed on reload: they must stay below 2**30
    for name, value in fx.bounds.items():
        if name.endswith(".Y"):
            assert value < 2**30, name
    # the energy ranges assume |y| < 2**31 with squares of at most 15 bits
    assert fx.bounds["ya"] < 2**31 and fx.bounds["yc"] < 2**31


def test_bound_of_the_first_high_pass_is_its_l1_norm() -> None:
    # (1 - z^-1)/(1 - r z^-1) has impulse response 1, -(1-r), -(1-r) r, ...: L1 norm 2,
    # so full-scale input (2**23 << FRAC_BITS) reaches at most 2**(24 + FRAC_BITS)
    fx = fp.fixed(48000)
    full = 2 ** (23 + fp.FRAC_BITS)
    assert 2 * full <= fx.bounds["hp1a.y"] <= 2 * full * 1.0001 + 64


@pytest.mark.parametrize("rate", weighting.RATES)
def test_shared_sections_do_not_depend_on_the_equaliser(rate: int) -> None:
    plain = fp.fixed(rate)
    for mic in ("inmp441", "ics43434"):
        fx = fp.fixed(rate, mic)
        assert (fx.hp1, fx.hf, fx.hp2, fx.hp3, fx.fast_k) == (
            plain.hp1,
            plain.hf,
            plain.hp2,
            plain.hp3,
            plain.fast_k,
        )
        assert fx.eq is not None and fx.eq.k > 0 and fx.eq.kz > 0


@pytest.mark.parametrize("rate", weighting.RATES)
def test_quantisation_moves_the_response_by_hundredths_of_a_db(rate: int) -> None:
    fx = fp.fixed(rate)
    d = weighting.design(rate)
    f = np.geomspace(10.0, 0.45 * rate, 400)
    for name in ("A", "C"):
        diff = fp.response_db(fx, name, f) - weighting.response_db(d, name, f)
        assert np.max(np.abs(diff)) < 0.05
        assert float(fp.response_db(fx, name, 1000.0)) == pytest.approx(0.0, abs=1e-9)


def test_split_multiply_is_within_one_unit_of_the_exact_product() -> None:
    rng = np.random.default_rng(5)
    c = rng.integers(-(2**15), 2**15, 20000)
    v = rng.integers(-(2**27), 2**27, 20000)
    got = c * (v >> fp.SPLIT) + ((c * (v & (2**fp.SPLIT - 1))) >> fp.SPLIT)
    exact = c * v / 2**fp.SPLIT
    assert np.all(got <= exact) and np.all(got > exact - 1)


@pytest.mark.parametrize("rate", weighting.RATES)
def test_fast_sub_blocks_and_constant(rate: int) -> None:
    fx = fp.fixed(rate)
    assert fx.block_len == rate // 8
    assert fx.block_len % fx.sub_len == 0
    assert abs(fx.sub_len / rate - 0.001) < 0.0003  # about 1 ms
    k = 1 - math.exp(-fx.sub_len / (0.125 * rate))  # IEC 61672-1 5.7.1: tau 125 ms
    assert fx.fast_k / 2**fp.FAST_SHIFT == pytest.approx(k, rel=2e-4)
    assert fx.fast_k < 2**14  # the wide-integer update needs K * limb < 2**30


def nudged(x: float, ulps: int) -> float:
    for _ in range(abs(ulps)):
        x = math.nextafter(x, math.inf if ulps > 0 else -math.inf)
    return x


@pytest.mark.parametrize("rate", weighting.RATES)
def test_last_digit_differences_in_the_fit_give_the_same_integers(rate: int) -> None:
    # other CPUs and BLAS kernels move the fitted floats by about 1e-8
    # relative: a few ulps change nothing, nor 3000 times more (up to half a
    # unit of the integers, where plain rounding would change them)
    d = weighting.design(rate)
    fx = fp.fixed(rate)
    rng = np.random.default_rng(rate)
    for _ in range(8):
        ulps = rng.integers(-64, 65, 5)
        b0, b1, b2, a1, a2 = (nudged(c, int(u)) for c, u in zip(d.hf, ulps, strict=True))
        assert fp.hf_integers(rate, fx.hp1, (b0, b1, b2, a1, a2)) == fx.hf
        rel = 1.0 + rng.uniform(-3e-5, 3e-5, 5)
        b0, b1, b2, a1, a2 = (float(c * r) for c, r in zip(d.hf, rel, strict=True))
        assert fp.hf_integers(rate, fx.hp1, (b0, b1, b2, a1, a2)) == fx.hf


@pytest.mark.parametrize("rate", weighting.RATES)
def test_other_least_squares_starts_give_the_same_integers(rate: int) -> None:
    # moved starts make least squares stop elsewhere (and, at 16 kHz, on the
    # mirror image of the zeros): the integers stay
    fx = fp.fixed(rate)
    rng = np.random.default_rng(rate + 1)
    for _ in range(2):
        starts = [s * (1.0 + rng.uniform(-1e-3, 1e-3, 5)) for s in weighting._starts(rate)]
        hf, _ = weighting._fit_from(rate, starts)
        assert fp.hf_integers(rate, fx.hp1, hf) == fx.hf
    # the mirror image itself, negated: the same magnitude, other floats
    b0, b1, b2, a1, a2 = weighting.design(rate).hf
    mirrored = weighting.min_phase((-b2, -b1, -b0, a1, a2))
    assert fp.hf_integers(rate, fx.hp1, mirrored) == fx.hf


@pytest.mark.parametrize(("rate", "mic"), VARIANTS)
def test_the_committed_table_is_the_design(rate: int, mic: str | None) -> None:
    # what the firmware runs (read back from its generated module) is what
    # the design gives on this machine, bounds included
    assert fp.from_table(rate, mic) == fp.fixed(rate, mic)


@pytest.mark.parametrize("rate", weighting.RATES)
def test_gains_bring_1_khz_to_0_db(rate: int) -> None:
    # the gains are computed by scalar math from the integers; here from the
    # complex response of every section with numpy, as a second opinion
    for mic in (None, "inmp441"):
        fx = fp.fixed(rate, mic)
        z = np.exp(2j * np.pi * 1000.0 / rate)
        h = complex(
            np.prod(
                [
                    np.polyval(b[::-1], 1 / z) / np.polyval(a[::-1], 1 / z)
                    for b, a in fp._sections(fx, "A")
                ]
            )
        )
        assert fx.gain_db_a == pytest.approx(-20.0 * math.log10(abs(h)), abs=1e-9)
        assert fx.gain_db_a == round(fx.gain_db_a, 9)


def test_a_missing_table_says_so_and_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fp, "TABLE", tmp_path / "coeffs.py")
    with pytest.raises(
        CoefficientTableError, match=r"cannot read .*coeffs\.py.*hushlight gen-coeffs"
    ):
        fp.from_table.__wrapped__(48000)


def test_a_table_from_other_code_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = tmp_path / "coeffs.py"
    table.write_text(fp.TABLE.read_text().replace("SPLIT = 12", "SPLIT = 13"))
    monkeypatch.setattr(fp, "TABLE", table)
    with pytest.raises(
        CoefficientTableError, match=r"has SPLIT = 13 where dsp/fixedpoint\.py has 12"
    ):
        fp.from_table.__wrapped__(48000)
    table.write_text(
        fp.TABLE.read_text().replace("SPLIT = 13", "SPLIT = 12").replace("16000: (", "8000: (")
    )
    with pytest.raises(CoefficientTableError, match="no valid entry for 16000 Hz"):
        fp.from_table.__wrapped__(16000)
