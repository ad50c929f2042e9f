"""IEC 61672-1:2013 (electroacoustics, sound level meters): the parts the meter uses.

- The analytic A and C frequency weightings of Annex E (equations E.1 to E.8),
  evaluated at any frequency.
- Table 3: the nominal weightings at the 1/3-octave nominal frequencies
  10 Hz to 20 kHz with the class 1 and class 2 acceptance limits; the table
  lives beside this module as `iec61672_1_weightings.csv` and is read from it.
- The base-ten exact band frequencies of the nominal labels (Annex E, E.4 note
  and IEC 61260-1): ``f = 1000 * 10**(n/10)``.
"""

from __future__ import annotations

import csv
from functools import cache
from pathlib import Path
from typing import Final, NamedTuple

import numpy as np
import numpy.typing as npt

__all__ = [
    "A1000_DB",
    "C1000_DB",
    "F1_HZ",
    "F2_HZ",
    "F3_HZ",
    "F4_HZ",
    "FAST_TAU_S",
    "Band",
    "a_weighting_db",
    "bands",
    "c_weighting_db",
    "weighting_db",
]

TABLE_PATH: Final = Path(__file__).with_name("iec61672_1_weightings.csv")

# Annex E, equations E.3 to E.8 rounded as printed: the pole frequencies of the
# analytic weightings (Hz).  f1 and f4 come from fL = 10**1.5 Hz and
# fH = 10**3.9 Hz (E.3, E.4); f2 and f3 from fA = 10**2.45 Hz (E.7, E.8).
F1_HZ: Final = 20.598997
F2_HZ: Final = 107.65265
F3_HZ: Final = 737.86223
F4_HZ: Final = 12194.217
# Annex E, E.2 and E.6: normalisation constants so that C(1 kHz) = A(1 kHz) = 0 dB.
C1000_DB: Final = -0.062
A1000_DB: Final = -2.000
# 5.7.1: time constant of the Fast time weighting (s).
FAST_TAU_S: Final = 0.125

FloatArray = npt.NDArray[np.float64]


def _c_unnormalised(f: FloatArray) -> FloatArray:
    f2 = f * f
    return 20.0 * np.log10(F4_HZ**2 * f2 / ((f2 + F1_HZ**2) * (f2 + F4_HZ**2)))


def c_weighting_db(freq: npt.ArrayLike) -> FloatArray:
    """Analytic C weighting (dB) at `freq` Hz, Annex E equation E.1."""
    return _c_unnormalised(_positive(freq)) - C1000_DB


def a_weighting_db(freq: npt.ArrayLike) -> FloatArray:
    """Analytic A weighting (dB) at `freq` Hz, Annex E equation E.6."""
    f = _positive(freq)
    f2 = f * f
    extra = 10.0 * np.log10(f2 / (f2 + F2_HZ**2)) + 10.0 * np.log10(f2 / (f2 + F3_HZ**2))
    return _c_unnormalised(f) + extra - A1000_DB


def weighting_db(freq: npt.ArrayLike, weighting: str) -> FloatArray:
    """Analytic `weighting` ("A" or "C") in dB at `freq` Hz."""
    if weighting == "A":
        return a_weighting_db(freq)
    if weighting == "C":
        return c_weighting_db(freq)
    raise ValueError(f"weighting must be 'A' or 'C', not {weighting!r}")


class Band(NamedTuple):
    """One row of Table 3 (dB); an absent lower limit is -inf."""

    nominal_hz: float
    exact_hz: float
    a_db: float
    c_db: float
    class1_lo: float
    class1_hi: float
    class2_lo: float
    class2_hi: float

    def nominal_db(self, weighting: str) -> float:
        if weighting not in ("A", "C"):
            raise ValueError(f"weighting must be 'A' or 'C', not {weighting!r}")
        return self.a_db if weighting == "A" else self.c_db

    def limits(self, performance_class: int) -> tuple[float, float]:
        """(lower, upper) acceptance limits on the deviation for class 1 or 2."""
        if performance_class == 1:
            return self.class1_lo, self.class1_hi
        if performance_class == 2:
            return self.class2_lo, self.class2_hi
        raise ValueError(f"performance class must be 1 or 2, not {performance_class!r}")


@cache
def bands() -> tuple[Band, ...]:
    """Table 3 rows, 10 Hz to 20 kHz, read from the CSV beside this module."""
    rows: list[Band] = []
    with TABLE_PATH.open(newline="") as fh:
        lines = (line for line in fh if not line.startswith("#"))
        for n, rec in enumerate(csv.DictReader(lines), start=-20):
            rows.append(
                Band(
                    nominal_hz=float(rec["nominal_hz"]),
                    # base-ten series: band n has exact mid-frequency 1000 * 10**(n/10)
                    exact_hz=1000.0 * 10.0 ** (n / 10.0),
                    a_db=float(rec["a_db"]),
                    c_db=float(rec["c_db"]),
                    class1_lo=float(rec["class1_minus"]),
                    class1_hi=float(rec["class1_plus"]),
                    class2_lo=float(rec["class2_minus"]),
                    class2_hi=float(rec["class2_plus"]),
                )
            )
    return tuple(rows)


def _positive(freq: npt.ArrayLike) -> FloatArray:
    f = np.asarray(freq, dtype=np.float64)
    if not np.all(np.isfinite(f)) or np.any(f <= 0.0):
        raise ValueError(f"frequencies must be finite and above 0 Hz, got {freq!r}")
    return f
