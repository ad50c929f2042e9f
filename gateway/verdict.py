"""The verdict on the nudges: per zone and kind, what a nudge did against its controls.

Pure: episodes and their minute levels in, numbers out; no database, no files.

Noise falls after a peak by itself (regression to the mean), so the levels
after nudges alone say nothing: only the randomised controls (the trigger
fired, nothing was sent) tell an effect from chance.  Per zone and nudge kind,
for every episode with levels stored both before and after its trigger:

- peaks: records with LAFmax over the threshold per reporting sensor in the
  `minutes` after the trigger (``after``), and in the `minutes` before it
  (``before``, the trigger's own minute included);
- LAeq: the energy mean of those minutes over all sensors.

Effects, each adjusted for the same measure before the trigger by a
covariance adjustment with one pooled slope (it removes the share of the
difference that the loudness before the trigger explains, and keeps the
estimate linear in the outcomes, which the interval below relies on):

- peaks as a rate ratio, adjusted mean after nudges / after controls;
- LAeq as a difference in dB, nudges - controls (negative = quieter).

Intervals and p-values come from randomisation inference.  The policy labels
each trigger a control with probability ``control_fraction``, independently
of everything else; given how many controls a zone and kind got, every
arrangement of the labels over its episodes was equally likely, so re-drawing
them as a permutation within (zone, kind) reproduces the design exactly,
whatever nights and sensors have in common.  The p-value tests "no effect";
the 95 % interval is every effect (a constant shift in dB, a constant factor
on the peaks) that the same test does not reject at 5 %.  The permutations
come from a generator seeded by (seed, zone, kind): the same data always give
the same verdict.

The smallest detectable effect is the one found with 80 % power by a
two-sided test at 5 %, from the randomisation standard error; when it is
larger than the target the verdict says how many more episodes would bring
it down (the standard error falls as one over the square root of the count).

The balance check asks whether nudges and controls fell at the same hours of
the night, on the same nights, and after equally loud minutes; the labels are
random, so an imbalance points at a fault in how they were recorded.
"""

from __future__ import annotations

import datetime as dt
import math
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

__all__ = [
    "MIN_PER_ARM",
    "Balance",
    "Effect",
    "EpisodeLevels",
    "Minute",
    "Point",
    "Verdict",
    "measures",
    "verdicts",
]

Floats = npt.NDArray[np.float64]

# below this many nudges or controls with levels, no 95 % interval exists: 5 of each
# already leaves only 252 arrangements of the labels
MIN_PER_ARM = 5

_Z_CI = NormalDist().inv_cdf(0.975)
_Z_POWER = NormalDist().inv_cdf(0.80)
# an imbalance this unlikely under random labels is worth a look (four checks are made)
_BALANCE_ALPHA = 0.01
# points of the grid over which the test is inverted, and its half-width in standard errors
_GRID = 1201
_GRID_HALF = 12.0


@dataclass(frozen=True)
class Minute:
    """One sensor's levels over one minute (a stored minute row)."""

    sensor: str
    minute: float  # UTC epoch s of the minute's start
    dur: float  # seconds covered by records
    laeq: float
    peaks: int  # records with LAFmax >= the peak threshold


@dataclass(frozen=True)
class EpisodeLevels:
    """A nudge or control, with the minutes of its sensors before and after the trigger."""

    id: str
    zone: str
    kind: str
    control: bool
    at: float  # UTC epoch s of the trigger
    before: tuple[Minute, ...]
    after: tuple[Minute, ...]


@dataclass(frozen=True)
class Point:
    """One analysed episode's measures (for plots)."""

    id: str
    control: bool
    at: float
    peaks_before: float
    peaks_after: float
    laeq_before: float
    laeq_after: float


@dataclass(frozen=True)
class Effect:
    """The effect of a nudge kind on one measure.

    For ``peaks`` the figures are rate ratios (0.69 = 31 % fewer peaks); for
    ``laeq`` differences in dB (-1.2 = 1.2 dB quieter).  `low` or `high` is
    None when the interval is open on that side; everything but the means and
    `mde` is None when the data cannot give it.
    """

    measure: str  # "peaks" or "laeq"
    estimate: float | None
    low: float | None
    high: float | None
    p_value: float | None
    mean_nudges: float  # adjusted mean after nudges
    mean_controls: float  # adjusted mean after controls
    se: float | None  # randomisation standard error, of the log ratio or of the dB difference
    mde: float | None  # smallest detectable effect, as a ratio (< 1) or a dB difference (> 0)
    target: float  # the effect worth detecting, same scale as `mde`
    more_needed: int  # episodes to add so that `mde` reaches `target` (0 = enough)
    note: str  # why figures are missing, or ""


