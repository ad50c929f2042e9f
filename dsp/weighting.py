"""A and C frequency weighting filters designed per sample rate (float64).

The analytic weightings (IEC 61672-1:2013 Annex E, see `dsp.iec61672_1`) are

    C(s) = K_C * s**2 / ((s + w1)**2 * (s + w4)**2)
    A(s) = C(s) * s**2 / ((s + w2) * (s + w3)) * K_A / K_C

so the meter computes C first and continues to A with two first-order
high-passes: A costs two sections more than C.

Method, per rate:

1. Poles far below Nyquist (f1 = 20.6 Hz twice, f2 = 107.7 Hz, f3 = 737.9 Hz)
   are mapped with the matched z-transform, ``p = exp(-2*pi*f/fs)``, and their
   ``s`` zeros become exact zeros at z = 1.  Matching keeps the pole where the
   analog pole is (bilinear would warp it), and the zero at z = 1 removes DC
   exactly, also in integer arithmetic: it is the meter's DC removal.
2. The double pole at f4 = 12.2 kHz sits close to (or beyond) Nyquist, where
   every s-to-z mapping bends the curve (bilinear: -1.2 dB at 10 kHz at
   48 kHz).  It is replaced by one biquad whose five coefficients are fitted
   by least squares on the dB error of the *whole* C cascade (step 1 included)
   against the analytic C curve, on a log-spaced grid from 10 Hz to
   `fit_hi_hz` (20 kHz at 48 kHz, 0.45 fs at the other rates).  The fit
   starts from two places (the bilinear and the matched f4 pair) and keeps
   the better stable result.  The same biquad serves A: the matched f2/f3
   sections are accurate to a few hundredths of a dB up to the fit limit.
   A magnitude fit cannot tell a zero q from its reflection 1/conj(q) with
   the gain scaled by |q|: both have the same magnitude everywhere, so which
   one least squares lands on depends on last-ulp differences of the CPU and
   BLAS kernel (at 16 kHz one kernel gave the numerator zeros 1.83 and 0.13,
   another 7.66 and 0.55).  Every fitted section is therefore put in one
   canonical form (`min_phase`): each zero outside the unit circle is
   reflected inside, the gain compensated, and the numerator's sign (as
   invisible to the magnitude) made positive.  The remaining
   differences between machines are in the last digits of the floats;
   `dsp.fixedpoint` makes its integers independent of those.
3. The overall gain of each chain is not a filter coefficient: the meter
   applies it in dB to the energy (`gain_db`), which costs nothing per sample
   and keeps the integer filters at unity gain (headroom).

An optional microphone equaliser undoes the microphone's first-order
low-frequency roll-off (corner `MIC_LF_CORNER_HZ`), with its boost limited to
`EQ_MAX_BOOST` so that very low frequencies are not amplified without bound:
``EQ(s) = (s + wc) / (s + wc / EQ_MAX_BOOST)``, matched like step 1.  It leaves
the microphone's high-frequency roll-off alone (for the INMP441 that is mostly
its decimation filter at 0.42 fs; boosting it would boost noise).
"""

from __future__ import annotations

import math
from functools import cache
from typing import Final, NamedTuple

import numpy as np
import numpy.typing as npt
from scipy import optimize, signal

from dsp import iec61672_1 as iec

__all__ = [
    "DEFAULT_RATE",
    "EQ_MAX_BOOST",
    "MIC_LF_CORNER_HZ",
    "RATES",
    "Design",
    "check_mic",
    "check_rate",
    "design",
    "mic_response_db",
    "response",
    "response_db",
    "sos",
]

RATES: Final = (48000, 44100, 32000, 16000)
DEFAULT_RATE: Final = 48000
# Low-frequency -3 dB corner of each microphone (Hz), modelled as a first-order
# high-pass.  INMP441: datasheet table 1, "low frequency -3 dB point 60 Hz".
# ICS-43434: read from the typical frequency-response figure (approximate).
MIC_LF_CORNER_HZ: Final = {"inmp441": 60.0, "ics43434": 35.0}
# Largest low-frequency boost of the equaliser (ratio, 8 = +18 dB): the
# equalised corner moves to corner / 8, below the 10 Hz end of Table 3.
EQ_MAX_BOOST: Final = 8.0

FloatArray = npt.NDArray[np.float64]
ComplexArray = npt.NDArray[np.complex128]
Biquad = tuple[float, float, float, float, float]

_FIT_LO_HZ: Final = 10.0
_FIT_POINTS: Final = 400


class Design(NamedTuple):
    """Float design of both chains at one rate; see the module docstring."""

    rate: int
    mic: str | None
    p1: float  # matched pole of the 20.6 Hz pair (used twice)
    p2: float  # matched pole at 107.7 Hz (A only)
    p3: float  # matched pole at 737.9 Hz (A only)
    hf: Biquad  # fitted (b0, b1, b2, a1, a2) replacing the 12.2 kHz pair
    eq: tuple[float, float] | None  # (zero, pole) of the microphone equaliser
    fit_hi_hz: float


