"""Fixed-point form of the weighting chains, as the firmware's viper loop computes it.

The ESP32's viper `int` is 32 bits and a product must fit in it, while the
signal needs about 24 bits and the coefficients 14 or more: a 24 x 14-bit
product does not fit.  Each product ``c * v`` is therefore split on the
signal side (`SPLIT` = 12 bits):

    mul(c, v) = c * (v >> 12) + ((c * (v & 4095)) >> 12)      ~ c * v / 4096

two multiplies, exact to one unit, both fitting in 31 bits for |v| < 2**27
and |c| < 2**16.  Measured alternative: one multiply on the truncated signal,
``c * (v >> 12)``, runs the whole meter 19 % faster in the unix port (690x
against 580x real time at 48 kHz, best runs) but its truncation error,
amplified by 1/k of the 20.6 Hz poles, reads a 30 dB SPL 1 kHz tone as
39.9 dB (golden model, 48 kHz); with `mul` it reads 30.00 dB.  Accuracy wins.

Structure, per sample (all names are the firmware's):

- ``x = word >> 8``: the INMP441's 24-bit sample; ``v0 = x << F`` with
  `FRAC_BITS` fraction bits for the rest of the chain.
- Poles near z = 1 (20.6 Hz pair, 107.7 and 737.9 Hz) are leaky-integrator
  sections that store ``k = 1 - r`` instead of ``r``:
  ``Y += ((v - v_prev) << G) - kmul(K, Y)``, output ``Y >> G``.  ``K`` is
  ``k`` scaled as far as its products allow (`Leaky.shift`), which keeps
  12 to 13 significant bits of ``k`` even for r = 0.9973 (48 kHz); a
  direct-form biquad with its coefficients in Q15 would resolve
  ``1 - r**2`` in 176 steps, under 8 bits.  The state carries `STATE_BITS`
  extra fraction bits; the rounding of ``kmul``, amplified by 1/k, is a slowly
  varying offset of at most 2/k state units (about 23 LSB of the 24-bit input
  at 48 kHz) that the next section's zero at z = 1 removes (a 30 dB SPL tone
  reads 30.00 dB).  The zero at z = 1 is the exact difference
  ``v - v_prev``: DC is removed without error.
- The microphone equaliser is the same section with a zero term
  ``+ kmul(KZ, v_prev)``.
- The fitted high-frequency biquad (poles far from z = 1) is a direct form I
  with `mul` on each of its five terms, except that the five low products
  are summed first and shifted once (one rounding instead of five; the
  speed is the same within the noise of this shared host).
- The overall gain of each chain is applied in dB to the energy (`gain_db`).

Energy per sample (A and C): ``a = |y|``; ``a*a`` exactly when a < 2**15,
else ``((a + 2**7) >> 8)**2`` in units of 2**16, or ``((a + 2**15) >> 16)**2``
in units of 2**32 above 2**23, added into 16-bit limbs (wide integers made of
int32 words holding 16 bits each) whose words stay below 2**30.  The rounding
steps are at most 2**-7 of the value, a mean-square error below 6e-6.

Fast time weighting (IEC 61672-1, 5.7) is computed per sub-block of
`Fixed.sub_len` samples (1 ms; 53 samples at 44.1 kHz so that it divides the
block): ``D = D - ((K_F * D) >> 20) + S`` where ``S`` is the sub-block's
A-weighted energy and ``K_F / 2**20 = 1 - exp(-sub_len / (0.125 fs))``.
In steady state ``D * k / sub_len`` is exactly the mean square; for a
transient the weighting inside one sub-block is flat instead of exponential
(at most 1 - exp(-1 ms / 125 ms) = 0.8 %, 0.035 dB) and the maximum is read
at sub-block ends (at most 1 ms late, 0.035 dB low).

`Fixed.bounds` proves the int32 range: the worst-case magnitude of every
intermediate for any input within 24 bits, from the L1 norm of the impulse
response from the input to that node plus the L1 norms from every rounding
point (each bounded by 2 units) to it.

The same integers on every machine.  `fixed` designs; what the firmware runs
is the table it generated, `firmware/hushlight/coeffs.py`, and everything
that models the firmware (the golden model, the conformance figures) reads
that table through `from_table`, never a design made at run time.  The
design itself is made machine-independent so that the drift test can
regenerate the table anywhere: the fitted biquad comes in one canonical form
(minimum phase, `dsp.weighting`), its float coefficients, which still differ
between CPUs and BLAS kernels in their last digits, only pick the place
where the integer search starts (`hf_integers`, `dsp.polish`: it returns
the integer minimiser of an exactly computed cost, the same from any start
within many units), and the gains are computed from the integers with
scalar `math` and rounded to 9 decimals.
"""