@dataclass(frozen=True)
class Balance:
    """Whether nudges and controls look alike where random labels make them alike."""

    hour_nudges: float  # mean clock hour (0-24, local), nights counted from noon
    hour_controls: float
    p_hours: float
    p_nights: float
    p_laeq_before: float
    p_peaks_before: float

    @property
    def ok(self) -> bool:
        return min(self.p_hours, self.p_nights, self.p_laeq_before, self.p_peaks_before) >= (
            _BALANCE_ALPHA
        )


@dataclass(frozen=True)
class Verdict:
    """Nudges against controls for one zone and kind."""

    zone: str
    kind: str
    nudges: int  # episodes recorded
    controls: int
    nudges_analysed: int  # of those, with levels before and after
    controls_analysed: int
    nights: int  # nights the analysed episodes fell on
    peaks: Effect | None  # None until MIN_PER_ARM of each arm are analysed
    laeq: Effect | None
    balance: Balance | None
    more_needed: int  # episodes to add before anything can be said (0 once effects exist)
    points: tuple[Point, ...]


def measures(minutes: Sequence[Minute]) -> tuple[float, float] | None:
    """(LAeq energy mean over all minutes, peaks per reporting sensor), None without data."""
    seconds = sum(m.dur for m in minutes)
    if not minutes or seconds <= 0:
        return None
    energy = sum(m.dur * 10.0 ** (m.laeq / 10.0) for m in minutes)
    sensors = {m.sensor for m in minutes}
    return 10.0 * math.log10(energy / seconds), sum(m.peaks for m in minutes) / len(sensors)


def verdicts(
    episodes: Iterable[EpisodeLevels],
    *,
    tz: str = "Europe/Brussels",
    target_peaks: float = 0.20,
    target_db: float = 1.0,
    permutations: int = 2000,
    seed: int = 0,
) -> list[Verdict]:
    """One verdict per (zone, kind), sorted; see the module docstring for the method.

    `target_peaks` is the share of peaks a nudge should remove to be worth
    detecting (0.20 = 20 % fewer), `target_db` the same in dB of LAeq.
    """
    if not 0.0 < target_peaks < 1.0:
        raise ValueError(f"target_peaks {target_peaks!r}: expected a share between 0 and 1")
    if not target_db > 0.0:
        raise ValueError(f"target_db {target_db!r}: expected a positive number of dB")
    if permutations < 100:
        raise ValueError(f"permutations {permutations!r}: expected at least 100")
    zone_info = ZoneInfo(tz)
    groups: dict[tuple[str, str], list[EpisodeLevels]] = {}
    for ep in episodes:
        groups.setdefault((ep.zone, ep.kind), []).append(ep)
    return [
        _verdict(
            zone,
            kind,
            sorted(eps, key=lambda e: (e.at, e.id)),
            zone_info,
            target_peaks,
            target_db,
            permutations,
            seed,
        )
        for (zone, kind), eps in sorted(groups.items())
    ]


def _verdict(
    zone: str,
    kind: str,
    eps: list[EpisodeLevels],
    tz: ZoneInfo,
    target_peaks: float,
    target_db: float,
    permutations: int,
    seed: int,
) -> Verdict:
    points = []
    for ep in eps:
        before, after = measures(ep.before), measures(ep.after)
        if before is not None and after is not None:
            points.append(Point(ep.id, ep.control, ep.at, before[1], after[1], before[0], after[0]))
    nudges = sum(not e.control for e in eps)
    n1 = sum(not p.control for p in points)
    n0 = len(points) - n1
    nights = [_night(p.at, tz) for p in points]
    if min(n1, n0) < MIN_PER_ARM:
        return Verdict(
            zone,
            kind,
            nudges,
            len(eps) - nudges,
            n1,
            n0,
            len(set(nights)),
            None,
            None,
            None,
            _more_for_minimum(n1, n0),
            tuple(points),
        )
    treated = np.array([0.0 if p.control else 1.0 for p in points])
    rng = np.random.default_rng([seed, zlib.crc32(f"{zone}\0{kind}".encode())])
    perms = rng.permuted(np.tile(treated, (permutations, 1)), axis=1)
    x_peaks = np.array([p.peaks_before for p in points])
    x_laeq = np.array([p.laeq_before for p in points])
    peaks = _ratio_effect(
        treated,
        perms,
        x_peaks,
        np.array([p.peaks_after for p in points]),
        1.0 - target_peaks,
    )
    laeq = _shift_effect(
        treated, perms, x_laeq, np.array([p.laeq_after for p in points]), target_db
    )
    hours = np.array([_hour_of_night(p.at, tz) for p in points])
    night_ids = {n: i for i, n in enumerate(sorted(set(nights)))}
    balance = Balance(
        hour_nudges=(float(hours[treated == 1].mean()) + 12.0) % 24.0,
        hour_controls=(float(hours[treated == 0].mean()) + 12.0) % 24.0,
        p_hours=_p_mean_difference(treated, perms, hours),
        p_nights=_p_nights(treated, perms, np.array([night_ids[n] for n in nights])),
        p_laeq_before=_p_mean_difference(treated, perms, x_laeq),
        p_peaks_before=_p_mean_difference(treated, perms, x_peaks),
    )
    return Verdict(
        zone,
        kind,
        nudges,
        len(eps) - nudges,
        n1,
        n0,
        len(night_ids),
        peaks,
        laeq,
        balance,
        0,
        tuple(points),
    )


