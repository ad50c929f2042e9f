"""Quantised chains: int32 bounds, shared sections, quantisation error, Fast constants."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dsp import fixedpoint as fp
from dsp import weighting

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
