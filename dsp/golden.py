"""Bit-exact golden model of the firmware level meter (`firmware/hushlight/levelmeter.py`).

The firmware's integer arithmetic is repeated here operation for operation
(Python's ``>>`` is arithmetic like the viper's, ``&`` works on two's
complement alike, nothing wraps because nothing may overflow) and every
intermediate is checked against the int32 range of the ESP32's viper int.
A value outside it raises `Int32OverflowError` naming the stage and the
sample index.  Tests run the same words through the firmware in MicroPython
and through this model and require identical block sums, maxima, counts and
dB values; then the bounds proved here for full-scale input hold on the
device too.

The recursive filter loop is plain Python over the samples of one block; the
input conversion and clipping count are vectorised with numpy.  Keep test
signals short (a fraction of a second).
"""

from __future__ import annotations

import math
from typing import Final, NamedTuple

import numpy as np
import numpy.typing as npt

from dsp import fixedpoint as fp
from dsp.errors import Int32OverflowError

__all__ = [
    "BlockResult",
    "GoldenMeter",
    "Int32OverflowError",
    "level_db",
    "round2",
    "wide_float",
]

_LO: Final = fp.INT32_MIN
_HI: Final = fp.INT32_MAX
_BIG: Final = 1 << 30
_M16: Final = 0xFFFF
MINUTE_BLOCKS: Final = 480
_NL: Final = 5
_NW: Final = 6


class BlockResult(NamedTuple):
    """What the firmware leaves in its state array after one block (wide values as ints)."""

    a_sum: int
    c_sum: int
    fast_max: int
    clipped: int
    peaks: int


def round2(x: float) -> float:
    """The firmware's rounding to 0.01 dB."""
    return math.floor(x * 100.0 + 0.5) / 100.0


def limbs(value: int, n: int) -> list[int]:
    """`value` as n 16-bit limbs, least significant first (the top limb keeps the rest)."""
    out = [(value >> (16 * j)) & _M16 for j in range(n - 1)]
    out.append(value >> (16 * (n - 1)))
    return out


def wide_float(value: int, n: int) -> float:
    """Float of a wide value, by the firmware's steps (Horner over the limbs)."""
    v = 0.0
    for limb in reversed(limbs(value, n)):
        v = v * 65536.0 + limb
    return v


def level_db(energy: float, count: int, offset: float) -> float:
    """The firmware's `level_db`."""
    if energy < 1.0:
        energy = 1.0
    if count < 1:
        count = 1
    return 10.0 * math.log10(energy / count) + offset


def _fail(stage: str, index: int, value: int) -> Int32OverflowError:
    return Int32OverflowError(
        f"stage {stage} reached {value} at sample {index}, outside int32 "
        f"[{_LO}, {_HI}]; the fixed-point scaling in dsp/fixedpoint.py must change"
    )