def _more_for_minimum(n1: int, n0: int) -> int:
    """Episodes to add, at the share of controls seen so far, to reach MIN_PER_ARM of each."""
    n = n1 + n0
    share = n0 / n if n0 and n1 else 0.5
    need = max(MIN_PER_ARM / share, MIN_PER_ARM / (1.0 - share), 2 * MIN_PER_ARM)
    return max(math.ceil(need) - n, MIN_PER_ARM - n1, MIN_PER_ARM - n0, 1)


def _weights(labels: Floats, x: Floats) -> tuple[Floats, Floats]:
    """Weights of the covariate-adjusted arm means, one row per labelling.

    With one pooled slope b over the deviations of `x` from each arm's mean, the
    adjusted mean of an arm is ``ybar_arm - b * (xbar_arm - xbar)``, a linear
    function of y: returns (W1, W0) with mean after nudges = W1 @ y and after
    controls = W0 @ y.
    """
    t = np.atleast_2d(labels)
    n = t.shape[1]
    n1 = t.sum(axis=1, keepdims=True)
    n0 = n - n1
    xbar = x.mean()
    xbar1 = (t @ x)[:, None] / n1
    xbar0 = ((1.0 - t) @ x)[:, None] / n0
    dev = x - (t * xbar1 + (1.0 - t) * xbar0)
    sxx = (dev**2).sum(axis=1, keepdims=True)
    # the same x everywhere in each arm: nothing to adjust for
    scale = np.where(sxx > 1e-12 * max(1.0, float(np.abs(x).max()) ** 2), sxx, np.inf)
    slope_w = dev / scale
    w1 = t / n1 - slope_w * (xbar1 - xbar)
    w0 = (1.0 - t) / n0 - slope_w * (xbar0 - xbar)
    return w1, w0


def _p_values(observed: Floats, permuted: Floats) -> Floats:
    """Two-sided randomisation p-values of `observed` (grid) against `permuted` (draws x grid)."""
    # a relative tolerance, so ties from float rounding count as ties
    tol = 1e-9 * (1.0 + np.abs(observed))
    extreme = (np.abs(permuted) >= np.abs(observed) - tol).sum(axis=0)
    return np.asarray((1.0 + extreme) / (1.0 + permuted.shape[0]), dtype=np.float64)


def _interval(grid: Floats, p: Floats) -> tuple[float | None, float | None]:
    kept = np.flatnonzero(p > 0.05)
    if kept.size == 0:  # cannot happen with the estimate on the grid; kept for safety
        return None, None
    lo, hi = int(kept[0]), int(kept[-1])
    return (
        None if lo == 0 else float(grid[lo]),
        None if hi == grid.size - 1 else float(grid[hi]),
    )


def _more_needed(n: int, se: float, target: float) -> int:
    """Episodes to add so that the detectable effect (in `se` units) shrinks to `target`."""
    mde = (_Z_CI + _Z_POWER) * se
    if mde <= target:
        return 0
    return math.ceil(n * (mde / target) ** 2) - n


def _shift_effect(t: Floats, perms: Floats, x: Floats, y: Floats, target_db: float) -> Effect:
    """LAeq: the adjusted difference in dB, its interval under a constant shift."""
    w1, w0 = _weights(t, x)
    d_obs = (w1 - w0)[0]
    p1, p0 = _weights(perms, x)
    d = p1 - p0
    est = float(d_obs @ y)
    # a shift tau on the nudged episodes' outcomes moves each labelling's estimate by
    # tau * (d @ t), and the observed one by tau (d_obs @ t == 1)
    a, c = d @ y, d @ t
    se = max(float(np.std(a - est * c)), 1e-9)
    grid = est + np.linspace(-_GRID_HALF, _GRID_HALF, _GRID) * se
    grid = np.union1d(grid, [0.0])
    p = _p_values(est - grid, a[:, None] - c[:, None] * grid[None, :])
    low, high = _interval(grid, p)
    n = t.size
    return Effect(
        measure="laeq",
        estimate=est,
        low=low,
        high=high,
        p_value=float(p[np.searchsorted(grid, 0.0)]),
        mean_nudges=float(w1[0] @ y),
        mean_controls=float(w0[0] @ y),
        se=se,
        mde=(_Z_CI + _Z_POWER) * se,
        target=target_db,
        more_needed=_more_needed(n, se, target_db),
        note="",
    )