from __future__ import annotations

import ast
import math
from functools import cache
from pathlib import Path
from typing import Any, Final, NamedTuple

import numpy as np
import numpy.typing as npt
from scipy import signal

from dsp import iec61672_1 as iec
from dsp import polish, weighting
from dsp.errors import CoefficientTableError
from dsp.iec61672_1 import FAST_TAU_S

__all__ = [
    "FAST_SHIFT",
    "FRAC_BITS",
    "INT32_MAX",
    "INT32_MIN",
    "SPLIT",
    "STATE_BITS",
    "TABLE",
    "Biquad",
    "Fixed",
    "Leaky",
    "fixed",
    "from_table",
    "hf_integers",
    "response",
    "response_db",
]

# The firmware's coefficient module, written by `hushlight gen-coeffs` (text: dsp/codegen.py).
TABLE: Final = Path(__file__).resolve().parent.parent / "firmware" / "hushlight" / "coeffs.py"
INT32_MIN: Final = -(2**31)
INT32_MAX: Final = 2**31 - 1
IN_SHIFT: Final = 8  # INMP441 word: 24-bit sample left-justified in 32 bits
X_MAX: Final = 2**23  # |x| <= 2**23 for every 24-bit sample
FRAC_BITS: Final = 2
STATE_BITS: Final = 3
SPLIT: Final = 12
FAST_SHIFT: Final = 20
# Largest multiplier of the wide-integer Fast update: K * limb + carry < 2**31.
_FAST_K_MAX: Final = 2**14 - 1
# Sum of a rounding error bound, in units of the node it is added to.
_ROUND: Final = 2.0
_IMPULSE_LEN: Final = 1 << 15  # the slowest pole (r = 0.9990) decays by e**-32
# The grid of the integer polish of the fitted biquad: the float fit's
# (`dsp.weighting`).
_POLISH_LO_HZ: Final = 10.0
_POLISH_POINTS: Final = 400

FloatArray = npt.NDArray[np.float64]


class Leaky(NamedTuple):
    """First-order section r = 1 - k/2**shift (k = `k`), optional zero term."""

    k: int
    shift: int  # kmul(K, Y) = mul(K, Y) >> (shift - SPLIT)
    kz: int = 0  # equaliser zero term (1 - zero) * 2**zshift; 0 for a plain high-pass
    zshift: int = 0

    @property
    def pole(self) -> float:
        return 1.0 - self.k / 2.0**self.shift

    @property
    def zero(self) -> float:
        return 1.0 - (self.kz / 2.0**self.zshift if self.kz else 0.0)


class Biquad(NamedTuple):
    """Direct form I, coefficients scaled by 2**shift: y = sum(mul(c, .)) >> (shift - SPLIT)."""

    b0: int
    b1: int
    b2: int
    a1: int
    a2: int
    shift: int

    def floats(self) -> tuple[float, float, float, float, float]:
        s = 2.0**self.shift
        return (self.b0 / s, self.b1 / s, self.b2 / s, self.a1 / s, self.a2 / s)


class Fixed(NamedTuple):
    """Everything the firmware needs at one (rate, mic), plus the proven bounds."""

    rate: int
    mic: str | None
    block_len: int
    sub_len: int
    hp1: Leaky  # the 20.6 Hz pair, used twice
    eq: Leaky | None
    hf: Biquad
    hp2: Leaky
    hp3: Leaky
    fast_k: int
    gain_db_a: float
    gain_db_c: float
    bounds: dict[str, int]


def _sub_len(rate: int, block_len: int) -> int:
    # about 1 ms, and a divisor of the block so sub-blocks never straddle blocks
    target = rate / 1000.0
    divisors = [d for d in range(1, block_len + 1) if block_len % d == 0]
    return min(divisors, key=lambda d: (abs(d - target), d))


def _best_shift(value: float, vbound: float) -> tuple[int, int]:
    """Scale `value` as far as mul(value, v) allows for |v| <= vbound."""
    shift = SPLIT
    while shift < 40:
        nxt = round(value * 2.0 ** (shift + 1))
        # both products of mul() and their sum stay below 2**30 (margin for the add)
        if nxt * (vbound / 2**SPLIT + 2) >= 2**30:
            break
        shift += 1
    return round(value * 2.0**shift), shift