class GoldenMeter:
    """The firmware's LevelMeter in CPython, bit for bit, with int32 checks."""

    def __init__(
        self,
        rate: int = 48000,
        sensitivity_dbfs: float = -26.0,
        calibration_offset_db: float = 0.0,
        mic: str | None = None,
        peak_threshold_db: float = 70.0,
        trace: bool = False,
    ) -> None:
        # the committed table, which is what the firmware runs
        self.fx = fx = fp.from_table(rate, mic)
        # with trace, the largest |value| seen per stage (slower; for the bound tests)
        self.trace = trace
        self.largest: dict[str, int] = {}
        self.rate = rate
        self.block_len = fx.block_len
        self.samples = 0  # index of the next sample, for error messages
        # filter states (the firmware's st[0..13]) and the Fast state
        self.y1 = self.p0 = self.y2 = self.p1 = self.ye = self.pe = 0
        self.u1 = self.u2 = self.c1 = self.c2 = self.y3 = self.y4 = self.p3 = 0
        self.above = 0
        self.d = 0
        self.last = BlockResult(0, 0, 0, 0, 0)
        self.i_a = self.i_c = self.i_max = self.i_clip = self.i_blocks = 0
        self.s_a = self.s_c = self.s_max = self.s_peaks = self.s_blocks = 0
        self.ring = [0] * MINUTE_BLOCKS
        self._sensitivity = sensitivity_dbfs
        self._cal = calibration_offset_db
        self._threshold = peak_threshold_db
        self._fast = fx.fast_k / (1048576.0 * fx.sub_len)
        self._offsets()

    # --- the firmware's Python part -------------------------------------------------

    def _offsets(self) -> None:
        full_scale_db = -10.0 * math.log10(2.0 ** (2 * (23 + fp.FRAC_BITS) - 1))
        base = (94.0 - self._sensitivity) + self._cal + full_scale_db
        self._off_a = base + round(self.fx.gain_db_a, 9)
        self._off_c = base + round(self.fx.gain_db_c, 9)
        d = 10.0 ** ((self._threshold - self._off_a) / 10.0) / self._fast
        self.threshold_state = math.ceil(d) if d < 1e24 else 1 << 80

    def set_calibration(self, offset_db: float) -> None:
        self._cal = float(offset_db)
        self._offsets()

    def last_block_laeq(self) -> float:
        return round2(level_db(wide_float(self.last.a_sum, _NL), self.block_len, self._off_a))

    def take_interval(self) -> tuple[float, float, float, int]:
        n = self.i_blocks * self.block_len
        laeq = level_db(wide_float(self.i_a, _NW), n, self._off_a)
        lceq = level_db(wide_float(self.i_c, _NW), n, self._off_c)
        lafmax = level_db(wide_float(self.i_max, _NL) * self._fast, 1, self._off_a)
        out = (round2(laeq), round2(lafmax), round2(lceq), self.i_clip)
        self.i_a = self.i_c = self.i_max = self.i_clip = self.i_blocks = 0
        return out

    def take_summary(self) -> dict[str, float | int]:
        blocks = self.s_blocks
        n = blocks * self.block_len
        kept = min(blocks, MINUTE_BLOCKS)
        levels = sorted(
            (
                level_db(wide_float(self.ring[k] >> 16, 4) * 65536.0, self.block_len, self._off_a)
                for k in range(kept)
            ),
            reverse=True,
        )
        out: dict[str, float | int] = {
            "laeq": round2(level_db(wide_float(self.s_a, _NW), n, self._off_a)),
            "lafmax": round2(level_db(wide_float(self.s_max, _NL) * self._fast, 1, self._off_a)),
            "lceq": round2(level_db(wide_float(self.s_c, _NW), n, self._off_c)),
            "peaks": self.s_peaks,
        }
        if kept:
            out["lamin"] = round2(levels[kept - 1])
            for key, p in (("l10", 10), ("l50", 50), ("l90", 90)):
                out[key] = round2(levels[max((kept * p + 99) // 100, 1) - 1])
        else:
            floor = round2(level_db(0.0, self.block_len, self._off_a))
            out["lamin"] = out["l10"] = out["l50"] = out["l90"] = floor
        self.s_a = self.s_c = self.s_max = self.s_peaks = self.s_blocks = 0
        return out

    # --- the viper part -------------------------------------------------------------

    def process_block(self, words: npt.ArrayLike) -> BlockResult:
        """One block of int32 I2S words, as `_filter` + `_block_end` compute it."""
        w = np.asarray(words, dtype=np.int64)
        if w.shape != (self.block_len,):
            raise ValueError(
                f"a block is {self.block_len} words at {self.rate} Hz, got shape {w.shape}"
            )
        if w.min(initial=0) < _LO or w.max(initial=0) > _HI:
            raise ValueError("I2S words must be int32 values")
        x = w >> fp.IN_SHIFT
        clip = int(np.count_nonzero((x >= 0x7FFFFF) | (x <= -0x800000)))
        res = self._filter([int(v) for v in x], clip)
        self.last = res
        self.i_a += res.a_sum
        self.i_c += res.c_sum
        self.s_a += res.a_sum
        self.s_c += res.c_sum
        self.i_max = max(self.i_max, res.fast_max)
        self.s_max = max(self.s_max, res.fast_max)
        self.i_clip += res.clipped
        self.s_peaks += res.peaks
        self.i_blocks += 1
        self.ring[self.s_blocks % MINUTE_BLOCKS] = res.a_sum >> 16 << 16
        self.s_blocks += 1
        self.samples += self.block_len
        return res

    def _filter(self, xs: list[int], clip: int) -> BlockResult:
        fx = self.fx
        k1, s1 = fx.hp1.k, fx.hp1.shift - fp.SPLIT
        hf = fx.hf
        b0, b1, b2, a1, a2, sh = hf.b0, hf.b1, hf.b2, hf.a1, hf.a2, hf.shift - fp.SPLIT
        k2, s2 = fx.hp2.k, fx.hp2.shift - fp.SPLIT
        k3, s3 = fx.hp3.k, fx.hp3.shift - fp.SPLIT
        eq = fx.eq
        ke = se = kz = sz = 0
        if eq is not None:
            ke, se = eq.k, eq.shift - fp.SPLIT
            kz, sz = eq.kz, eq.zshift - fp.SPLIT - fp.STATE_BITS
        kf, sub = fx.fast_k, fx.sub_len
        y1, p0, y2, p1, ye, pe = self.y1, self.p0, self.y2, self.p1, self.ye, self.pe
        u1, u2, c1, c2, y3, y4, p3 = self.u1, self.u2, self.c1, self.c2, self.y3, self.y4, self.p3
        above, d, thr = self.above, self.d, self.threshold_state
        c_sum = a_sum = fmax = peaks = 0
        base = self.samples
        lo, hi = _LO, _HI

        largest = self.largest
        trace = self.trace

        def check(v: int, stage: str, i: int) -> None:
            if not lo <= v <= hi:
                raise _fail(stage, base + i, v)
            if trace and abs(v) > largest.get(stage, -1):
                largest[stage] = abs(v)

        def mul(c: int, v: int, stage: str, i: int) -> int:
            h = c * (v >> 12)
            low = c * (v & 4095)
            t = h + (low >> 12)
            check(h, stage + " product", i)
            check(low, stage + " low product", i)
            check(t, stage + " product", i)
            return t

        def energy(y: int, acc: list[int], stage: str, i: int) -> None:
            # the three ranges of the firmware, limbs normalised when one reaches 2**30
            a = -y if y < 0 else y
            if a < 32768:
                acc[0] += a * a
            elif a < 0x800000:
                b = (a + 128) >> 8
                acc[1] += b * b
            else:
                b = (a + 32768) >> 16
                acc[2] += b * b
            for j in range(3):
                check(acc[j], stage, i)
            if (acc[0] | acc[1] | acc[2]) >= _BIG:
                for j in range(4):
                    acc[j + 1] += acc[j] >> 16
                    acc[j] &= _M16
                    check(acc[j + 1], stage, i)

        c_acc = [0] * _NL
        n = len(xs)
        i = 0
        while i < n:
            e_acc = [0] * _NL
            end = i + sub
            while i < end:
                v = xs[i] << 2
                dv = (v - p0) << 3
                check(dv, "hp1a input", i)
                t = y1 + dv
                check(t, "hp1a sum", i)
                y1 = t - (mul(k1, y1, "hp1a", i) >> s1)
                check(y1, "hp1a state", i)
                p0 = v
                v = y1 >> 3
                dv = (v - p1) << 3
                check(dv, "hp1b input", i)
                t = y2 + dv
                check(t, "hp1b sum", i)
                y2 = t - (mul(k1, y2, "hp1b", i) >> s1)
                check(y2, "hp1b state", i)
                p1 = v
                v = y2 >> 3
                if eq is not None:
                    dv = (v - pe) << 3
                    check(dv, "eq input", i)
                    t = ye + dv
                    check(t, "eq sum", i)
                    t += mul(kz, pe, "eq zero", i) >> sz
                    check(t, "eq sum", i)
                    ye = t - (mul(ke, ye, "eq", i) >> se)
                    check(ye, "eq state", i)
                    pe = v
                    v = ye >> 3
                # high parts summed, low parts summed and shifted once
                acc = low = 0
                for c, m, sign, name in (
                    (b0, v, 1, "hf b0"),
                    (b1, u1, 1, "hf b1"),
                    (b2, u2, 1, "hf b2"),
                    (a1, c1, -1, "hf a1"),
                    (a2, c2, -1, "hf a2"),
                ):
                    h = c * (m >> 12)
                    lp = c * (m & 4095)
                    check(h, name + " product", i)
                    check(lp, name + " product", i)
                    acc += sign * h
                    low += sign * lp
                    check(acc, "hf sum", i)
                    check(low, "hf low sum", i)
                acc += low >> 12
                check(acc, "hf sum", i)
                yc = acc >> sh
                u2 = u1
                u1 = v
                dc = yc - c1
                check(dc, "hp2 input", i)
                c2 = c1
                c1 = yc
                energy(yc, c_acc, "C energy", i)
                dv = dc << 3
                check(dv, "hp2 input", i)
                t = y3 + dv
                check(t, "hp2 sum", i)
                y3 = t - (mul(k2, y3, "hp2", i) >> s2)
                check(y3, "hp2 state", i)
                v = y3 >> 3
                dv = (v - p3) << 3
                check(dv, "hp3 input", i)
                t = y4 + dv
                check(t, "hp3 sum", i)
                y4 = t - (mul(k3, y4, "hp3", i) >> s3)
                check(y4, "hp3 state", i)
                p3 = v
                energy(y4 >> 3, e_acc, "A energy", i)
                i += 1
            e = sum(limb << (16 * j) for j, limb in enumerate(e_acc))
            a_sum += e
            # Fast: the firmware multiplies limb by limb with carries (checked
            # here); the product is exact, so a plain floor shift gives its value
            q = 0
            for limb in limbs(d, _NL):
                q = kf * limb + (q >> 16)
                check(q, "Fast product", i - 1)
            d = d - ((kf * d) >> fp.FAST_SHIFT) + e
            if d >> (16 * (_NL - 1)) >= 1 << 16:
                raise _fail("Fast state top limb", base + i - 1, d >> 64)
            fmax = max(fmax, d)
            if d >= thr:
                if not above:
                    peaks += 1
                above = 1
            else:
                above = 0
        c_sum = sum(limb << (16 * j) for j, limb in enumerate(c_acc))
        for name, value in (("A block sum", a_sum), ("C block sum", c_sum)):
            if value >> (16 * (_NL - 1)) >= 1 << 16:
                raise _fail(name + " top limb", base + n - 1, value >> 64)
        self.y1, self.p0, self.y2, self.p1, self.ye, self.pe = y1, p0, y2, p1, ye, pe
        self.u1, self.u2, self.c1, self.c2, self.y3, self.y4, self.p3 = u1, u2, c1, c2, y3, y4, p3
        for name, value in (("hp1a", y1), ("hp1b", y2), ("eq", ye), ("hp2", y3), ("hp3", y4)):
            if abs(value) >= _BIG:
                raise _fail(name + " stored state (sign-fix limit 2**30)", base + n - 1, value)
        self.above, self.d = above, d
        return BlockResult(a_sum, c_sum, fmax, clip, peaks)