def _ratio_effect(t: Floats, perms: Floats, x: Floats, y: Floats, target: float) -> Effect:
    """Peaks: the adjusted rate ratio, its interval under a constant factor on the nudged."""
    w1, w0 = _weights(t, x)
    mu1, mu0 = float(w1[0] @ y), float(w0[0] @ y)
    n = t.size
    if mu0 <= 0.0 or mu1 <= 0.0:
        what = "controls" if mu0 <= 0.0 else "nudges"
        return Effect(
            "peaks",
            None,
            None,
            None,
            None,
            mu1,
            mu0,
            None,
            None,
            target,
            0,
            f"too few peaks after the {what} for a ratio",
        )
    est = mu1 / mu0
    p1, p0 = _weights(perms, x)
    d = p1 - p0
    d_obs = (w1 - w0)[0]
    # under "nudges multiply the peaks by rho" the nudged episodes' peaks without the
    # nudge are y / rho; the statistic is the adjusted difference of those outcomes
    ty = t * y
    a, c = d @ y, d @ ty
    a_obs, c_obs = float(d_obs @ y), float(d_obs @ ty)
    se_diff = float(np.std(a - (1.0 - 1.0 / est) * c))
    se = max(se_diff / mu0, 1e-9)
    log_grid = math.log(est) + np.linspace(-_GRID_HALF, _GRID_HALF, _GRID) * se
    log_grid = np.union1d(log_grid, [0.0])
    shrink = 1.0 - np.exp(-log_grid)
    p = _p_values(a_obs - shrink * c_obs, a[:, None] - c[:, None] * shrink[None, :])
    low, high = _interval(log_grid, p)
    log_target = -math.log(target)
    return Effect(
        measure="peaks",
        estimate=est,
        low=None if low is None else math.exp(low),
        high=None if high is None else math.exp(high),
        p_value=float(p[np.searchsorted(log_grid, 0.0)]),
        mean_nudges=mu1,
        mean_controls=mu0,
        se=se,
        mde=math.exp(-(_Z_CI + _Z_POWER) * se),
        target=target,
        more_needed=_more_needed(n, se, log_target),
        note="",
    )


def _p_mean_difference(t: Floats, perms: Floats, v: Floats) -> float:
    def diff(labels: Floats) -> Floats:
        labels = np.atleast_2d(labels)
        n1 = labels.sum(axis=1)
        return np.asarray((labels @ v) / n1 - ((1.0 - labels) @ v) / (v.size - n1))

    return float(_p_values(diff(t), diff(perms)[:, None])[0])


def _p_nights(t: Floats, perms: Floats, night: npt.NDArray[np.int_]) -> float:
    """Chi-square statistic of nights x labels, against its randomisation distribution."""
    k = int(night.max()) + 1
    onehot = np.zeros((night.size, k))
    onehot[np.arange(night.size), night] = 1.0
    per_night = onehot.sum(axis=0)
    share = t.mean()
    e1, e0 = per_night * share, per_night * (1.0 - share)

    def chi2(labels: Floats) -> Floats:
        o1 = np.atleast_2d(labels) @ onehot
        return np.asarray((((o1 - e1) ** 2) * (1.0 / e1 + 1.0 / e0)).sum(axis=1))

    observed, permuted = chi2(t), chi2(perms)
    # one-sided: only a larger chi-square is an imbalance
    return float((1.0 + (permuted >= observed[0] * (1 - 1e-9)).sum()) / (1.0 + permuted.size))


def _local(at: float, tz: ZoneInfo) -> dt.datetime:
    return dt.datetime.fromtimestamp(at, tz)


def _night(at: float, tz: ZoneInfo) -> str:
    """The night an instant belongs to, named by the date of its evening (noon to noon)."""
    return (_local(at, tz) - dt.timedelta(hours=12)).date().isoformat()


def _hour_of_night(at: float, tz: ZoneInfo) -> float:
    """Hours since the local noon before: 23:00 is 11, 01:30 is 13.5 (no wrap at midnight)."""
    local = _local(at, tz)
    return (local.hour + local.minute / 60.0 + local.second / 3600.0 - 12.0) % 24.0