def check_rate(rate: int) -> int:
    """Return `rate` if the meter supports it, else raise ValueError with a sentence."""
    if isinstance(rate, bool) or not isinstance(rate, int) or rate not in RATES:
        supported = ", ".join(str(r) for r in RATES)
        raise ValueError(f"sample rate {rate!r} Hz is not supported; use one of {supported}")
    return rate


def check_mic(mic: str | None) -> str | None:
    """Return `mic` if it names an equaliser preset (or is None), else raise ValueError."""
    if mic is not None and mic not in MIC_LF_CORNER_HZ:
        names = ", ".join(sorted(MIC_LF_CORNER_HZ))
        raise ValueError(f"microphone preset {mic!r} is unknown; use one of {names} or None")
    return mic


def _matched(freq_hz: float, rate: int) -> float:
    return math.exp(-2.0 * math.pi * freq_hz / rate)


def _z(freq: FloatArray, rate: int) -> ComplexArray:
    return np.asarray(np.exp(2j * np.pi * freq / rate), dtype=np.complex128)


def _first_order(zero: float, pole: float, z: ComplexArray) -> ComplexArray:
    zi = 1.0 / z
    return np.asarray((1.0 - zero * zi) / (1.0 - pole * zi), dtype=np.complex128)


def _biquad(c: Biquad | npt.NDArray[np.float64], z: ComplexArray) -> ComplexArray:
    zi = 1.0 / z
    h = (c[0] + c[1] * zi + c[2] * zi * zi) / (1.0 + c[3] * zi + c[4] * zi * zi)
    return np.asarray(h, dtype=np.complex128)


def stable(c: Biquad) -> bool:
    """True if both poles of biquad `c` lie strictly inside the unit circle."""
    # the stability triangle of z**2 + a1 z + a2 (Jury): exact, no root finding,
    # so the verdict cannot hang on how a LAPACK kernel rounds
    a1, a2 = c[3], c[4]
    return abs(a2) < 1.0 and abs(a1) < 1.0 + a2


def min_phase(c: Biquad) -> Biquad:
    """`c` in its canonical form: the same magnitude, minimum phase, b0 > 0.

    A zero q outside the unit circle becomes 1/conj(q) and the gain is
    multiplied by |q|: ``|1 - q/z| = |q| * |1 - 1/(conj(q) z)|`` on the unit
    circle.  Zeros on or inside the circle stay.  The sign of the numerator
    is invisible to the magnitude too: it is made positive.
    """
    b0, b1, b2, a1, a2 = c
    if b0 == 0.0:
        raise ArithmeticError(f"the biquad {c!r} has b0 = 0; it has no canonical form")
    disc = b1 * b1 - 4.0 * b0 * b2
    if disc < 0.0:
        # a complex pair, |q|**2 = b2/b0: reflecting both reverses the
        # numerator, which leaves the magnitude exactly as it is
        if abs(b2) > abs(b0):
            b0, b2 = b2, b0
    else:
        # real zeros of b0 z**2 + b1 z + b2, the larger first without cancellation
        t = -0.5 * (b1 + math.copysign(math.sqrt(disc), b1))
        zeros = [t / b0, b2 / t if t != 0.0 else 0.0]
        if any(abs(q) > 1.0 for q in zeros):
            gain = b0
            for i, q in enumerate(zeros):
                if abs(q) > 1.0:
                    gain *= abs(q)
                    zeros[i] = 1.0 / q
            q1, q2 = zeros
            b0, b1, b2 = gain, -gain * (q1 + q2), gain * q1 * q2
    if b0 < 0.0:
        b0, b1, b2 = -b0, -b1, -b2
    return (b0, b1, b2, a1, a2)


def _starts(rate: int) -> list[FloatArray]:
    # both the f4 pair before any bending: its bilinear transform and its
    # matched poles with unity DC gain
    w4 = 2.0 * math.pi * iec.F4_HZ
    bz, az = signal.bilinear([w4 * w4], [1.0, 2.0 * w4, w4 * w4], rate)
    p4 = _matched(iec.F4_HZ, rate)
    return [np.r_[bz, az[1:]], np.array([(1.0 - p4) ** 2, 0.0, 0.0, -2.0 * p4, p4 * p4])]


# Worst errors closer than this (dB) are one optimum reached twice (or its
# mirror image): the earlier start wins, whatever the last digits say.
_SAME_WORST_DB: Final = 1e-6


