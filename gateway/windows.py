"""A sensor's sliding window of level records, as the policy keeps it.

A window is a tuple of records sorted by end time, oldest first; a record is
``(t1, seconds, energy, lafmax)`` with ``energy = seconds * 10^(LAeq/10)``, so
the LAeq of any run of records is ``10 log10(sum energy / sum seconds)``
without a power per look.  A zone's window at time `now` holds the records
with ``now - window_s < t1 <= now + window_s`` (the upper bound admits
sensor clocks a little ahead of the gateway's).

Pure functions on tuples, no I/O: the policy calls them once per record, so
they stay loops over plain tuples.  Every sum over records goes through
`sums`, in window order, so a sum kept with a window and one made from its
records are the same float.
"""

from __future__ import annotations

import math
from bisect import bisect_right

__all__ = [
    "Record",
    "Window",
    "add",
    "inside",
    "laeq",
    "prune",
    "record",
    "sums",
]

Record = tuple[float, float, float, float]  # (t1, seconds, energy, lafmax)
Window = tuple[Record, ...]


def record(t0: float, t1: float, laeq_db: float, lafmax: float) -> Record:
    """The window record of a level record; one without a duration weighs 1 s."""
    d = t1 - t0 if t1 > t0 else 1.0
    return (t1, d, d * 10.0 ** (laeq_db / 10.0), lafmax)


def prune(recent: Window, lo: float) -> Window:
    """`recent` without the records that ended at or before `lo`; `recent` itself when none did."""
    if not recent or recent[0][0] > lo:
        return recent
    # sorted by t1: what left the window is a prefix
    i = 1
    n = len(recent)
    while i < n and recent[i][0] <= lo:
        i += 1
    return recent[i:]


def add(recent: Window, rec: Record) -> Window | None:
    """`recent` with `rec` in its place by end time; None if a record with the same end time
    is there already (a repeat)."""
    t1 = rec[0]
    if not recent or recent[-1][0] < t1:
        return (*recent, rec)  # in order: the usual case
    if any(r[0] == t1 for r in recent):
        return None
    return tuple(sorted((*recent, rec)))


def sums(recs: Window, threshold_db: float) -> tuple[float, float, int]:
    """(energy, seconds, records with LAFmax >= `threshold_db`) of `recs`, in their order."""
    energy = 0.0
    seconds = 0.0
    peaks = 0
    for _, d, e, lafmax in recs:
        energy += e
        seconds += d
        peaks += lafmax >= threshold_db
    return energy, seconds, peaks


def inside(recent: Window, lo: float, hi: float) -> Window:
    """The records of `recent` with ``lo < t1 <= hi``."""
    return recent[bisect_right(recent, lo, key=_t1) : bisect_right(recent, hi, key=_t1)]


def laeq(energy: float, seconds: float) -> float:
    """The energy-mean level (dB) of summed energy over summed seconds."""
    return 10.0 * math.log10(energy / seconds)


def _t1(rec: Record) -> float:
    return rec[0]
