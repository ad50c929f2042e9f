"""Float64 reference level meter: what the firmware computes, without fixed point.

It gives the same outputs as the firmware meter so the two can be compared
sample stream for sample stream:

- per 125 ms block: A- and C-weighted mean squares and the maximum of the
  A-weighted Fast time-weighted mean square;
- per interval: ``laeq``, ``lafmax``, ``lceq``;
- per minute (`summary`): ``laeq``, ``lafmax``, ``lamin``, ``l10``,
  ``l50``, ``l90`` (of the 125 ms LAeq values, nearest rank), ``lceq`` and
  the number of peaks (upward crossings of a threshold by the Fast level).

How it is computed, and why it is the reference:

- The weighting filters are the float designs of `dsp.weighting`, run with
  scipy's `sosfilt` in float64 (no coefficient or state quantisation).
- Fast time weighting (IEC 61672-1:2013, 5.7, tau = 0.125 s) is the exact
  exponential per sample: ``y[n] = a*y[n-1] + (1-a)*x[n]**2`` with
  ``a = exp(-1/(tau*rate))``, starting from 0.
- Levels follow DESIGN.md: a full-scale sine (AES17 0 dBFS, mean square 1/2)
  reads ``94 - sensitivity_dbfs`` dB, plus ``calibration_offset_db``; so
  ``L = 10*log10(2*ms) + 94 - S + offset``.
- Blocks are those of the firmware: ``rate // 8`` samples (125 ms; at
  44100 Hz 5512 samples, 124.99 ms, so that the firmware's 1 ms Fast
  sub-blocks divide it). Times (``t0``, ``t1``) are sample counts over the
  rate. Intervals are whole numbers of blocks; at the end of a stream a
  partial interval is reported when at least one whole block is left, and
  trailing samples short of a block are dropped, as the firmware's replay
  runner does.
- Known differences from the firmware, all below the tests' tolerances: the
  firmware updates Fast once per 1 ms sub-block (reads at most 0.035 dB
  low, and counts peaks at sub-block ends), rounds in fixed point, and
  reports digital silence at its quantisation floor where this meter
  reports `LEVEL_FLOOR_DB`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
from scipy import signal

from dsp import weighting
from dsp.iec61672_1 import FAST_TAU_S

__all__ = [
    "BLOCKS_PER_SECOND",
    "BLOCK_S",
    "FAST_TAU_S",
    "FULL_SCALE_SINE_MS",
    "LEVEL_FLOOR_DB",
    "Block",
    "Interval",
    "ReferenceMeter",
    "Summary",
    "blocks_per_interval",
    "intervals",
    "level_db",
    "mean_square",
    "measure",
    "summary",
]

FloatArray = npt.NDArray[np.float64]

BLOCK_S: Final = 0.125
BLOCKS_PER_SECOND: Final = 8
# AES17: 0 dBFS is the full-scale sine, whose mean square is 1/2
FULL_SCALE_SINE_MS: Final = 0.5
# Mic sensitivity convention of DESIGN.md: S dBFS at 94 dB SPL
REFERENCE_SPL_DB: Final = 94.0
# Digital silence has no level; report a floor far below any microphone's
# self-noise instead of -inf (JSON has no infinity).
LEVEL_FLOOR_DB: Final = -100.0


def level_db(
    ms: float, sensitivity_dbfs: float = -26.0, calibration_offset_db: float = 0.0
) -> float:
    """Sound level (dB) of a mean square `ms` (full scale 1), floored at LEVEL_FLOOR_DB."""
    if ms <= 0.0:
        return LEVEL_FLOOR_DB
    level = (
        10.0 * math.log10(ms / FULL_SCALE_SINE_MS)
        + REFERENCE_SPL_DB
        - sensitivity_dbfs
        + calibration_offset_db
    )
    return max(level, LEVEL_FLOOR_DB)


def mean_square(
    level: float, sensitivity_dbfs: float = -26.0, calibration_offset_db: float = 0.0
) -> float:
    """The mean square (full scale 1) that reads `level` dB: the inverse of `level_db`."""
    offset = REFERENCE_SPL_DB - sensitivity_dbfs + calibration_offset_db
    return FULL_SCALE_SINE_MS * math.pow(10.0, (level - offset) / 10.0)


def blocks_per_interval(interval_s: float) -> int:
    """Number of 125 ms blocks in an interval; the interval must hold a whole number."""
    blocks = interval_s * BLOCKS_PER_SECOND
    if not math.isfinite(interval_s) or interval_s <= 0 or abs(blocks - round(blocks)) > 1e-9:
        raise ValueError(
            f"interval {interval_s!r} s is not a positive multiple of 0.125 s; "
            "give e.g. 0.125, 0.5, 1 or 60"
        )
    return round(blocks)


@dataclass(frozen=True)
class Block:
    """One 125 ms block: sums over its samples (linear, full scale 1)."""

    index: int
    start: int  # first sample
    samples: int
    sum_a: float  # sum of squares, A-weighted
    sum_c: float  # sum of squares, C-weighted
    fast_max: float  # largest A-weighted Fast mean square in the block
    peaks: int = 0  # upward crossings of the peak threshold by the Fast mean square


@dataclass(frozen=True)
class Interval:
    """Levels (dB) over `blocks` whole blocks from t0 to t1 (s from the stream start)."""

    t0: float
    t1: float
    laeq: float
    lafmax: float
    lceq: float
    blocks: int

    def as_dict(self, digits: int = 2) -> dict[str, float]:
        return {
            # sample counts over the rate, unrounded, as the firmware runner prints them
            "t0": self.t0,
            "t1": self.t1,
            "laeq": round(self.laeq, digits),
            "lafmax": round(self.lafmax, digits),
            "lceq": round(self.lceq, digits),
        }


@dataclass(frozen=True)
class Summary:
    """Statistics of a run of blocks (a minute, as the sensor reports them), levels in dB.

    ``lamin``, ``l10``, ``l50``, ``l90`` are taken from the 125 ms LAeq values:
    ``lN`` is the level exceeded N % of the time, by nearest rank (the value at
    rank ``ceil(n * N / 100)`` when sorted loudest first).
    """

    t0: float
    t1: float
    laeq: float
    lafmax: float
    lamin: float
    l10: float
    l50: float
    l90: float
    lceq: float
    peaks: int

    def as_dict(self, digits: int = 2) -> dict[str, float | int]:
        out: dict[str, float | int] = {"t0": self.t0, "t1": self.t1}
        for key in ("laeq", "lafmax", "lamin", "l10", "l50", "l90", "lceq"):
            out[key] = round(getattr(self, key), digits)
        out["peaks"] = self.peaks
        return out


class ReferenceMeter:
    """Streaming float64 meter: feed any number of samples, get the finished blocks.

    `sos_a` and `sos_c` are the weighting filters as second-order sections
    (scipy layout); by default the float designs of `dsp.weighting` at `rate`,
    with the equaliser of microphone preset `mic` when given. A peak is an
    upward crossing of `peak_threshold_ms` (a Fast mean square, full scale 1;
    see `mean_square`) by the A-weighted Fast mean square, sample by sample.
    """

    def __init__(
        self,
        rate: int,
        *,
        sos_a: npt.ArrayLike | None = None,
        sos_c: npt.ArrayLike | None = None,
        mic: str | None = None,
        peak_threshold_ms: float = math.inf,
    ) -> None:
        if isinstance(rate, bool) or not isinstance(rate, int) or rate <= 0:
            raise ValueError(f"sample rate {rate!r} is not valid; give a positive integer in Hz")
        self.rate = rate
        self.block_len = rate // BLOCKS_PER_SECOND  # the firmware's block, also at 44.1 kHz
        if sos_a is None:
            sos_a = weighting.sos(rate, "A", mic)
        if sos_c is None:
            sos_c = weighting.sos(rate, "C", mic)
        self._sos_a = np.atleast_2d(np.asarray(sos_a, dtype=np.float64))
        self._sos_c = np.atleast_2d(np.asarray(sos_c, dtype=np.float64))
        self._zi_a = np.zeros((self._sos_a.shape[0], 2))
        self._zi_c = np.zeros((self._sos_c.shape[0], 2))
        self._alpha = math.exp(-1.0 / (FAST_TAU_S * rate))
        self._fast = np.zeros(1)  # lfilter state of the Fast integrator
        self._peak_ms = peak_threshold_ms
        self._above = False  # Fast level at or over the threshold at the last sample
        # squares filtered but not yet closed into a block
        self._rest_a = np.zeros(0)
        self._rest_c = np.zeros(0)
        self._rest_f = np.zeros(0)
        self._index = 0
        self._start = 0

    def process(self, x: npt.ArrayLike) -> list[Block]:
        """Filter `x` (float, full scale 1) and return the blocks it completes."""
        samples = np.asarray(x, dtype=np.float64).reshape(-1)
        if samples.size == 0:
            return []
        wa, self._zi_a = signal.sosfilt(self._sos_a, samples, zi=self._zi_a)
        wc, self._zi_c = signal.sosfilt(self._sos_c, samples, zi=self._zi_c)
        sq_a = wa * wa
        a = self._alpha
        fast, self._fast = signal.lfilter([1.0 - a], [1.0, -a], sq_a, zi=self._fast)
        # prepend what the last call left short of a block, then cut whole blocks
        sq_a = np.concatenate([self._rest_a, sq_a])
        sq_c = np.concatenate([self._rest_c, wc * wc])
        fast = np.concatenate([self._rest_f, fast])
        done: list[Block] = []
        pos = 0
        n = self.block_len
        while sq_a.size - pos >= n:
            done.append(
                Block(
                    index=self._index,
                    start=self._start,
                    samples=n,
                    sum_a=float(np.sum(sq_a[pos : pos + n])),
                    sum_c=float(np.sum(sq_c[pos : pos + n])),
                    fast_max=float(np.max(fast[pos : pos + n])),
                    peaks=self._count_peaks(fast[pos : pos + n]),
                )
            )
            pos += n
            self._index += 1
            self._start += n
        self._rest_a, self._rest_c, self._rest_f = sq_a[pos:], sq_c[pos:], fast[pos:]
        return done

    def _count_peaks(self, fast: FloatArray) -> int:
        above = fast >= self._peak_ms
        before = np.concatenate([[self._above], above[:-1]])
        self._above = bool(above[-1])
        return int(np.count_nonzero(above & ~before))


def intervals(
    blocks: Iterable[Block],
    rate: int,
    interval_s: float = 1.0,
    *,
    sensitivity_dbfs: float = -26.0,
    calibration_offset_db: float = 0.0,
) -> Iterator[Interval]:
    """Group blocks into intervals: whole ones, then a last partial one if a block is left."""
    per = blocks_per_interval(interval_s)  # checked now, not at the first block
    return _group(blocks, rate, per, sensitivity_dbfs, calibration_offset_db)


def _group(
    blocks: Iterable[Block],
    rate: int,
    per: int,
    sensitivity_dbfs: float,
    calibration_offset_db: float,
) -> Iterator[Interval]:
    group: list[Block] = []

    def close() -> Interval:
        n = sum(b.samples for b in group)
        return Interval(
            t0=group[0].start / rate,
            t1=(group[-1].start + group[-1].samples) / rate,
            laeq=level_db(sum(b.sum_a for b in group) / n, sensitivity_dbfs, calibration_offset_db),
            lafmax=level_db(
                max(b.fast_max for b in group), sensitivity_dbfs, calibration_offset_db
            ),
            lceq=level_db(sum(b.sum_c for b in group) / n, sensitivity_dbfs, calibration_offset_db),
            blocks=len(group),
        )

    for b in blocks:
        group.append(b)
        if len(group) == per:
            yield close()
            group = []
    if group:
        yield close()


def summary(
    blocks: Sequence[Block],
    rate: int,
    *,
    sensitivity_dbfs: float = -26.0,
    calibration_offset_db: float = 0.0,
) -> Summary:
    """Minute-style statistics of `blocks` (at least one)."""
    if not blocks:
        raise ValueError("no blocks to summarise; give at least one 125 ms block")

    def level(ms: float) -> float:
        return level_db(ms, sensitivity_dbfs, calibration_offset_db)

    n = sum(b.samples for b in blocks)
    loudest_first = sorted((level(b.sum_a / b.samples) for b in blocks), reverse=True)

    def exceeded(percent: int) -> float:
        rank = max(1, math.ceil(len(loudest_first) * percent / 100))
        return loudest_first[rank - 1]

    return Summary(
        t0=blocks[0].start / rate,
        t1=(blocks[-1].start + blocks[-1].samples) / rate,
        laeq=level(sum(b.sum_a for b in blocks) / n),
        lafmax=level(max(b.fast_max for b in blocks)),
        lamin=loudest_first[-1],
        l10=exceeded(10),
        l50=exceeded(50),
        l90=exceeded(90),
        lceq=level(sum(b.sum_c for b in blocks) / n),
        peaks=sum(b.peaks for b in blocks),
    )


def measure(
    rate: int,
    x: npt.ArrayLike,
    interval_s: float = 1.0,
    *,
    sensitivity_dbfs: float = -26.0,
    calibration_offset_db: float = 0.0,
    sos_a: npt.ArrayLike | None = None,
    sos_c: npt.ArrayLike | None = None,
    mic: str | None = None,
) -> list[Interval]:
    """Levels of a whole signal per interval (for tests and short recordings)."""
    meter = ReferenceMeter(rate, sos_a=sos_a, sos_c=sos_c, mic=mic)
    return list(
        intervals(
            meter.process(x),
            rate,
            interval_s,
            sensitivity_dbfs=sensitivity_dbfs,
            calibration_offset_db=calibration_offset_db,
        )
    )
