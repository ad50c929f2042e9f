"""Conformance of the firmware weighting filters with IEC 61672-1:2013 Table 3.

API (used by `hushlight dsp-report`)::

    check(rate, weighting, mic=None) -> list[Row]     # one row per Table 3 band
    Row: nominal_hz, exact_hz, goal_db, firmware_db, error_db,
         class1_minus, class1_plus, class2_minus, class2_plus, tested, ok

- ``goal_db``: the design goal, the analytic weighting (Annex E) at the exact
  base-ten band frequency.
- ``firmware_db``: the response of the filter as the firmware computes it:
  the exact frequency response of the integer coefficients the firmware
  runs (the committed table, `dsp.fixedpoint.from_table`) with the gain the
  meter applies (spot-checked against the golden model's sine response in
  the tests).  With a microphone preset the
  modelled microphone response is included, so the row shows what the
  microphone plus its equaliser deliver.
- ``tested``: the band lies in the range the rate is held to: 10 Hz to
  20 kHz at 48 kHz, 10 Hz to 0.45 fs at the other rates.
- ``ok``: tested and within class 1 (always True for an untested band).

Accuracy targets (see `TARGETS`): 0.1 dB from 20 Hz to 12.5 kHz at 48 kHz,
and class 1 in the tested range at every rate.  Reached from 20 Hz to the
top of the range (measured on a fine grid): 48 kHz 0.015 dB to 12.5 kHz
(0.07 dB at 20 kHz); 44.1 kHz 0.034 dB; 32 kHz 0.008 dB; 16 kHz 0.020 dB (A)
and 0.007 dB (C) up to 7.2 kHz (0.45 fs).  The tests hold them to `TARGETS`.
"""

from __future__ import annotations

from typing import Final, NamedTuple

import numpy as np
import numpy.typing as npt

from dsp import fixedpoint, weighting
from dsp import iec61672_1 as iec

__all__ = ["TARGETS", "Row", "check", "firmware_db", "max_error_db", "tested_hi_hz"]

# rate -> (low Hz, high Hz, largest |error| dB) inside which the firmware response
# must stay; regression bounds measured on the quantised design, with margin.
TARGETS: Final = {
    48000: (20.0, 12500.0, 0.05),
    44100: (20.0, 0.45 * 44100, 0.1),
    32000: (20.0, 0.45 * 32000, 0.05),
    16000: (20.0, 0.45 * 16000, 0.05),
}


class Row(NamedTuple):
    nominal_hz: float
    exact_hz: float
    goal_db: float
    firmware_db: float
    error_db: float
    class1_minus: float
    class1_plus: float
    class2_minus: float
    class2_plus: float
    tested: bool
    ok: bool


def tested_hi_hz(rate: int) -> float:
    """Upper end of the range the rate is held to (Hz)."""
    weighting.check_rate(rate)
    return 20000.0 if rate == 48000 else 0.45 * rate


def firmware_db(
    rate: int, weighting_name: str, freq: npt.ArrayLike, mic: str | None = None
) -> npt.NDArray[np.float64]:
    """Response (dB) of the firmware chain at `freq`, microphone model included."""
    fx = fixedpoint.from_table(rate, mic)
    f = np.asarray(freq, dtype=np.float64)
    out = fixedpoint.response_db(fx, weighting_name, f) + weighting.mic_response_db(mic, f)
    return np.asarray(out, dtype=np.float64)


def check(rate: int, weighting_name: str, mic: str | None = None) -> list[Row]:
    """One row per Table 3 band; see the module docstring."""
    weighting.check_rate(rate)
    hi = tested_hi_hz(rate)
    table = iec.bands()
    exact = np.array([b.exact_hz for b in table])
    goal = iec.weighting_db(exact, weighting_name)
    # a band beyond Nyquist has no response: report it untested at -inf
    inside = exact < rate / 2
    got = np.full_like(exact, -np.inf)
    got[inside] = firmware_db(rate, weighting_name, exact[inside], mic)
    rows = []
    for b, g, fw in zip(table, goal, got, strict=True):
        tested = bool(b.exact_hz <= hi * 1.0001)  # the 20 kHz band is 19.95 kHz exactly
        err = float(fw - g)
        ok = (not tested) or (b.class1_lo <= err <= b.class1_hi)
        rows.append(
            Row(
                nominal_hz=b.nominal_hz,
                exact_hz=b.exact_hz,
                goal_db=float(g),
                firmware_db=float(fw),
                error_db=err,
                class1_minus=b.class1_lo,
                class1_plus=b.class1_hi,
                class2_minus=b.class2_lo,
                class2_plus=b.class2_hi,
                tested=tested,
                ok=bool(ok),
            )
        )
    return rows


def max_error_db(rate: int, weighting_name: str, lo_hz: float, hi_hz: float) -> float:
    """Largest |firmware - analytic| (dB) on a fine log grid from lo_hz to hi_hz."""
    f = np.geomspace(lo_hz, hi_hz, 2000)
    err = firmware_db(rate, weighting_name, f) - iec.weighting_db(f, weighting_name)
    return float(np.max(np.abs(err)))