def _quantise_leaky(k: float, ybound: float, kz: float = 0.0, zbound: float = 0.0) -> Leaky:
    kq, shift = _best_shift(k, ybound)
    if kz:
        kzq, zshift = _best_shift(kz, zbound or ybound)
        return Leaky(kq, shift, kzq, zshift)
    return Leaky(kq, shift)


def _quantise_biquad(c: tuple[float, ...], vbound: float, ybound: float) -> Biquad:
    shift = SPLIT
    while True:
        s = shift + 1
        q = [round(v * 2.0**s) for v in c]
        total = (abs(q[0]) + abs(q[1]) + abs(q[2])) * (vbound / 2**SPLIT + 2) + (
            abs(q[3]) + abs(q[4])
        ) * (ybound / 2**SPLIT + 2)
        if total >= 2**30 or s > 28:
            q = [round(v * 2.0**shift) for v in c]
            return Biquad(q[0], q[1], q[2], q[3], q[4], shift)
        shift = s


@cache
def _hf_target(rate: int, hp1: Leaky, shift: int) -> polish.Target:
    """What the integer biquad must match: the C chain of the fit, with the integer hp1."""
    fit_hi = weighting.design(rate).fit_hi_hz
    n = _POLISH_POINTS
    f1, f4 = iec.F1_HZ**2, iec.F4_HZ**2
    c1000 = 10.0 ** (-iec.C1000_DB / 10.0)
    rows: list[tuple[float, ...]] = []
    for i in range(n):
        # the fit's log-spaced grid (`dsp.weighting`), by scalar `math`
        f = _POLISH_LO_HZ * (fit_hi / _POLISH_LO_HZ) ** (i / (n - 1))
        w = 2.0 * math.pi * f / rate
        c, s = math.cos(w), math.sin(w)
        h = math.sin(0.5 * w) ** 2
        # two hp1 sections, |1 - 1/z|**2 / |1 - r/z|**2 each, written with
        # sin(w/2)**2 so that nothing cancels near z = 1
        low = (4.0 * h / ((1.0 - hp1.pole) ** 2 + 4.0 * hp1.pole * h)) ** 2
        # the analytic C weighting as a power ratio (IEC 61672-1 Annex E)
        ff = f * f
        target = (f4 * ff / ((ff + f1) * (ff + f4))) ** 2 * c1000
        rows.append((c, s, 1.0 - 2.0 * s * s, 2.0 * s * c, low, target))
    grid = np.array(rows, dtype=np.float64).T.copy()
    cos1, sin1, cos2, sin2, fixed, power = (grid[j] for j in range(6))
    return polish.Target(cos1, sin1, cos2, sin2, fixed, power, 2**shift)


def _polish_biquad(rate: int, hp1: Leaky, start: Biquad) -> Biquad:
    """The integer biquad of least error (`dsp.polish`) found from the rounded fit `start`.

    Why: the committed integers must not depend on the last digits of the
    float fit, which differ between CPUs and BLAS kernels; the minimiser of
    an exactly computed integer cost does not.  The cost is the fit's own
    criterion (relative power error of the C chain against IEC 61672-1,
    gain included: the gain pins the overall scale of the numerator, which
    `gain_db` would otherwise leave free).
    """
    target = _hf_target(rate, hp1, start.shift)
    b0, b1, b2, a1, a2 = polish.nearest(target, (start.b0, start.b1, start.b2, start.a1, start.a2))
    return Biquad(b0, b1, b2, a1, a2, start.shift)


def _section_power(b: tuple[float, ...], a: tuple[float, ...], w: float) -> float:
    """|B/A|**2 at angle w of a first- or second-order section, by scalar `math`."""

    def mag2(p: tuple[float, ...]) -> float:
        re = math.fsum(c * math.cos(k * w) for k, c in enumerate(p))
        im = math.fsum(c * math.sin(k * w) for k, c in enumerate(p))
        return re * re + im * im

    return mag2(b) / mag2(a)


def _leaky_power(sec: Leaky, w: float) -> float:
    # (1 - q)**2 + 4 q sin(w/2)**2 = |1 - q/z|**2 without cancellation near z = 1
    h = math.sin(0.5 * w) ** 2

    def mag2(q: float) -> float:
        return (1.0 - q) ** 2 + 4.0 * q * h

    return mag2(sec.zero) / mag2(sec.pole)


