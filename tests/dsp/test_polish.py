"""Integer polish: the cost, the stability test, a minimiser that does not depend on the start."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from dsp import fixedpoint as fp
from dsp import polish, weighting


def target(rate: int) -> polish.Target:
    fx = fp.fixed(rate)
    return fp._hf_target(rate, fx.hp1, fx.hf.shift)


def committed(rate: int) -> tuple[int, ...]:
    hf = fp.from_table(rate).hf
    return (hf.b0, hf.b1, hf.b2, hf.a1, hf.a2)


@pytest.mark.parametrize("rate", [48000, 16000])
def test_cost_is_the_squared_relative_power_error(rate: int) -> None:
    # recomputed here from the complex response of the integer biquad, with
    # the angles recovered from the grid's cosines and sines
    t = target(rate)
    w = np.arctan2(t.sin1, t.cos1)
    z = np.exp(1j * w)
    rng = np.random.default_rng(3)
    rows = [tuple(int(v) for v in np.array(committed(rate)) + rng.integers(-50, 51, 5))]
    rows += [committed(rate)]
    for row in rows:
        b0, b1, b2, a1, a2 = row
        h = (b0 + b1 / z + b2 / z**2) / (t.scale + a1 / z + a2 / z**2)
        want = float(np.sum((np.abs(h) ** 2 * t.fixed / t.power - 1.0) ** 2))
        assert polish.cost(t, [row])[0] == pytest.approx(want, rel=1e-9)


def test_stability_is_decided_on_the_integers() -> None:
    t = target(48000)
    s = t.scale
    rng = np.random.default_rng(11)
    for a1, a2 in rng.integers(-2 * s - 5, 2 * s + 5, size=(3000, 2)):
        want = bool(np.max(np.abs(np.roots([s, int(a1), int(a2)]))) < 1.0)
        assert polish.stable(t, (1, 0, 0, int(a1), int(a2))) == want
    # on the edge: a2 = a0 puts both poles on the circle
    assert not polish.stable(t, (1, 0, 0, 0, s))


@pytest.mark.parametrize("rate", weighting.RATES)
def test_the_polished_integers_are_a_minimum_of_the_cost(rate: int) -> None:
    # checked by brute force: no stable set within two units in every
    # coefficient (5**5 - 1 of them) is cheaper
    t = target(rate)
    best = committed(rate)
    box = [
        tuple(b + d for b, d in zip(best, step, strict=True))
        for step in itertools.product(range(-2, 3), repeat=5)
    ]
    costs = polish.cost(t, box)
    mine = polish.cost(t, [best])[0]
    cheaper = [p for p, c in zip(box, costs, strict=True) if c < mine and polish.stable(t, p)]
    assert not cheaper


@pytest.mark.parametrize("rate", weighting.RATES)
def test_every_start_ends_on_the_same_integers(rate: int) -> None:
    # the float fit only picks where the search starts: starts up to 25 units
    # off in every coefficient (the fit differs between kernels by a
    # thousandth of a unit) all end on the committed integers
    t = target(rate)
    best = committed(rate)
    rng = np.random.default_rng(rate)
    starts = [tuple(int(v) for v in np.array(best) + rng.integers(-25, 26, 5)) for _ in range(6)]
    starts += [tuple(b + (1 if k == j else 0) for k, b in enumerate(best)) for j in range(5)]
    for start in starts:
        if polish.stable(t, start):
            assert polish.nearest(t, start) == best, start


def test_an_unstable_start_is_refused_with_a_sentence() -> None:
    t = target(48000)
    with pytest.raises(ArithmeticError, match=r"the biquad \(1, 0, 0, 0, 32768\) .* is not stable"):
        polish.nearest(t, (1, 0, 0, 0, t.scale))