def _fit_from(rate: int, starts: list[FloatArray]) -> tuple[Biquad, float]:
    fit_hi = min(20000.0, 0.45 * rate)
    f = np.geomspace(_FIT_LO_HZ, fit_hi, _FIT_POINTS)
    z = _z(f, rate)
    p1 = _matched(iec.F1_HZ, rate)
    low = _first_order(1.0, p1, z) ** 2
    target = iec.c_weighting_db(f)
    # Least squares finds a different local optimum from each start (at
    # 16 kHz the matched start even leaves the unit circle); keep the stable
    # result whose worst error from 20 Hz to 12.5 kHz (the range held to
    # 0.1 dB), or half its worst error over the whole fit range, is smaller.
    core = (f >= 20.0) & (f <= 12500.0)

    def residual(c: FloatArray) -> FloatArray:
        got = 20.0 * np.log10(np.abs(low * _biquad(c, z)))
        return np.asarray(got - target, dtype=np.float64)

    best: tuple[float, Biquad] | None = None
    for start in starts:
        x = optimize.least_squares(residual, start, xtol=1e-12, ftol=1e-12, gtol=1e-12).x
        c = min_phase((float(x[0]), float(x[1]), float(x[2]), float(x[3]), float(x[4])))
        if not stable(c):
            continue
        err = np.abs(residual(np.array(c)))
        worst = max(float(np.max(err[core])), float(np.max(err)) / 2.0)
        if best is None or worst < best[0] - _SAME_WORST_DB:
            best = (worst, c)
    if best is None:
        raise ArithmeticError(f"the high-frequency fit at {rate} Hz gave no stable section")
    return best[1], fit_hi


@cache
def _fit_hf(rate: int) -> tuple[Biquad, float]:
    return _fit_from(rate, _starts(rate))


@cache
def design(rate: int = DEFAULT_RATE, mic: str | None = None) -> Design:
    """The float design of the A and C chains at `rate`, with `mic`'s equaliser if given."""
    check_rate(rate)
    check_mic(mic)
    hf, fit_hi = _fit_hf(rate)
    eq = None
    if mic is not None:
        corner = MIC_LF_CORNER_HZ[mic]
        eq = (_matched(corner, rate), _matched(corner / EQ_MAX_BOOST, rate))
    return Design(
        rate=rate,
        mic=mic,
        p1=_matched(iec.F1_HZ, rate),
        p2=_matched(iec.F2_HZ, rate),
        p3=_matched(iec.F3_HZ, rate),
        hf=hf,
        eq=eq,
        fit_hi_hz=fit_hi,
    )


def _check_weighting(weighting: str) -> None:
    if weighting not in ("A", "C"):
        raise ValueError(f"weighting must be 'A' or 'C', not {weighting!r}")


def _raw_response(d: Design, weighting: str, freq: FloatArray) -> ComplexArray:
    z = _z(freq, d.rate)
    h = _first_order(1.0, d.p1, z) ** 2 * _biquad(d.hf, z)
    if d.eq is not None:
        h = h * _first_order(d.eq[0], d.eq[1], z)
    if weighting == "A":
        h = h * _first_order(1.0, d.p2, z) * _first_order(1.0, d.p3, z)
    return h


def response(d: Design, weighting: str, freq: npt.ArrayLike) -> ComplexArray:
    """Complex response of the float `weighting` chain at `freq` Hz, 0 dB at 1 kHz."""
    _check_weighting(weighting)
    f = np.asarray(freq, dtype=np.float64)
    ref = _raw_response(d, weighting, np.array([1000.0]))[0]
    return np.asarray(_raw_response(d, weighting, f) / abs(ref), dtype=np.complex128)


def response_db(d: Design, weighting: str, freq: npt.ArrayLike) -> FloatArray:
    """Magnitude (dB) of `response`."""
    return np.asarray(20.0 * np.log10(np.abs(response(d, weighting, freq))), dtype=np.float64)


def mic_response_db(mic: str | None, freq: npt.ArrayLike) -> FloatArray:
    """Modelled response (dB, 0 at 1 kHz) of microphone `mic`; 0 dB for None (flat)."""
    check_mic(mic)
    f = np.asarray(freq, dtype=np.float64)
    if mic is None:
        return np.zeros_like(f)
    fc = MIC_LF_CORNER_HZ[mic]

    def hp(x: FloatArray) -> FloatArray:
        return np.asarray(10.0 * np.log10(x * x / (x * x + fc * fc)), dtype=np.float64)

    return hp(f) - hp(np.array(1000.0))


def sos(rate: int, weighting: str, mic: str | None = None) -> FloatArray:
    """Second-order sections (scipy layout) of the float chain, 0 dB at 1 kHz."""
    _check_weighting(weighting)
    d = design(rate, mic)
    rows = [
        [1.0, -2.0, 1.0, 1.0, -2.0 * d.p1, d.p1 * d.p1],
        [d.hf[0], d.hf[1], d.hf[2], 1.0, d.hf[3], d.hf[4]],
    ]
    if d.eq is not None:
        rows.append([1.0, -d.eq[0], 0.0, 1.0, -d.eq[1], 0.0])
    if weighting == "A":
        rows.append([1.0, -2.0, 1.0, 1.0, -(d.p2 + d.p3), d.p2 * d.p3])
    out = np.array(rows, dtype=np.float64)
    gain = 1.0 / abs(_raw_response(d, weighting, np.array([1000.0]))[0])
    out[0, :3] *= gain
    return out