def _gain_db(fx: Fixed, weighting_name: str) -> float:
    """dB that bring the integer chain to 0 dB at 1 kHz, as the generated file writes it.

    Computed from the integers with scalar `math` (no vectorised kernels
    whose last bit depends on the CPU) and rounded to 9 decimals.
    """
    w = 2.0 * math.pi * 1000.0 / fx.rate
    power = _leaky_power(fx.hp1, w) ** 2
    if fx.eq is not None:
        power *= _leaky_power(fx.eq, w)
    b0, b1, b2, a1, a2 = fx.hf.floats()
    power *= _section_power((b0, b1, b2), (1.0, a1, a2), w)
    if weighting_name == "A":
        power *= _leaky_power(fx.hp2, w) * _leaky_power(fx.hp3, w)
    return round(-10.0 * math.log10(power), 9)


def _leaky_tf(sec: Leaky) -> tuple[list[float], list[float]]:
    return [1.0, -sec.zero], [1.0, -sec.pole]


def _impulse(b: list[float], a: list[float], x: FloatArray) -> FloatArray:
    return np.asarray(signal.lfilter(b, a, x), dtype=np.float64)


@cache
def _worst_bounds(rate: int) -> dict[str, float]:
    """Signal bounds of every variant at `rate` with fine provisional coefficients."""
    block_len = rate // 8
    sub_len = _sub_len(rate, block_len)
    fine = 2**28
    worst: dict[str, float] = {}
    for variant in (None, *sorted(weighting.MIC_LF_CORNER_HZ)):
        dv = weighting.design(rate, variant)
        prov = Fixed(
            rate,
            variant,
            block_len,
            sub_len,
            _quantise_leaky(1.0 - dv.p1, fine),
            _quantise_leaky(1.0 - dv.eq[1], fine, kz=1.0 - dv.eq[0]) if dv.eq else None,
            _quantise_biquad(dv.hf, fine, fine),
            _quantise_leaky(1.0 - dv.p2, fine),
            _quantise_leaky(1.0 - dv.p3, fine),
            1,
            0.0,
            0.0,
            {},
        )
        for name, value in _bounds(prov).items():
            key = name if variant is None or not name.startswith("eq") else f"{name}:{variant}"
            worst[key] = max(worst.get(key, 0.0), float(value))
    return worst


@cache
def fixed(rate: int = weighting.DEFAULT_RATE, mic: str | None = None) -> Fixed:
    """Quantise the float design at `rate` (and `mic`) and prove its int32 bounds."""
    d = weighting.design(rate, mic)
    block_len = rate // 8
    sub_len = _sub_len(rate, block_len)
    # pass 1: fine provisional coefficients give the signal bounds of every
    # variant (no equaliser, each preset); pass 2 scales each coefficient as
    # far as the largest of those bounds allows, so that the shared sections
    # are the same integers with or without equaliser; then the bounds are
    # proved again on the final integers.
    b = _worst_bounds(rate)
    hp1 = _quantise_leaky(1.0 - d.p1, max(b["hp1a.Y"], b["hp1b.Y"]))
    eq = None
    if d.eq is not None:
        eq = _quantise_leaky(1.0 - d.eq[1], b[f"eq.Y:{mic}"], kz=1.0 - d.eq[0], zbound=b["hp1b.y"])
    hf = hf_integers(rate, hp1, d.hf)
    hp2 = _quantise_leaky(1.0 - d.p2, b["hp2.Y"])
    hp3 = _quantise_leaky(1.0 - d.p3, b["hp3.Y"])
    fast_k = round((1.0 - math.exp(-sub_len / (FAST_TAU_S * rate))) * 2**FAST_SHIFT)
    if not 0 < fast_k <= _FAST_K_MAX:
        raise ValueError(f"Fast multiplier {fast_k} at {rate} Hz does not fit 14 bits")
    fx = Fixed(rate, mic, block_len, sub_len, hp1, eq, hf, hp2, hp3, fast_k, 0.0, 0.0, {})
    fx = fx._replace(gain_db_a=_gain_db(fx, "A"), gain_db_c=_gain_db(fx, "C"))
    return _proved(fx)


def hf_integers(rate: int, hp1: Leaky, hf: weighting.Biquad) -> Biquad:
    """The firmware's integers for the fitted float biquad `hf` at `rate`, after `hp1`.

    The shift is the largest the accumulator's bound allows; the integers are
    then polished (`_polish_biquad`), so floats that differ in their last
    digits give the same integers.
    """
    b = _worst_bounds(rate)
    vb = max([b["hp1b.y"]] + [v for k, v in b.items() if k.startswith("eq.y:")])
    return _polish_biquad(rate, hp1, _quantise_biquad(hf, vb, b["yc"]))


def _table_values() -> dict[str, Any]:
    try:
        tree = ast.parse(TABLE.read_text(), str(TABLE))
    except OSError as exc:
        raise CoefficientTableError(
            f"cannot read the coefficient table {TABLE} ({exc.strerror}); "
            "run `hushlight gen-coeffs` to write it"
        ) from exc
    # literal values only: the table is data, never executed here
    return {
        t.targets[0].id: ast.literal_eval(t.value)
        for t in tree.body
        if isinstance(t, ast.Assign) and isinstance(t.targets[0], ast.Name)
    }


@cache
def from_table(rate: int = weighting.DEFAULT_RATE, mic: str | None = None) -> Fixed:
    """The `Fixed` the firmware runs at `rate` (and `mic`): read from its generated table.

    The integers and gains are those of `firmware/hushlight/coeffs.py`; the
    int32 bounds are proved again on them.
    """
    weighting.check_rate(rate)
    weighting.check_mic(mic)
    values = _table_values()
    ours = {"FRAC_BITS": FRAC_BITS, "STATE_BITS": STATE_BITS, "SPLIT": SPLIT}
    ours["FAST_SHIFT"] = FAST_SHIFT
    for name, value in ours.items():
        if values.get(name) != value:
            raise CoefficientTableError(
                f"{TABLE} has {name} = {values.get(name)!r} where dsp/fixedpoint.py has "
                f"{value}; run `hushlight gen-coeffs` to regenerate it"
            )
    key = f"{rate}:{mic}"
    try:
        k1, s1, b0, b1, b2, a1, a2, sh, k2, s2, k3, s3, sub_len, fast_k = values["CHAINS"][rate]
        if mic is None:
            eq = None
            gain_a, gain_c = values["GAINS"][rate]
        else:
            ek, es, kz, sz, gain_a, gain_c = values["EQ"][key]
            eq = Leaky(ek, es + SPLIT, kz, sz + SPLIT + STATE_BITS)
    except (KeyError, TypeError, ValueError) as exc:
        raise CoefficientTableError(
            f"{TABLE} has no valid entry for {rate} Hz (mic {mic}); "
            "run `hushlight gen-coeffs` to regenerate it"
        ) from exc
    fx = Fixed(
        rate,
        mic,
        rate // 8,
        sub_len,
        Leaky(k1, s1 + SPLIT),
        eq,
        Biquad(b0, b1, b2, a1, a2, sh + SPLIT),
        Leaky(k2, s2 + SPLIT),
        Leaky(k3, s3 + SPLIT),
        fast_k,
        gain_a,
        gain_c,
        {},
    )
    return _proved(fx)


def _proved(fx: Fixed) -> Fixed:
    fx = fx._replace(bounds=_bounds(fx))
    for name, value in fx.bounds.items():
        if value > INT32_MAX:
            raise ValueError(
                f"node {name} can reach {value} at {fx.rate} Hz (mic {fx.mic}), beyond int32; "
                "lower FRAC_BITS or STATE_BITS"
            )
    return fx


def _sections(fx: Fixed, weighting_name: str) -> list[tuple[list[float], list[float]]]:
    out = [_leaky_tf(fx.hp1), _leaky_tf(fx.hp1)]
    if fx.eq is not None:
        out.append(_leaky_tf(fx.eq))
    b0, b1, b2, a1, a2 = fx.hf.floats()
    out.append(([b0, b1, b2], [1.0, a1, a2]))
    if weighting_name == "A":
        out += [_leaky_tf(fx.hp2), _leaky_tf(fx.hp3)]
    return out


def _raw(fx: Fixed, weighting_name: str, freq: FloatArray) -> npt.NDArray[np.complex128]:
    z = np.exp(2j * np.pi * np.asarray(freq, dtype=np.float64) / fx.rate)
    h = np.ones_like(z)
    for b, a in _sections(fx, weighting_name):
        h = h * np.polyval(b[::-1], 1 / z) / np.polyval(a[::-1], 1 / z)
    return np.asarray(h, dtype=np.complex128)


def response(fx: Fixed, weighting_name: str, freq: npt.ArrayLike) -> npt.NDArray[np.complex128]:
    """Exact response of the quantised coefficients, with the dB gain applied (0 dB at 1 kHz)."""
    if weighting_name not in ("A", "C"):
        raise ValueError(f"weighting must be 'A' or 'C', not {weighting_name!r}")
    gain = fx.gain_db_a if weighting_name == "A" else fx.gain_db_c
    f = np.asarray(freq, dtype=np.float64)
    return np.asarray(_raw(fx, weighting_name, f) * 10.0 ** (gain / 20.0), dtype=np.complex128)


def response_db(fx: Fixed, weighting_name: str, freq: npt.ArrayLike) -> FloatArray:
    """Magnitude (dB) of `response`."""
    h = response(fx, weighting_name, freq)
    return np.asarray(20.0 * np.log10(np.abs(h)), dtype=np.float64)


def _bounds(fx: Fixed) -> dict[str, int]:
    """Worst-case |value| of each intermediate for any 24-bit input (see module docstring)."""
    n = _IMPULSE_LEN
    imp = np.zeros(n)
    imp[0] = 1.0
    g = float(2**STATE_BITS)
    # Walk the chain; `sources` holds, for the current node, the impulse
    # responses from the input and from each rounding point upstream, each with
    # the bound of what enters there.
    sources: list[tuple[FloatArray, float]] = [(imp, float(X_MAX << FRAC_BITS))]
    out: dict[str, float] = {"x": float(X_MAX), "v0": float(X_MAX << FRAC_BITS)}

    def bound(srcs: list[tuple[FloatArray, float]]) -> float:
        return sum(float(np.abs(h).sum()) * m for h, m in srcs)

    def through(
        srcs: list[tuple[FloatArray, float]], b: list[float], a: list[float]
    ) -> list[tuple[FloatArray, float]]:
        return [(_impulse(b, a, h), m) for h, m in srcs]

    def leaky(name: str, sec: Leaky) -> None:
        nonlocal sources
        # input difference (v - v_prev) << G
        diff = through(sources, [1.0, -1.0], [1.0])
        out[name + ".d"] = bound(diff) * g
        if sec.kz:
            zt = through(sources, [0.0, sec.kz / 2.0**sec.zshift], [1.0])
            out[name + ".z"] = bound(zt) * g
        # state Y (units 2**-G of the output), plus its own rounding of kmul
        state = [(h * g, m) for h, m in through(sources, [1.0, -sec.zero], [1.0, -sec.pole])]
        state.append((_impulse([1.0], [1.0, -sec.pole], imp), _ROUND * (2 if sec.kz else 1)))
        out[name + ".Y"] = bound(state)
        out[name + ".kY"] = out[name + ".Y"] * sec.k / 2**SPLIT + 2 * sec.k
        # the partial sum Y + difference (+ zero term) before kmul is taken off
        out[name + ".sum"] = out[name + ".Y"] + out[name + ".d"] + out.get(name + ".z", 0.0)
        if sec.kz:
            out[name + ".kz"] = sec.kz * (bound(sources) / 2**SPLIT + 2)
        # output Y >> G: the state / G plus one unit of rounding
        sources = [(h / g, m) for h, m in state] + [(imp, _ROUND)]
        out[name + ".y"] = bound(sources)

    leaky("hp1a", fx.hp1)
    leaky("hp1b", fx.hp1)
    if fx.eq is not None:
        leaky("eq", fx.eq)
    vb = bound(sources)
    b0, b1, b2, a1, a2 = fx.hf.floats()
    sources = [
        *through(sources, [b0, b1, b2], [1.0, a1, a2]),
        (_impulse([1.0], [1.0, a1, a2], imp), _ROUND),
    ]
    yb = bound(sources)
    c = fx.hf
    out["hf.acc"] = (abs(c.b0) + abs(c.b1) + abs(c.b2)) * (vb / 2**SPLIT + 2) + (
        abs(c.a1) + abs(c.a2)
    ) * (yb / 2**SPLIT + 2)
    out["hf.low"] = (abs(c.b0) + abs(c.b1) + abs(c.b2) + abs(c.a1) + abs(c.a2)) * (2**SPLIT - 1)
    out["yc"] = yb
    leaky("hp2", fx.hp2)
    leaky("hp3", fx.hp3)
    out["ya"] = bound(sources)
    return {k: math.ceil(v) for k, v in out.items()}
